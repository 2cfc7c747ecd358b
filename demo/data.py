"""Deterministic demo data for the three departmental systems: one SQLite file per system.

``generate()`` writes ``sales.sqlite``, ``support.sqlite`` and ``contracts.sqlite`` into a data
directory and reuses them when they already hold the same (seed, customers, anchor date). All data
lies before the anchor date ("today" for the data). The data is messy the way real data is:
mixed-case e-mails in sales, phones typed in many formats, person customers, customers without
e-mail or phone, a public pool, dormant customers, a few customers with hundreds of tickets,
confidential contracts, NDAs without value and unsigned drafts.
"""

from __future__ import annotations

import argparse
import calendar
import os
import random
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
from faker import Faker

DEFAULT_DATA_DIR = Path("var/demo-data")
DEFAULT_CUSTOMERS = 2000
DEFAULT_SEED = 7
GENERATOR_VERSION = "2"  # 2: planted duplicates and look-alikes, identity-truth.json
SALES_DB = "sales.sqlite"
SUPPORT_DB = "support.sqlite"
CONTRACTS_DB = "contracts.sqlite"
TRUTH_FILE = "identity-truth.json"  # the planted duplicates and look-alikes (features/identity)
MIN_CUSTOMERS = 10
DORMANT_DAYS = 365
HEAVY_TICKET_CUSTOMERS = 3
FIRST_ACCOUNT = 100001
FIRST_TICKET_ID = 88001

DAY = 86400
YEAR = 365 * DAY
_BATCH = 4000

# --- schemas ---------------------------------------------------------------------------------

SALES_SCHEMA = """
CREATE TABLE demo_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE users (
    user_id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL,
    region TEXT NOT NULL, role TEXT NOT NULL);
CREATE TABLE accounts (
    account_no TEXT PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL, contact_name TEXT,
    title TEXT, email TEXT, phone TEXT, address TEXT, tax_id TEXT, region TEXT NOT NULL,
    status TEXT NOT NULL, owner_id TEXT, owner_since TEXT, pool_since TEXT,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL, version INTEGER NOT NULL);
CREATE TABLE orders (
    order_no TEXT PRIMARY KEY, account_no TEXT NOT NULL, ordered_at TEXT NOT NULL,
    status TEXT NOT NULL, currency TEXT NOT NULL, total_cents INTEGER NOT NULL, items TEXT NOT NULL);
CREATE TABLE payments (
    payment_id TEXT PRIMARY KEY, account_no TEXT NOT NULL, order_no TEXT NOT NULL,
    paid_at TEXT NOT NULL, amount_cents INTEGER NOT NULL, currency TEXT NOT NULL,
    method TEXT NOT NULL, card_last4 TEXT, bank_account TEXT, invoice_no TEXT);
CREATE TABLE opportunities (
    opportunity_id TEXT PRIMARY KEY, account_no TEXT NOT NULL, title TEXT NOT NULL,
    stage TEXT NOT NULL, amount_cents INTEGER NOT NULL, currency TEXT NOT NULL,
    expected_close TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE activities (
    activity_id TEXT PRIMARY KEY, account_no TEXT NOT NULL, type TEXT NOT NULL,
    occurred_at TEXT NOT NULL, subject TEXT NOT NULL, notes TEXT NOT NULL, by_user TEXT NOT NULL);
"""
SALES_INDEXES = """
CREATE INDEX accounts_region ON accounts(region);
CREATE INDEX accounts_status ON accounts(status);
CREATE INDEX accounts_owner ON accounts(owner_id);
CREATE INDEX accounts_updated ON accounts(updated_at);
CREATE INDEX accounts_tax_id ON accounts(tax_id);
CREATE INDEX accounts_email ON accounts(email COLLATE NOCASE);
CREATE INDEX orders_account ON orders(account_no, ordered_at);
CREATE INDEX payments_account ON payments(account_no, paid_at);
CREATE INDEX opportunities_account ON opportunities(account_no, opportunity_id);
CREATE INDEX activities_account ON activities(account_no, occurred_at);
"""
SUPPORT_SCHEMA = """
CREATE TABLE demo_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE requesters (
    email TEXT PRIMARY KEY, display_name TEXT NOT NULL, phone TEXT, vip INTEGER NOT NULL,
    language TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE tickets (
    id INTEGER PRIMARY KEY, requester_email TEXT NOT NULL, subject TEXT NOT NULL,
    category TEXT NOT NULL, priority TEXT NOT NULL, status TEXT NOT NULL, channel TEXT NOT NULL,
    assignee TEXT, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
    sat_score INTEGER, sat_comment TEXT, rated_at INTEGER);
CREATE TABLE comments (
    id INTEGER PRIMARY KEY, ticket_id INTEGER NOT NULL, author TEXT NOT NULL, body TEXT NOT NULL,
    public INTEGER NOT NULL, created_at INTEGER NOT NULL);
"""
SUPPORT_INDEXES = """
CREATE INDEX tickets_requester ON tickets(requester_email, created_at DESC, id DESC);
CREATE INDEX tickets_updated ON tickets(updated_at);
CREATE INDEX comments_ticket ON comments(ticket_id, id);
"""
CONTRACTS_SCHEMA = """
CREATE TABLE demo_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE contracts (
    contract_id TEXT PRIMARY KEY, party_tax_id TEXT NOT NULL, party_name TEXT NOT NULL,
    type TEXT NOT NULL, status TEXT NOT NULL, signed_on TEXT, starts_on TEXT NOT NULL, ends_on TEXT,
    auto_renew INTEGER NOT NULL, value TEXT, currency TEXT NOT NULL, payment_terms TEXT,
    confidential INTEGER NOT NULL, updated_on TEXT NOT NULL);
CREATE TABLE documents (
    contract_id TEXT NOT NULL, name TEXT NOT NULL, pages INTEGER NOT NULL, uploaded_on TEXT NOT NULL);
"""
CONTRACTS_INDEXES = """
CREATE INDEX contracts_party ON contracts(party_tax_id, starts_on);
CREATE INDEX contracts_updated ON contracts(updated_on, contract_id);
CREATE INDEX documents_contract ON documents(contract_id);
"""

# --- vocabulary ------------------------------------------------------------------------------

# (city, province prefix for addresses, region, telephone area code, administrative division prefix)
CITIES: tuple[tuple[str, str, str, str, str], ...] = (
    ("上海", "", "east", "021", "3101"),
    ("杭州", "浙江省", "east", "0571", "3301"),
    ("南京", "江苏省", "east", "025", "3201"),
    ("苏州", "江苏省", "east", "0512", "3205"),
    ("宁波", "浙江省", "east", "0574", "3302"),
    ("合肥", "安徽省", "east", "0551", "3401"),
    ("济南", "山东省", "east", "0531", "3701"),
    ("青岛", "山东省", "east", "0532", "3702"),
    ("福州", "福建省", "east", "0591", "3501"),
    ("厦门", "福建省", "east", "0592", "3502"),
    ("北京", "", "north", "010", "1101"),
    ("天津", "", "north", "022", "1201"),
    ("石家庄", "河北省", "north", "0311", "1301"),
    ("太原", "山西省", "north", "0351", "1401"),
    ("呼和浩特", "内蒙古自治区", "north", "0471", "1501"),
    ("沈阳", "辽宁省", "north", "024", "2101"),
    ("大连", "辽宁省", "north", "0411", "2102"),
    ("哈尔滨", "黑龙江省", "north", "0451", "2301"),
    ("长春", "吉林省", "north", "0431", "2201"),
    ("广州", "广东省", "south", "020", "4401"),
    ("深圳", "广东省", "south", "0755", "4403"),
    ("东莞", "广东省", "south", "0769", "4419"),
    ("佛山", "广东省", "south", "0757", "4406"),
    ("珠海", "广东省", "south", "0756", "4404"),
    ("南宁", "广西壮族自治区", "south", "0771", "4501"),
    ("海口", "海南省", "south", "0898", "4601"),
    ("成都", "四川省", "west", "028", "5101"),
    ("重庆", "", "west", "023", "5001"),
    ("西安", "陕西省", "west", "029", "6101"),
    ("昆明", "云南省", "west", "0871", "5301"),
    ("贵阳", "贵州省", "west", "0851", "5201"),
    ("兰州", "甘肃省", "west", "0931", "6201"),
    ("乌鲁木齐", "新疆维吾尔自治区", "west", "0991", "6501"),
    ("武汉", "湖北省", "central", "027", "4201"),
    ("长沙", "湖南省", "central", "0731", "4301"),
    ("郑州", "河南省", "central", "0371", "4101"),
    ("南昌", "江西省", "central", "0791", "3601"),
)
REGIONS = ("east", "north", "south", "west", "central")
REGION_WEIGHTS = (30, 20, 22, 14, 14)

SURNAMES = (
    "王wang 李li 张zhang 刘liu 陈chen 杨yang 黄huang 赵zhao 吴wu 周zhou 徐xu 孙sun 马ma 朱zhu 胡hu "
    "郭guo 何he 高gao 林lin 罗luo 郑zheng 梁liang 谢xie 宋song 唐tang 许xu 韩han 冯feng 邓deng 曹cao "
    "彭peng 曾zeng 肖xiao 田tian 董dong 袁yuan 潘pan 于yu 蒋jiang 蔡cai 余yu 杜du 叶ye 程cheng 苏su "
    "魏wei 吕lv 丁ding 任ren 沈shen 姚yao 卢lu 姜jiang 崔cui 钟zhong 谭tan 陆lu 汪wang 范fan 金jin "
    "石shi 廖liao 贾jia 夏xia 韦wei 方fang 白bai 邹zou 孟meng 熊xiong 秦qin 邱qiu 江jiang 尹yin "
    "薛xue 段duan 雷lei 侯hou 龙long 史shi 陶tao 黎li 贺he 顾gu 毛mao 郝hao 龚gong 邵shao 万wan "
    "钱qian 严yan 武wu 戴dai 莫mo 孔kong 向xiang 汤tang 欧阳ouyang 司马sima 上官shangguan"
)
GIVEN_CHARS = (
    "伟wei 芳fang 娜na 敏min 静jing 丽li 强qiang 磊lei 军jun 洋yang 勇yong 艳yan 杰jie 娟juan 涛tao "
    "明ming 超chao 秀xiu 霞xia 平ping 刚gang 桂gui 英ying 华hua 玉yu 兰lan 萍ping 红hong 建jian "
    "文wen 辉hui 鑫xin 宇yu 浩hao 欣xin 婷ting 雪xue 琳lin 晨chen 阳yang 思si 佳jia 嘉jia 俊jun "
    "凯kai 博bo 睿rui 子zi 涵han 梓zi 轩xuan 怡yi 雨yu 萱xuan 宁ning 志zhi 国guo 海hai 鹏peng "
    "斌bin 波bo 峰feng 飞fei 亮liang 晓xiao 慧hui 颖ying 倩qian 瑶yao 诗shi 梦meng 一yi 天tian "
    "成cheng 立li 新xin 晶jing 璐lu 帆fan 然ran 雅ya 彤tong 悦yue 昊hao 铭ming 泽ze 航hang 振zhen "
    "东dong 春chun 丹dan 琴qin 云yun"
)
BRAND_CHARS = (
    "澄cheng 川chuan 华hua 信xin 瑞rui 泰tai 恒heng 达da 鑫xin 源yuan 盛sheng 博bo 远yuan 创chuang "
    "新xin 科ke 联lian 通tong 海hai 天tian 宏hong 嘉jia 美mei 诚cheng 德de 安an 康kang 明ming "
    "正zheng 立li 启qi 航hang 云yun 峰feng 卓zhuo 越yue 腾teng 飞fei 驰chi 凯kai 捷jie 锦jin "
    "辰chen 星xing 光guang 朗lang 睿rui 智zhi 思si 维wei 众zhong 合he 润run 丰feng 亿yi 佳jia "
    "永yong 兴xing 旺wang 隆long 昌chang 茂mao 晟sheng 蓝lan 青qing 松song 禾he 山shan 岳yue "
    "江jiang 泽ze 汇hui 聚ju 宸chen 君jun 诺nuo 优you 尚shang 乐le 易yi 迅xun 领ling 力li 元yuan"
)
INDUSTRIES = (
    ("科技", "tech"),
    ("信息技术", "it"),
    ("贸易", "trade"),
    ("实业", ""),
    ("电子", "elec"),
    ("网络科技", "net"),
    ("医疗器械", "med"),
    ("食品", "food"),
    ("物流", "logistics"),
    ("建材", ""),
    ("管理咨询", "consulting"),
    ("文化传媒", "media"),
    ("环保科技", "eco"),
    ("新材料", ""),
    ("机械设备", ""),
    ("软件", "soft"),
    ("教育科技", "edu"),
    ("生物科技", "bio"),
    ("汽车服务", "auto"),
    ("餐饮管理", ""),
)
TITLES = (
    "采购经理",
    "总经理",
    "IT 主管",
    "财务总监",
    "行政主管",
    "技术总监",
    "运营经理",
    "采购专员",
    "信息部经理",
    "副总裁",
    "董事长助理",
    "办公室主任",
)
PERSON_MAIL_DOMAINS = ("qq.com", "163.com", "126.com", "sina.com", "foxmail.com", "gmail.com", "139.com")
MOBILE_PREFIXES = tuple(
    str(p) for p in (*range(130, 140), 150, 151, 152, 153, 155, 156, 157, 158, 159, 166, *range(175, 179))
) + tuple(str(p) for p in (180, 181, 182, 183, 185, 186, 187, 188, 189, 198, 199))

PRODUCTS = (
    ("SKU-1001", "企业云存储 1TB/年", 129900),
    ("SKU-1002", "协同办公套件 标准版（用户/年）", 36000),
    ("SKU-1003", "协同办公套件 高级版（用户/年）", 72000),
    ("SKU-2001", "商用笔记本电脑 14 英寸", 599900),
    ("SKU-2002", "27 英寸显示器", 159900),
    ("SKU-2003", "激光打印机", 249900),
    ("SKU-3001", "现场实施服务（人天）", 300000),
    ("SKU-3002", "年度运维服务", 1999900),
    ("SKU-3003", "培训服务（场）", 800000),
    ("SKU-4001", "网络安全网关", 3899900),
    ("SKU-4002", "无线接入点", 129900),
    ("SKU-5001", "数据分析平台 年订阅", 9999900),
    ("SKU-5002", "客服系统 坐席/年", 240000),
    ("SKU-6001", "办公耗材套装", 29900),
)
OPPORTUNITY_TITLES = (
    "{y} 年度办公设备采购",
    "{y} 年云服务续费",
    "数据平台建设项目",
    "分支机构网络改造",
    "客服中心扩容",
    "员工培训项目",
    "信息安全升级",
    "年度运维外包",
)
ACTIVITIES = {
    "call": (
        ("电话回访", "客户对新报价有兴趣，约下周再沟通。"),
        ("续费提醒", "已提醒客户合同即将到期，客户表示会内部评估。"),
        ("电话沟通需求", "客户想了解高级版功能差异，已发资料。"),
    ),
    "email": (
        ("发送报价单", "按客户要求发送了含税报价，有效期 30 天。"),
        ("发送合同草稿", "合同草稿已发法务审核。"),
        ("节日问候", "发送节日问候邮件。"),
    ),
    "meeting": (
        ("季度业务回顾", "回顾了本季度使用情况，客户提出两个改进点。"),
        ("方案汇报", "向客户 IT 部门汇报实施方案，整体认可。"),
        ("商务谈判", "价格仍有分歧，客户希望再降 5%。"),
    ),
    "visit": (
        ("上门拜访", "拜访采购负责人，了解明年预算。"),
        ("现场调研", "调研了现场网络环境，需要补充两台设备。"),
    ),
    "wechat": (
        ("微信沟通续约事宜", "客户微信确认续约意向，等待盖章。"),
        ("微信答疑", "解答了发票相关问题。"),
    ),
}
ACTIVITY_TYPES = tuple(ACTIVITIES)
TICKET_SUBJECTS = {
    "complaint": (
        "发票抬头错误",
        "配送延迟",
        "服务态度差",
        "收费与合同不符",
        "退款迟迟未到账",
        "产品质量问题",
    ),
    "question": (
        "如何修改开票信息",
        "账号无法登录",
        "续费价格咨询",
        "如何导出数据",
        "发票什么时候寄出",
        "续签流程咨询",
    ),
    "incident": (
        "系统无法访问",
        "数据同步失败",
        "接口返回 500 错误",
        "打印机驱动安装失败",
        "设备无法开机",
        "报表数据不一致",
    ),
    "request": (
        "申请增加账号",
        "申请开具增值税专用发票",
        "申请上门安装",
        "申请延长试用期",
        "变更联系人信息",
        "申请培训服务",
    ),
}
TICKET_CATEGORIES = tuple(TICKET_SUBJECTS)
REQUESTER_BODIES = (
    "您好，{s}，请尽快处理。",
    "我们这边遇到问题：{s}。麻烦看一下，谢谢！",
    "{s}，已经影响到正常使用了。",
    "请问{s}的问题什么时候能解决？",
)
AGENT_REPLIES = (
    "您好，已收到您的反馈，我们正在处理。",
    "问题已处理，请您确认是否恢复正常。",
    "已为您转交技术部门，请耐心等待。",
    "请提供一下订单号和截图，方便我们核实，谢谢。",
    "抱歉给您带来不便，已加急处理。",
)
PRIVATE_NOTES = (
    "客户情绪较大，注意安抚。",
    "已联系财务核实，待回复。",
    "疑似重复工单，先不合并。",
    "VIP 客户，优先处理。",
    "需要二线支持介入。",
    "客户提到可能不续约，已告知销售。",
)
RATING_COMMENTS = {
    5: ("处理及时", "非常满意", "服务很专业", ""),
    4: ("整体不错", "响应挺快", ""),
    3: ("一般", "还可以，希望更快一些", ""),
    2: ("处理太慢", "问题没有彻底解决"),
    1: ("非常不满意", "多次反馈无人跟进"),
}
PAYMENT_TERMS = ("NET30", "NET30", "NET60", "NET90", "预付 30%", None)

_USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)


def _pairs(text: str) -> tuple[tuple[str, str], ...]:
    """Split "王wang 李li" into (("王", "wang"), ("李", "li"))."""
    out = []
    for word in text.split():
        cut = next(i for i, ch in enumerate(word) if ch.isascii())
        out.append((word[:cut], word[cut:]))
    return tuple(out)


_SURNAMES = _pairs(SURNAMES)
# Common surnames first: weight falls with rank, the compound surnames are rare.
_SURNAME_CUM = tuple(
    sum(1.0 / (1 + i / 6) if len(s) == 1 else 0.05 for i, (s, _) in enumerate(_SURNAMES[: k + 1]))
    for k in range(len(_SURNAMES))
)
_GIVEN = _pairs(GIVEN_CHARS)
_CITIES_BY_REGION = {r: tuple(c for c in CITIES if c[2] == r) for r in REGIONS}
_BRAND = _pairs(BRAND_CHARS)


def uscc_check_char(first17: str) -> str:
    """Check character of an 18-character unified social credit code (GB 32100-2015)."""
    total = sum(_USCC_CHARS.index(c) * w for c, w in zip(first17, _USCC_WEIGHTS, strict=True))
    return _USCC_CHARS[(31 - total % 31) % 31]


def is_valid_uscc(code: str) -> bool:
    """Whether ``code`` is a well-formed unified social credit code with a correct check character."""
    if len(code) != 18 or any(c not in _USCC_CHARS for c in code):
        return False
    return uscc_check_char(code[:17]) == code[17]


def _org_check_char(body8: str) -> str:
    total = sum(_USCC_CHARS.index(c) * w for c, w in zip(body8, _ORG_WEIGHTS, strict=True))
    value = 11 - total % 11
    return "X" if value == 10 else "0" if value == 11 else str(value)


def iso(ts: int) -> str:
    """Epoch seconds → ``2025-03-02T08:15:00Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def day(ts: int) -> str:
    """Epoch seconds → ``2025-03-02``."""
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def anchor_epoch(anchor: date) -> int:
    """Epoch seconds of the anchor day's start (UTC): every generated time is before it."""
    return calendar.timegm(anchor.timetuple())


# --- public API ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DemoData:
    """Where one generated data set lives, and what it was generated from."""

    data_dir: Path
    seed: int
    customers: int
    anchor: date
    generated: bool = field(default=False, compare=False)
    seconds: float = field(default=0.0, compare=False)

    @property
    def sales_db(self) -> Path:
        return self.data_dir / SALES_DB

    @property
    def support_db(self) -> Path:
        return self.data_dir / SUPPORT_DB

    @property
    def contracts_db(self) -> Path:
        return self.data_dir / CONTRACTS_DB

    @property
    def paths(self) -> dict[str, Path]:
        return {"sales": self.sales_db, "support": self.support_db, "contracts": self.contracts_db}


def _meta(seed: int, customers: int, anchor: date) -> dict[str, str]:
    return {
        "generator_version": GENERATOR_VERSION,
        "seed": str(seed),
        "customers": str(customers),
        "anchor": anchor.isoformat(),
    }


def read_meta(db_path: Path) -> dict[str, str] | None:
    """The ``demo_meta`` of one generated file, or None when it is missing or unreadable."""
    if not db_path.is_file():
        return None
    try:
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as conn:
            return {str(k): str(v) for k, v in conn.execute("SELECT key, value FROM demo_meta")}
    except sqlite3.Error:
        return None


def generate(
    data_dir: Path | str = DEFAULT_DATA_DIR,
    *,
    customers: int = DEFAULT_CUSTOMERS,
    seed: int = DEFAULT_SEED,
    anchor: date | None = None,
    force: bool = False,
) -> DemoData:
    """Generate the three SQLite files in ``data_dir``, or reuse them when they match.

    ``anchor`` is "today" for the data (default: the current UTC date); everything lies before it.
    """
    if customers < MIN_CUSTOMERS:
        raise ValueError(f"customers must be at least {MIN_CUSTOMERS}")
    anchor = anchor or datetime.now(UTC).date()
    directory = Path(data_dir)
    wanted = _meta(seed, customers, anchor)
    existing = DemoData(directory, seed, customers, anchor)
    truth = directory / TRUTH_FILE
    if not force and truth.is_file() and all(read_meta(p) == wanted for p in existing.paths.values()):
        return existing
    directory.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    tmp = {name: path.with_name(f"{path.name}.tmp{os.getpid()}") for name, path in existing.paths.items()}
    for path in tmp.values():
        path.unlink(missing_ok=True)
    try:
        generator = _Generator(seed, customers, anchor)
        generator.write(tmp["sales"], tmp["support"], tmp["contracts"], wanted)
        for name, path in existing.paths.items():
            os.replace(tmp[name], path)
        truth_tmp = truth.with_name(f"{truth.name}.tmp{os.getpid()}")
        truth_tmp.write_bytes(orjson.dumps({**wanted, **generator.truth}, option=orjson.OPT_INDENT_2))
        os.replace(truth_tmp, truth)
    finally:
        for path in tmp.values():
            path.unlink(missing_ok=True)
    return DemoData(directory, seed, customers, anchor, generated=True, seconds=time.perf_counter() - started)


def load(data_dir: Path | str = DEFAULT_DATA_DIR) -> DemoData:
    """The data set already generated in ``data_dir`` (raises FileNotFoundError when there is none)."""
    directory = Path(data_dir)
    metas = [read_meta(directory / name) for name in (SALES_DB, SUPPORT_DB, CONTRACTS_DB)]
    first = metas[0]
    if first is None or any(m != first for m in metas):
        raise FileNotFoundError(f"no complete demo data set in {directory}")
    return DemoData(
        directory, int(first["seed"]), int(first["customers"]), date.fromisoformat(first["anchor"])
    )


@dataclass(frozen=True, slots=True)
class DemoExamples:
    """Account numbers (and a few ids) a gateway test can rely on, found by querying the data."""

    company: str  # company with e-mail, tax id, tickets, orders and contracts
    person: str  # kind=person (no tax id, no contact_name) with e-mail and tickets
    pool: str  # owner_id null, pool_since set
    owned: str  # owned by ``rep``
    dormant: str  # no activity, ticket or contract in the 365 days before the anchor
    paged_tickets: str  # more than 500 tickets: a support search needs several pages
    heavy_tickets: tuple[str, ...]  # every account with at least 300 tickets
    mixed_case_email: str  # its sales e-mail has upper case
    no_email: str
    no_phone: str
    confidential_contract: str  # party with a confidential and an active non-confidential contract
    confidential_contract_id: str
    nda_contract_id: str  # type nda, value null
    draft_contract_id: str  # status draft, signed_on null
    rep: str  # a sales rep who owns accounts
    manager: str
    anchor: date
    unknown_account: str = "A000000"
    unknown_tax_id: str = "91000000000000000X"  # well-formed, belongs to no party


def find_examples(data: DemoData | Path | str = DEFAULT_DATA_DIR) -> DemoExamples:
    """Query the generated (and possibly since modified) data for accounts of every kind."""
    data = data if isinstance(data, DemoData) else load(data)
    cut = anchor_epoch(data.anchor) - DORMANT_DAYS * DAY
    conn = _attached(data)
    try:

        def one(sql: str, *args: Any) -> str:
            row = conn.execute(sql, args).fetchone()
            if row is None:
                raise LookupError(f"no example for: {sql.split(chr(10))[0]}")
            return str(row[0])

        with_tickets = "EXISTS (SELECT 1 FROM support.tickets t WHERE t.requester_email = lower(a.email))"
        heavy = tuple(
            str(r[0])
            for r in conn.execute(
                "SELECT a.account_no FROM accounts a"
                " JOIN support.tickets t ON t.requester_email = lower(a.email)"
                " GROUP BY a.account_no HAVING count(*) >= 300 ORDER BY a.account_no"
            )
        )
        paged = one(
            "SELECT a.account_no FROM accounts a JOIN support.tickets t ON t.requester_email = lower(a.email)"
            " GROUP BY a.account_no HAVING count(*) > 500 ORDER BY count(*) DESC, a.account_no LIMIT 1"
        )
        rep = one(
            "SELECT u.user_id FROM users u WHERE u.role = 'rep'"
            " AND EXISTS (SELECT 1 FROM accounts a WHERE a.owner_id = u.user_id) ORDER BY u.user_id LIMIT 1"
        )
        conf = conn.execute(
            "SELECT a.account_no, (SELECT min(c.contract_id) FROM contracts.contracts c"
            "  WHERE c.party_tax_id = a.tax_id AND c.confidential = 1)"
            " FROM accounts a WHERE a.tax_id IS NOT NULL"
            " AND EXISTS (SELECT 1 FROM contracts.contracts c WHERE c.party_tax_id = a.tax_id"
            "  AND c.confidential = 1)"
            " AND EXISTS (SELECT 1 FROM contracts.contracts c WHERE c.party_tax_id = a.tax_id"
            "  AND c.confidential = 0 AND c.status = 'active')"
            " ORDER BY a.account_no LIMIT 1"
        ).fetchone()
        if conf is None:
            raise LookupError("no confidential contract")
        return DemoExamples(
            company=one(
                "SELECT a.account_no FROM accounts a WHERE a.kind = 'company' AND a.email IS NOT NULL"
                f" AND a.owner_id IS NOT NULL AND {with_tickets}"
                " AND EXISTS (SELECT 1 FROM orders o WHERE o.account_no = a.account_no)"
                " AND EXISTS (SELECT 1 FROM contracts.contracts c WHERE c.party_tax_id = a.tax_id)"
                " AND (SELECT count(*) FROM support.tickets t WHERE t.requester_email = lower(a.email)) < 50"
                " ORDER BY a.account_no LIMIT 1"
            ),
            person=one(
                "SELECT a.account_no FROM accounts a WHERE a.kind = 'person' AND a.email IS NOT NULL"
                f" AND {with_tickets} ORDER BY a.account_no LIMIT 1"
            ),
            pool=one("SELECT account_no FROM accounts WHERE owner_id IS NULL ORDER BY account_no LIMIT 1"),
            owned=one("SELECT account_no FROM accounts WHERE owner_id = ? ORDER BY account_no LIMIT 1", rep),
            dormant=one(_DORMANT_SQL + " LIMIT 1", iso(cut), cut, cut, day(cut)),
            paged_tickets=paged,
            heavy_tickets=heavy,
            mixed_case_email=one(
                "SELECT account_no FROM accounts WHERE email IS NOT NULL AND email <> lower(email)"
                " ORDER BY account_no LIMIT 1"
            ),
            no_email=one("SELECT account_no FROM accounts WHERE email IS NULL ORDER BY account_no LIMIT 1"),
            no_phone=one("SELECT account_no FROM accounts WHERE phone IS NULL ORDER BY account_no LIMIT 1"),
            confidential_contract=str(conf[0]),
            confidential_contract_id=str(conf[1]),
            nda_contract_id=one(
                "SELECT contract_id FROM contracts.contracts WHERE type = 'nda' ORDER BY contract_id LIMIT 1"
            ),
            draft_contract_id=one(
                "SELECT contract_id FROM contracts.contracts WHERE status = 'draft'"
                " ORDER BY contract_id LIMIT 1"
            ),
            rep=rep,
            manager=one("SELECT user_id FROM users WHERE role = 'manager' ORDER BY user_id LIMIT 1"),
            anchor=data.anchor,
        )
    finally:
        conn.close()


_DORMANT_SQL = """SELECT a.account_no FROM accounts a
WHERE NOT EXISTS (SELECT 1 FROM activities x WHERE x.account_no = a.account_no AND x.occurred_at >= ?)
AND (a.email IS NULL OR NOT EXISTS (SELECT 1 FROM support.tickets t WHERE t.requester_email = lower(a.email)
     AND (t.created_at >= ? OR t.updated_at >= ?)))
AND (a.tax_id IS NULL OR NOT EXISTS (SELECT 1 FROM contracts.contracts c WHERE c.party_tax_id = a.tax_id
     AND max(c.starts_on, coalesce(c.signed_on, ''), c.updated_on) >= ?))
ORDER BY a.account_no"""


def export_requesters(data: DemoData, path: Path) -> int:
    """The helpdesk's requesters as its admin export gives them (CSV: email, display_name); how many."""
    import csv

    with sqlite3.connect(f"file:{data.support_db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT email, display_name FROM requesters ORDER BY email").fetchall()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "display_name"])
        writer.writerows(rows)
    return len(rows)


def dormant_accounts(data: DemoData | Path | str = DEFAULT_DATA_DIR) -> list[str]:
    """Every account with no activity, ticket or contract in the 365 days before the anchor."""
    data = data if isinstance(data, DemoData) else load(data)
    cut = anchor_epoch(data.anchor) - DORMANT_DAYS * DAY
    conn = _attached(data)
    try:
        return [str(r[0]) for r in conn.execute(_DORMANT_SQL, (iso(cut), cut, cut, day(cut)))]
    finally:
        conn.close()


def _attached(data: DemoData) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{data.sales_db}?mode=ro", uri=True)
    conn.execute("ATTACH DATABASE ? AS support", (f"file:{data.support_db}?mode=ro",))
    conn.execute("ATTACH DATABASE ? AS contracts", (f"file:{data.contracts_db}?mode=ro",))
    return conn


# --- the generator ---------------------------------------------------------------------------


class _Rows:
    """Rows waiting to be written, per table, flushed in batches."""

    def __init__(self, conn: sqlite3.Connection, inserts: dict[str, str]) -> None:
        self.conn = conn
        self.inserts = inserts
        self.rows: dict[str, list[tuple[Any, ...]]] = {name: [] for name in inserts}

    def flush(self) -> None:
        for name, rows in self.rows.items():
            if rows:
                self.conn.executemany(self.inserts[name], rows)
                rows.clear()


def _insert(table: str, columns: int) -> str:
    return f"INSERT INTO {table} VALUES ({', '.join('?' * columns)})"


def _open_for_writing(path: Path, schema: str, meta: dict[str, str]) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    conn.executescript(schema)
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO demo_meta VALUES (?, ?)", sorted(meta.items()))
    return conn


@dataclass(slots=True)
class _Customer:
    index: int
    account_no: str
    kind: str
    region: str
    city: tuple[str, str, str, str, str]
    status: str
    dormant: bool
    created: int
    latest: int  # nothing about this customer happens after this time
    name: str
    email: str | None  # lower-case
    mobile: str | None
    tax_id: str | None
    owner: str | None
    display_name: str
    surname: str
    surname_py: str
    given_py: str


class _Generator:
    def __init__(self, seed: int, customers: int, anchor: date) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.n = customers
        self.end = anchor_epoch(anchor)
        fake = Faker("zh_CN")
        fake.seed_instance(seed)
        self.districts = sorted({fake.district() for _ in range(300)})
        self.streets = sorted({fake.street_name() for _ in range(600)})
        self.emails: set[str] = set()
        self.tax_ids: set[str] = set()
        self.order_seq = 5500001
        self.payment_seq = 88001
        self.opportunity_seq = 300001
        self.activity_seq = 1
        self.ticket_seq = FIRST_TICKET_ID
        self.comment_seq = 1
        self.contract_seq: dict[int, int] = {}
        self.invoice_seq = 1
        self.sources: list[_Customer] = []  # every generated customer, for planting duplicates
        self.truth: dict[str, list[list[str]]] = {"duplicates": [], "lookalikes": [], "previous_emails": []}

    # -- small helpers --

    def between(self, lo: int, hi: int) -> int:
        return lo if hi <= lo else self.rng.randint(lo, hi)

    def person_name(self) -> tuple[str, str, str, str]:
        """(surname, its pinyin, given name, its pinyin)."""
        rng = self.rng
        surname, s_py = rng.choices(_SURNAMES, cum_weights=_SURNAME_CUM)[0]
        given = rng.sample(_GIVEN, 2 if rng.random() < 0.7 else 1)
        return surname, s_py, "".join(c for c, _ in given), "".join(p for _, p in given)

    def unique_email(self, local: str, domain: str) -> str:
        email = f"{local}@{domain}"
        while email in self.emails:
            email = f"{local}{self.rng.randint(1, 999)}@{domain}"
        self.emails.add(email)
        return email

    def messy_case(self, email: str) -> str:
        """The e-mail as someone typed it into the CRM: with some upper case."""
        local, domain = email.split("@")
        r = self.rng.random()
        if r < 0.4:
            local = ".".join(p.capitalize() for p in local.split("."))
            domain = domain.capitalize()
        elif r < 0.6:
            local = local.upper()
        elif r < 0.85:
            domain = domain.upper()
        else:
            local, domain = local.upper(), domain.upper()
        typed = f"{local}@{domain}"
        return typed if typed != email else f"{local}@{domain.upper()}"

    def mobile(self) -> str:
        return self.rng.choice(MOBILE_PREFIXES) + f"{self.rng.randint(0, 99999999):08d}"

    def phone_text(self, mobile: str | None, area: str) -> str:
        """A phone number typed in one of the many ways people type them."""
        rng = self.rng
        if mobile is not None:
            d = mobile
            style = rng.randrange(6)
            return (
                f"+86 {d[:3]} {d[3:7]} {d[7:]}",
                d,
                f"{d[:3]}-{d[3:7]}-{d[7:]}",
                f"0086 {d}",
                f"{d[:3]} {d[3:7]} {d[7:]}",
                f"+86{d}",
            )[style]
        number = f"{rng.randint(2, 8)}{rng.randint(0, 9999999):07d}"
        style = rng.randrange(5)
        return (
            f"{area}-{number[:4]} {number[4:]}",
            f"({area}){number}",
            f"{area}-{number}",
            f"+86 {area[1:]} {number[:4]} {number[4:]}",
            f"{area}-{number} 转 {rng.randint(100, 899)}",
        )[style]

    def tax_id(self, division4: str) -> str:
        rng = self.rng
        while True:
            division = division4 + f"{rng.randint(1, 15):02d}"
            if rng.random() < 0.6:
                body = "MA" + "".join(rng.choices(_USCC_CHARS, k=6))
            else:
                body = "".join(rng.choices("0123456789", k=8))
            org = body + _org_check_char(body)
            first17 = "91" + division + org
            code = first17 + uscc_check_char(first17)
            if code not in self.tax_ids:
                self.tax_ids.add(code)
                return code

    def address(self, city: tuple[str, str, str, str, str]) -> str:
        rng = self.rng
        name, province, *_ = city
        district = rng.choice(self.districts)
        street = rng.choice(self.streets)
        number = rng.randint(1, 1200)
        head = f"{province}{name}市{district}区"
        r = rng.random()
        if r < 0.35:
            return f"{head}{street} {number} 号"
        if r < 0.65:
            return f"{head}{street}{number}号"
        return f"{head}{street}{number}号{rng.randint(1, 30)}栋{rng.randint(1, 30)}{rng.randint(1, 20):02d}室"

    # -- the data --

    def write(self, sales: Path, support: Path, contracts: Path, meta: dict[str, str]) -> None:
        s = _open_for_writing(sales, SALES_SCHEMA, meta)
        h = _open_for_writing(support, SUPPORT_SCHEMA, meta)
        c = _open_for_writing(contracts, CONTRACTS_SCHEMA, meta)
        try:
            self.sales = _Rows(
                s,
                {
                    "users": _insert("users", 5),
                    "accounts": _insert("accounts", 17),
                    "orders": _insert("orders", 7),
                    "payments": _insert("payments", 10),
                    "opportunities": _insert("opportunities", 8),
                    "activities": _insert("activities", 7),
                },
            )
            self.support = _Rows(
                h,
                {
                    "requesters": _insert("requesters", 6),
                    "tickets": _insert("tickets", 13),
                    "comments": _insert("comments", 6),
                },
            )
            self.contracts = _Rows(
                c, {"contracts": _insert("contracts", 14), "documents": _insert("documents", 4)}
            )
            self.generate_all()
            for rows in (self.sales, self.support, self.contracts):
                rows.flush()
            for conn, indexes in ((s, SALES_INDEXES), (h, SUPPORT_INDEXES), (c, CONTRACTS_INDEXES)):
                conn.execute("COMMIT")
                conn.executescript(indexes)
                conn.execute("ANALYZE")
        finally:
            for conn in (s, h, c):
                conn.close()

    def generate_all(self) -> None:
        rng, n = self.rng, self.n
        self.make_users()
        everyone = range(n)
        persons = set(rng.sample(everyone, max(1, round(n * 0.25))))
        dormant = set(rng.sample(everyone, max(1, round(n * 0.10))))
        lively_companies = [i for i in everyone if i not in persons and i not in dormant]
        heavy = rng.sample(lively_companies, HEAVY_TICKET_CUSTOMERS)
        self.heavy_counts = {
            i: rng.randint(501, 800) if k == 0 else rng.randint(300, 800) for k, i in enumerate(heavy)
        }
        self.showcase = heavy[0]
        others = [i for i in everyone if i not in self.heavy_counts]
        self.pool = set(rng.sample(everyone, max(1, round(n * 0.20))))
        self.no_email = set(rng.sample(others, max(1, round(n * 0.05))))
        self.no_phone = set(rng.sample(others, max(1, round(n * 0.06))))
        for i in everyone:
            self.customer(i, person=i in persons, dormant=i in dormant)
            if i % _BATCH == _BATCH - 1:
                for rows in (self.sales, self.support, self.contracts):
                    rows.flush()
        for _ in range(max(3, n // 25)):
            self.outside_requester()
        Planter(self).plant()

    def make_users(self) -> None:
        rng = self.rng
        reps = max(8, min(500, self.n // 150))
        managers_per_region = 1 if reps < 60 else 2
        users: list[tuple[str, str, str, str, str]] = []
        regions = list(REGIONS) + rng.choices(REGIONS, weights=REGION_WEIGHTS, k=reps - len(REGIONS))
        roles = ["manager"] * (managers_per_region * len(REGIONS)) + ["rep"] * reps
        user_regions = list(REGIONS) * managers_per_region + regions
        order = list(range(len(roles)))
        rng.shuffle(order)
        self.reps_by_region: dict[str, list[str]] = {r: [] for r in REGIONS}
        self.all_reps: list[str] = []
        for k, pos in enumerate(order):
            user_id = f"u-{1001 + k}"
            surname, s_py, given, given_py = self.person_name()
            email = self.unique_email(f"{s_py}.{given_py}", "sales.demo-crm.cn")
            role, region = roles[pos], user_regions[pos]
            users.append((user_id, surname + given, email, region, role))
            if role == "rep":
                self.reps_by_region[region].append(user_id)
                self.all_reps.append(user_id)
        self.sales.rows["users"].extend(users)

    def customer(self, i: int, *, person: bool, dormant: bool) -> None:
        rng = self.rng
        end = self.end
        heavy = i in self.heavy_counts
        region = rng.choices(REGIONS, weights=REGION_WEIGHTS)[0]
        city = rng.choice(_CITIES_BY_REGION[region])
        if dormant:
            status = rng.choices(("churned", "lead", "prospect"), weights=(60, 25, 15))[0]
            created = self.between(end - 7 * YEAR, end - 2 * YEAR)
            latest = end - 400 * DAY
        else:
            status = (
                "customer"
                if heavy
                else rng.choices(("lead", "prospect", "customer", "churned"), weights=(15, 20, 50, 15))[0]
            )
            created = self.between(end - 6 * YEAR, end - 40 * DAY)
            latest = end - 1
        surname, s_py, given, given_py = self.person_name()
        contact = surname + given
        tax_id: str | None = None
        title: str | None = None
        if person:
            name = contact
            contact_name = None
            if i in self.no_email:
                email = None
            else:
                domain = rng.choice(PERSON_MAIL_DOMAINS)
                local = (
                    str(rng.randint(100000, 9999999999))
                    if domain == "qq.com"
                    else rng.choice(
                        (f"{s_py}{given_py}", f"{given_py}.{s_py}", f"{s_py}{given_py}{rng.randint(70, 99)}")
                    )
                )
                email = self.unique_email(local, domain)
        else:
            (b1, p1), (b2, p2) = rng.sample(_BRAND, 2)
            industry, ind_py = rng.choice(INDUSTRIES)
            form = rng.random()
            if form < 0.7:
                name = f"{city[0]}{b1}{b2}{industry}有限公司"
            elif form < 0.85:
                name = f"{b1}{b2}{industry}（{city[0]}）有限公司"
            else:
                name = f"{city[0]}{b1}{b2}{industry}股份有限公司"
            contact_name = contact
            title = rng.choice(TITLES) if rng.random() < 0.85 else None
            tax_id = self.tax_id(city[4])
            if i in self.no_email:
                email = None
            else:
                domain = rng.choice(
                    (f"{p1}{p2}.cn", f"{p1}{p2}.com", f"{p1}{p2}.com.cn", f"{p1}{p2}-{ind_py or 'group'}.com")
                )
                local = rng.choice(
                    (
                        f"{s_py}.{given_py}",
                        f"{s_py}{given_py}",
                        f"{given_py}.{s_py}",
                        f"{given_py[0]}{s_py}",
                        f"{s_py}_{given_py}",
                    )
                )
                email = self.unique_email(local, domain)
        mobile: str | None = None
        phone: str | None = None
        if i not in self.no_phone:
            mobile = self.mobile() if person or rng.random() < 0.6 else None
            phone = self.phone_text(mobile, city[3])
        typed_email = self.messy_case(email) if email is not None and rng.random() < 0.22 else email
        address = self.address(city) if rng.random() < (0.6 if person else 0.95) else None

        owner: str | None = None
        owner_since: str | None = None
        pool_since: str | None = None
        if i in self.pool:
            since = self.between(created, latest)
            pool_since = iso(since)
        else:
            candidates = self.reps_by_region[region] if rng.random() < 0.85 else self.all_reps
            owner = rng.choice(candidates or self.all_reps)
            since = self.between(created, latest)
            owner_since = iso(since)
        updated = self.between(since, latest)
        self.sales.rows["accounts"].append(
            (
                f"A{FIRST_ACCOUNT + i}",
                "person" if person else "company",
                name,
                contact_name,
                title,
                typed_email,
                phone,
                address,
                tax_id,
                region,
                status,
                owner,
                owner_since,
                pool_since,
                iso(created),
                iso(updated),
                rng.randint(1, 12),
            )
        )
        c = _Customer(
            i,
            f"A{FIRST_ACCOUNT + i}",
            "person" if person else "company",
            region,
            city,
            status,
            dormant,
            created,
            latest,
            name,
            email,
            mobile,
            tax_id,
            owner,
            contact,
            surname,
            s_py,
            given_py,
        )
        self.sources.append(c)
        self.activities(c)
        self.orders(c)
        self.opportunities(c)
        if email is not None and (heavy or rng.random() < 0.55):
            self.tickets(c, self.heavy_counts.get(i, 0))
        if tax_id is not None:
            self.contracts_of(c)

    def rep_for(self, c: _Customer) -> str:
        return c.owner or self.rng.choice(self.reps_by_region[c.region] or self.all_reps)

    def activities(self, c: _Customer) -> None:
        rng = self.rng
        count = rng.randint(1, 4) if c.status == "lead" else rng.randint(1, 12)
        times = [self.between(c.created, c.latest) for _ in range(count)]
        if not c.dormant:
            times[0] = self.between(max(c.created, self.end - 300 * DAY), c.latest)
        rows = self.sales.rows["activities"]
        for t in times:
            kind = rng.choice(ACTIVITY_TYPES)
            subject, notes = rng.choice(ACTIVITIES[kind])
            rows.append(
                (f"AC{self.activity_seq:06d}", c.account_no, kind, iso(t), subject, notes, self.rep_for(c))
            )
            self.activity_seq += 1

    def orders(self, c: _Customer) -> None:
        rng = self.rng
        if c.status in ("customer", "churned"):
            count = rng.randint(1, 8)
        elif c.status == "prospect":
            count = rng.randint(0, 1)
        else:
            return
        for _ in range(count):
            at = self.between(c.created, c.latest)
            currency = "USD" if rng.random() < 0.05 else "CNY"
            items = []
            total = 0
            for sku, pname, price in rng.sample(PRODUCTS, rng.randint(1, 4)):
                unit = price if currency == "CNY" else price // 7
                qty = rng.randint(1, 20)
                items.append({"sku": sku, "name": pname, "qty": qty, "unit_price_cents": unit})
                total += unit * qty
            age = self.end - at
            if age < 14 * DAY:
                status = rng.choice(("pending", "paid", "shipped"))
            else:
                status = rng.choices(("paid", "shipped", "cancelled", "refunded"), weights=(30, 55, 9, 6))[0]
            order_no = f"O{self.order_seq}"
            self.order_seq += 1
            self.sales.rows["orders"].append(
                (order_no, c.account_no, iso(at), status, currency, total, orjson.dumps(items).decode())
            )
            if status in ("paid", "shipped", "refunded"):
                self.payment(c, order_no, at, total, currency)

    def payment(self, c: _Customer, order_no: str, ordered: int, amount: int, currency: str) -> None:
        rng = self.rng
        paid = self.between(ordered, min(ordered + 10 * DAY, c.latest))
        method = rng.choices(("card", "bank_transfer", "alipay", "wechat_pay"), weights=(20, 45, 20, 15))[0]
        last4 = f"{rng.randint(0, 9999):04d}" if method == "card" else None
        bank = f"6222 **** **** {rng.randint(0, 9999):04d}" if method == "bank_transfer" else None
        invoice: str | None = None
        if rng.random() < 0.7:
            invoice = f"INV{time.gmtime(paid).tm_year}{self.invoice_seq:07d}"
            self.invoice_seq += 1
        self.sales.rows["payments"].append(
            (
                f"P{self.payment_seq}",
                c.account_no,
                order_no,
                iso(paid),
                amount,
                currency,
                method,
                last4,
                bank,
                invoice,
            )
        )
        self.payment_seq += 1

    def opportunities(self, c: _Customer) -> None:
        rng = self.rng
        if c.status == "lead":
            return
        count = rng.randint(0, 1) if c.dormant else rng.randint(0, 3)
        for _ in range(count):
            updated = self.between(c.created, c.latest)
            stage = "lost" if c.dormant else rng.choice(("qualify", "propose", "negotiate", "won", "lost"))
            if stage in ("won", "lost"):
                close = self.between(c.created, updated)
            else:
                close = self.between(self.end, self.end + 180 * DAY)
            title = rng.choice(OPPORTUNITY_TITLES).format(y=time.gmtime(close).tm_year)
            self.sales.rows["opportunities"].append(
                (
                    f"OP{self.opportunity_seq}",
                    c.account_no,
                    title,
                    stage,
                    rng.randint(10, 5000) * 100000,
                    "CNY",
                    iso(close),
                    iso(updated),
                )
            )
            self.opportunity_seq += 1

    def requester(self, email: str, display: str, phone: str | None, first_ticket: int, vip: bool) -> None:
        language = "en-US" if self.rng.random() < 0.08 else "zh-CN"
        created = first_ticket - self.rng.randint(0, 30 * DAY)
        self.support.rows["requesters"].append((email, display, phone, int(vip), language, created))

    def tickets(self, c: _Customer, heavy_count: int) -> None:
        rng = self.rng
        assert c.email is not None
        count = heavy_count or min(12, 1 + int(rng.expovariate(0.45)))
        lo = max(c.created, self.end - 3 * YEAR)
        first = self.write_tickets(c.email, count, lo, c.latest, comments_max=2 if heavy_count else 4)
        r = rng.random()
        if c.kind == "company" and r < 0.1:
            display = f"{c.surname}{'女士' if rng.random() < 0.5 else '先生'}"
        elif r < 0.16:
            display = f"{c.given_py.capitalize()} {c.surname_py.capitalize()}"
        else:
            display = c.display_name
        phone = c.mobile if c.mobile is not None and rng.random() < 0.7 else None
        self.requester(c.email, display, phone, first, vip=bool(heavy_count) or rng.random() < 0.05)

    def outside_requester(self) -> None:
        """Someone who writes to support but is not a sales account."""
        rng = self.rng
        surname, s_py, given, given_py = self.person_name()
        email = self.unique_email(f"{s_py}{given_py}{rng.randint(1, 99)}", rng.choice(PERSON_MAIL_DOMAINS))
        first = self.write_tickets(
            email, rng.randint(1, 3), self.end - 2 * YEAR, self.end - 1, comments_max=3
        )
        self.requester(email, surname + given, None, first, vip=False)

    def write_tickets(self, email: str, count: int, lo: int, hi: int, *, comments_max: int) -> int:
        """Write ``count`` tickets of ``email`` created in [lo, hi]; answer the earliest creation time."""
        rng = self.rng
        end = self.end
        tickets = self.support.rows["tickets"]
        comments = self.support.rows["comments"]
        first = hi
        for _ in range(count):
            created = self.between(lo, hi)
            first = min(first, created)
            category = rng.choices(TICKET_CATEGORIES, weights=(20, 40, 20, 20))[0]
            subject = rng.choice(TICKET_SUBJECTS[category])
            if rng.random() < 0.05:
                subject = "【紧急】" + subject
            age = end - created
            if age < 3 * DAY:
                status = rng.choice(("new", "open", "open", "pending"))
            elif age < 30 * DAY:
                status = rng.choice(("open", "pending", "solved", "solved"))
            else:
                status = rng.choices(("solved", "closed", "pending"), weights=(30, 67, 3))[0]
            updated = self.between(created, min(created + 20 * DAY, hi))
            assignee = None if status == "new" else f"agent-{rng.randint(1, 40)}"
            score: int | None = None
            comment: str | None = None
            rated: int | None = None
            if status in ("solved", "closed") and rng.random() < 0.45:
                score = rng.choices((1, 2, 3, 4, 5), weights=(5, 7, 13, 35, 40))[0]
                comment = rng.choice(RATING_COMMENTS[score])
                rated = updated
            ticket_id = self.ticket_seq
            self.ticket_seq += 1
            tickets.append(
                (
                    ticket_id,
                    email,
                    subject,
                    category,
                    rng.choices(("low", "normal", "high", "urgent"), weights=(20, 55, 20, 5))[0],
                    status,
                    rng.choices(("email", "phone", "chat", "web"), weights=(35, 30, 20, 15))[0],
                    assignee,
                    created,
                    updated,
                    score,
                    comment,
                    rated,
                )
            )
            n_comments = rng.randint(1, comments_max)
            step = max(1, (updated - created) // n_comments)
            for k in range(n_comments):
                at = created + k * step
                if k == 0:
                    author, body, public = email, rng.choice(REQUESTER_BODIES).format(s=subject), 1
                elif assignee is not None and rng.random() < 0.3:
                    author, body, public = assignee, rng.choice(PRIVATE_NOTES), 0
                elif assignee is not None and rng.random() < 0.75:
                    author, body, public = assignee, rng.choice(AGENT_REPLIES), 1
                else:
                    author, body, public = (
                        email,
                        "补充一下：" + rng.choice(REQUESTER_BODIES).format(s=subject),
                        1,
                    )
                comments.append((self.comment_seq, ticket_id, author, body, public, at))
                self.comment_seq += 1
        return first

    def contracts_of(self, c: _Customer) -> None:
        rng = self.rng
        if c.index == self.showcase:
            # One party shows every kind: active, confidential, NDA without value, unsigned draft.
            plan = [("sales", "active", False), ("framework", "active", True), ("nda", None, False)]
            plan.append(("service", "draft", False))
        else:
            if c.status == "customer":
                count = rng.randint(1, 4)
            elif c.status == "churned":
                count = rng.randint(1, 2)
            elif c.status == "prospect":
                count = 1 if rng.random() < 0.3 else 0
            else:
                count = 1 if rng.random() < 0.1 else 0
            plan = []
            for _ in range(count):
                kind = rng.choices(("sales", "service", "framework", "nda"), weights=(40, 25, 15, 20))[0]
                if c.status == "lead":
                    kind = "nda"
                plan.append((kind, None, rng.random() < 0.1))
        for kind, forced_status, confidential in plan:
            self.contract(c, kind, forced_status, confidential)

    def contract(self, c: _Customer, kind: str, forced_status: str | None, confidential: bool) -> None:
        rng = self.rng
        end = self.end
        draft = forced_status == "draft" or (forced_status is None and not c.dormant and rng.random() < 0.05)
        if draft:
            starts = self.between(end - 20 * DAY, end + 60 * DAY)
            signed: int | None = None
            updated = self.between(max(c.created, end - 30 * DAY), c.latest)
        else:
            if forced_status == "active":
                starts = self.between(max(c.created, end - 300 * DAY), c.latest)
            else:
                starts = self.between(c.created, c.latest - 30 * DAY)
            signed = starts - rng.randint(0, 30 * DAY)
            updated = self.between(starts, c.latest)
        years = rng.choice((1, 1, 2, 3))
        open_ended = kind in ("framework", "nda") and rng.random() < 0.3 and not c.dormant
        ends = None if open_ended else starts + years * YEAR - DAY
        if c.dormant and ends is not None:
            # A dormant party's contracts ended long ago: nothing of it in the last 365 days.
            ends = min(ends, c.latest)
            starts = min(starts, ends)
            signed = None if signed is None else min(signed, starts)
            updated = min(max(updated, starts), c.latest)
        if draft:
            status = "draft"
        elif ends is not None and ends < end:
            status = "terminated" if rng.random() < 0.15 else "expired"
        elif forced_status == "active" or rng.random() < 0.93:
            status = "active"
        else:
            status = "terminated"
        year = time.gmtime(signed if signed is not None else starts).tm_year
        seq = self.contract_seq.get(year, 0) + 1
        self.contract_seq[year] = seq
        contract_id = f"HT-{year}-{seq:05d}"
        currency = "USD" if rng.random() < 0.05 else "CNY"
        value: str | None = None
        if kind != "nda":
            cents = rng.randint(50, 50000) * 1000 + rng.choice((0, 0, 0, rng.randint(1, 99)))
            value = f"{cents // 100}.{cents % 100:02d}"
        self.contracts.rows["contracts"].append(
            (
                contract_id,
                c.tax_id,
                c.name,
                kind,
                status,
                None if signed is None else day(signed),
                day(starts),
                None if ends is None else day(ends),
                int(kind != "nda" and rng.random() < 0.3),
                value,
                currency,
                None if kind == "nda" else rng.choice(PAYMENT_TERMS),
                int(confidential),
                day(updated),
            )
        )
        uploaded = signed if signed is not None else updated
        docs = ["保密协议.pdf"] if kind == "nda" else ["合同正文.pdf"]
        if draft:
            docs = ["合同草稿 v2.docx"]
        elif kind != "nda":
            docs += rng.sample(
                ["附件一 报价单.pdf", "附件二 服务等级协议.pdf", "补充协议.pdf"], rng.randint(0, 2)
            )
        for name in docs:
            self.contracts.rows["documents"].append((contract_id, name, rng.randint(1, 60), day(uploaded)))


# --- planted duplicates ----------------------------------------------------------------------


class Planter:
    """Accounts entered twice, the ways it happens (and look-alikes that are not the same customer),
    appended after the generated customers with a random stream of their own, so the rest of the data
    set is the same with or without them. What was planted is the truth ``identity-truth.json`` holds:
    ``duplicates`` and ``lookalikes`` as ``[account_no, account_no, kind]``, ``previous_emails`` as
    ``[account_no, e-mail]`` (tickets filed under an e-mail the sales account no longer has)."""

    DUPLICATE_KINDS = ("tax_id", "email", "phone", "name", "contact")
    LOOKALIKE_KINDS = ("same_name_other_tax_id", "same_person_name", "same_contact_other_company")

    def __init__(self, gen: _Generator) -> None:
        self.gen = gen
        self.rng = random.Random(gen.seed * 1_000_003 + 16)
        self.next_index = gen.n + max(3, gen.n // 25)  # account numbers after every generated one
        self.used: set[str] = set()

    def plant(self) -> None:
        gen, rng = self.gen, self.rng
        main_rng, gen.rng = gen.rng, rng  # the generator's helpers draw from the planting stream
        try:
            sources = [c for c in gen.sources if c.index not in gen.heavy_counts]
            companies = [c for c in sources if c.kind == "company"]
            persons_with_mobile = [c for c in sources if c.kind == "person" and c.mobile is not None]
            with_email = [c for c in sources if c.email is not None]
            duplicates = max(20, gen.n // 25)
            for k in range(duplicates):
                kind = self.DUPLICATE_KINDS[k % len(self.DUPLICATE_KINDS)]
                pool = {"phone": persons_with_mobile, "email": with_email}.get(kind, companies)
                source = self.pick(pool)
                if source is not None:
                    self.duplicate(kind, source)
            for k in range(max(10, gen.n // 50)):
                kind = self.LOOKALIKE_KINDS[k % len(self.LOOKALIKE_KINDS)]
                persons = [c for c in sources if c.kind == "person"]
                source = self.pick(persons if kind == "same_person_name" else companies)
                if source is not None:
                    self.lookalike(kind, source)
            for _ in range(max(5, gen.n // 200)):
                self.moved_email()
        finally:
            gen.rng = main_rng

    def pick(self, pool: list[_Customer]) -> _Customer | None:
        for _ in range(50):
            c = self.rng.choice(pool)
            if c.account_no not in self.used:
                self.used.add(c.account_no)
                return c
        return None

    def account_no(self) -> str:
        number = f"A{FIRST_ACCOUNT + self.next_index}"
        self.next_index += 1
        return number

    def name_variant(self, name: str) -> str:
        """The same company typed differently: legal form, group marker, width, spaces, brackets."""
        rng = self.rng
        for _ in range(10):
            style = rng.randrange(5)
            if style == 0 and name.endswith("股份有限公司"):
                variant = name[: -len("股份有限公司")] + "有限公司"
            elif style == 0 and name.endswith("有限公司"):
                variant = name[: -len("有限公司")] + "股份有限公司"
            elif style == 1 and name.endswith("有限公司"):
                variant = name[: -len("有限公司")] + "（集团）有限公司"
            elif style == 2 and "（" in name:
                variant = name.replace("（", "(").replace("）", ")")
            elif style == 3 and len(name) > 4:
                variant = name[:2] + " " + name[2:]
            elif style == 4:
                variant = name.translate(_FULL_WIDTH)
            else:
                continue
            if variant != name:
                return variant
        return name + " "

    def new_contact(self) -> tuple[str, str]:
        surname, s_py, given, given_py = self.gen.person_name()
        return surname + given, f"{s_py}.{given_py}"

    def write(
        self,
        source: _Customer,
        *,
        kind: str,
        name: str,
        contact_name: str | None,
        email: str | None,
        phone: str | None,
        tax_id: str | None,
        region: str | None = None,
    ) -> str:
        gen, rng = self.gen, self.rng
        account_no = self.account_no()
        created = gen.between(gen.end - 2 * YEAR, gen.end - 10 * DAY)
        owner = None if rng.random() < 0.3 else rng.choice(gen.all_reps)
        since = iso(gen.between(created, gen.end - 1))
        gen.sales.rows["accounts"].append(
            (
                account_no,
                kind,
                name,
                contact_name,
                None,
                email,
                phone,
                gen.address(source.city) if rng.random() < 0.5 else None,
                tax_id,
                region or source.region,
                "lead",
                owner,
                since if owner else None,
                None if owner else since,
                iso(created),
                since,
                1,
            )
        )
        return account_no

    def duplicate(self, kind: str, c: _Customer) -> None:
        gen, rng = self.gen, self.rng
        area = c.city[3]
        if kind == "tax_id":
            contact, local = self.new_contact()
            number = self.write(
                c,
                kind="company",
                name=self.name_variant(c.name),
                contact_name=contact,
                email=gen.unique_email(local, f"mail{rng.randint(1, 99)}.{c.account_no.lower()}.cn"),
                phone=gen.phone_text(None, area),
                tax_id=c.tax_id,
            )
        elif kind == "email":
            assert c.email is not None
            number = self.write(
                c,
                kind=c.kind,
                name=c.name if c.kind == "person" else self.name_variant(c.name),
                contact_name=None if c.kind == "person" else c.display_name,
                email=" " + gen.messy_case(c.email),
                phone=None,
                tax_id=None,
            )
        elif kind == "phone":
            number = self.write(
                c,
                kind="person",
                name=c.name,
                contact_name=None,
                email=None,
                phone=gen.phone_text(c.mobile, area),
                tax_id=None,
            )
        elif kind == "name":
            contact, _ = self.new_contact()
            number = self.write(
                c,
                kind="company",
                name=self.name_variant(c.name),
                contact_name=contact,
                email=None,
                phone=gen.phone_text(None, area),
                tax_id=None,
            )
        else:  # contact: the company under a short name, its contact typed with a space
            short = c.name.replace(c.city[0], "", 1)
            for form in ("股份有限公司", "有限公司"):
                short = short.replace(form, "")
            short = short.replace("（）", "").replace("()", "")
            contact = c.display_name[:1] + " " + c.display_name[1:]
            number = self.write(
                c,
                kind="company",
                name=short,
                contact_name=contact,
                email=None,
                phone=None,
                tax_id=None,
            )
        self.gen.truth["duplicates"].append([c.account_no, number, kind])

    def lookalike(self, kind: str, c: _Customer) -> None:
        gen, rng = self.gen, self.rng
        area = c.city[3]
        if kind == "same_name_other_tax_id":  # a namesake company elsewhere registered: another entity
            contact, local = self.new_contact()
            number = self.write(
                c,
                kind="company",
                name=c.name,
                contact_name=contact,
                email=gen.unique_email(local, f"{c.account_no.lower()}-other.cn"),
                phone=gen.phone_text(None, area),
                tax_id=gen.tax_id(c.city[4]),
            )
        elif kind == "same_person_name":  # another person of the same name in the same region
            number = self.write(
                c,
                kind="person",
                name=c.name,
                contact_name=None,
                email=gen.unique_email(f"{c.surname_py}{c.given_py}{rng.randint(100, 999)}", "163.com"),
                phone=gen.phone_text(gen.mobile(), area),
                tax_id=None,
            )
        else:  # the same contact name at an unrelated company of the region
            (b1, _), (b2, _) = rng.sample(_BRAND, 2)
            industry, _ = rng.choice(INDUSTRIES)
            number = self.write(
                c,
                kind="company",
                name=f"{b1}{b2}{industry}服务有限公司",
                contact_name=c.display_name,
                email=None,
                phone=gen.phone_text(None, area),
                tax_id=gen.tax_id(c.city[4]),
            )
        self.gen.truth["lookalikes"].append([c.account_no, number, kind])

    def moved_email(self) -> None:
        """A customer whose e-mail changed in the CRM after it wrote to support: its tickets are filed
        under the old e-mail, which no sales account has any more."""
        gen, rng = self.gen, self.rng
        surname, s_py, given, given_py = gen.person_name()
        old = gen.unique_email(f"{s_py}{given_py}{rng.randint(1, 99)}", rng.choice(PERSON_MAIL_DOMAINS))
        new = gen.unique_email(f"{given_py}.{s_py}{rng.randint(1, 99)}", rng.choice(PERSON_MAIL_DOMAINS))
        region = rng.choices(REGIONS, weights=REGION_WEIGHTS)[0]
        city = rng.choice(_CITIES_BY_REGION[region])
        mobile = gen.mobile()
        stand_in = _Customer(
            -1, "", "person", region, city, "lead", False, gen.end - 3 * YEAR, gen.end - 1,
            surname + given, new, mobile, None, None, surname + given, surname, s_py, given_py,
        )  # fmt: skip
        number = self.write(
            stand_in,
            kind="person",
            name=surname + given,
            contact_name=None,
            email=new,
            phone=gen.phone_text(mobile, city[3]),
            tax_id=None,
        )
        first = gen.write_tickets(
            old, rng.randint(2, 5), gen.end - 2 * YEAR, gen.end - 100 * DAY, comments_max=2
        )
        gen.requester(old, surname + given, mobile, first, vip=False)
        self.gen.truth["previous_emails"].append([number, old])


_FULL_WIDTH = str.maketrans({chr(c): chr(c + 0xFEE0) for c in range(0x21, 0x7F)} | {" ": "\u3000"})


# --- CLI -------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m demo.data``: generate (or reuse) a data set and print where it is."""
    parser = argparse.ArgumentParser(prog="python -m demo.data", description=main.__doc__)
    parser.add_argument("--customers", type=int, default=DEFAULT_CUSTOMERS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument(
        "--anchor", type=date.fromisoformat, default=None, help="YYYY-MM-DD (default: today, UTC)"
    )
    parser.add_argument("--force", action="store_true", help="regenerate even when the files match")
    args = parser.parse_args(argv)
    data = generate(
        args.data_dir, customers=args.customers, seed=args.seed, anchor=args.anchor, force=args.force
    )
    verb = f"generated in {data.seconds:.1f} s" if data.generated else "reused"
    print(f"{data.customers} customers, seed {data.seed}, anchor {data.anchor}: {verb}")
    for name, path in data.paths.items():
        print(f"  {name:<9} {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
