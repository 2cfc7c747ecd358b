"""The public pool end to end: claim, release, the limit, the cooldown, the race, recycling (sweep,
protection, warnings, two gateway instances), publicPool, dormant customers, recycleDormant, history.

Every test gets demo systems of its own (in memory: the writes of one test never reach another) and a
gateway database of its own. Time is controlled by the pool settings (small thresholds) and by the
sweep's ``now``; the demo data's activities are relative to today.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from demo.data import DemoExamples
from demo.servers import DemoSystems
from features.pool import PoolEvent, PoolService
from features.store import AuditFilter, AuditLog
from gateway.app import create_app
from tests.store.conftest import _reachable, pg_test_url, services_required

from .conftest import Graph, customer_id, keyed_database, settings_for

CUSTOMERS = 200
SEED = 31
DAY = timedelta(days=1)

CLAIM = """mutation($id: ID!) { claimCustomer(id: $id) { customer { accountNo inPool owner { userId } recycleAt } } }"""
RELEASE = """mutation($id: ID!, $reason: ReleaseReason!, $note: String) {
  releaseCustomer(id: $id, reason: $reason, note: $note) { customer { accountNo inPool owner { userId } email } } }"""
HISTORY = """query($id: ID!) { poolHistory(customerId: $id) {
  edges { node { kind at ownerId actor releaseReason recycleReason recycleAt note } } } }"""
POOL = """query($first: Int, $after: String, $filter: PoolFilter) {
  publicPool(first: $first, after: $after, filter: $filter) {
    totalCount pageInfo { hasNextPage endCursor }
    edges { node { poolSince daysInPool reason releaseReason
      customer { accountNo inPool email phone address contactName } } } } }"""


# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pool_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pool-data")


@pytest.fixture
def systems(pool_data: Path) -> Iterator[DemoSystems]:
    """Fresh demo systems per test: the data is generated once, each test serves an in-memory copy."""
    with DemoSystems(
        pool_data,
        customers=CUSTOMERS,
        seed=SEED,
        sales_port=0,
        support_port=0,
        contracts_port=0,
        support_rate=10_000,
        contracts_latency_ms=(1.0, 3.0),
        in_memory=True,
    ) as running:
        yield running


@pytest.fixture
def examples(systems: DemoSystems) -> DemoExamples:
    return systems.examples()


@dataclass
class Gateway:
    graph: Graph
    pool: PoolService


@asynccontextmanager
async def gateway(systems: DemoSystems, database_url: str, **env: str) -> AsyncIterator[Gateway]:
    # These tests are about the pool's rules between a release and the next claim (cooldown, limits,
    # protection): without the review a released customer waits for (tests/e2e/test_pool_review.py).
    env = {"CG_POOL_REVIEW": "false", **env}
    settings = settings_for(
        systems, CG_DATABASE_URL=database_url, CG_POOL_SWEEP_INTERVAL="0", CG_RATE_LIMIT_PER_MINUTE="0", **env
    )
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
    ):
        yield Gateway(Graph(client), app.state.gateway.pool)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/gateway.db"


@pytest.fixture
async def gw(systems: DemoSystems, db_url: str) -> AsyncIterator[Gateway]:
    async with gateway(systems, db_url) as made:
        yield made


# --- the sales system, read behind the gateway's back ----------------------------------------------------


def sales_get(systems: DemoSystems, path: str, **params: Any) -> Any:
    response = httpx.get(systems.sales_url + path, params=params, headers=systems.auth_headers("sales"))
    response.raise_for_status()
    return response.json()


def all_accounts(systems: DemoSystems, **params: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    page = 1
    while True:
        body = sales_get(systems, "/api/v1/accounts", page=page, per_page=200, **params)
        out.extend(body["data"])
        if page * 200 >= body["meta"]["total"]:
            return out
        page += 1


def raw(systems: DemoSystems, account_no: str) -> dict[str, Any]:
    [account] = sales_get(systems, "/api/v1/accounts", ids=account_no)["data"]
    return account  # type: ignore[no-any-return]


def activities(systems: DemoSystems, account_nos: list[str]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {no: [] for no in account_nos}
    for i in range(0, len(account_nos), 100):
        chunk = account_nos[i : i + 100]
        for item in sales_get(systems, "/api/v1/activities", account_nos=",".join(chunk))["data"]:
            out[item["account_no"]].append(item)
    return out


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def reps(systems: DemoSystems) -> list[str]:
    return sorted({a["owner_id"] for a in all_accounts(systems) if a["owner_id"]})


def pool_accounts(systems: DemoSystems) -> list[dict[str, Any]]:
    return all_accounts(systems, unowned="true")


def expected_due(systems: DemoSystems, now: datetime, after: timedelta, protection: timedelta) -> set[str]:
    """The recycle rule written out independently: no activity by the owner for ``after`` (from its last
    activity, else owner_since), and never within ``protection`` of owner_since."""
    owned = [a for a in all_accounts(systems) if a["owner_id"]]
    acts = activities(systems, [a["account_no"] for a in owned])
    due = set()
    for account in owned:
        since = at(account["owner_since"])
        mine = [
            at(x["occurred_at"]) for x in acts[account["account_no"]] if x["by_user"] == account["owner_id"]
        ]
        base = max(mine) if mine else since
        if max(base + after, since + protection) <= now:
            due.add(account["account_no"])
    return due


def rep_token(sub: str) -> dict[str, Any]:
    return {"roles": ["sales_rep"], "sub": sub}


def error(result: dict[str, Any]) -> dict[str, Any]:
    assert "errors" in result, result
    return result["errors"][0]["extensions"]  # type: ignore[no-any-return]


# --- claim, release, limit, cooldown, race -----------------------------------------------------------


async def test_claim_a_pool_customer(gw: Gateway, systems: DemoSystems, examples: DemoExamples) -> None:
    target = examples.pool
    result = await gw.graph.query(CLAIM, {"id": customer_id(target)}, **rep_token(examples.rep))
    assert "errors" not in result, result
    customer = result["data"]["claimCustomer"]["customer"]
    assert customer["inPool"] is False and customer["owner"] == {"userId": examples.rep}
    assert raw(systems, target)["owner_id"] == examples.rep
    # no activity yet: recycled 90 days after the claim unless the rep logs one
    owner_since = at(raw(systems, target)["owner_since"])
    assert at(customer["recycleAt"]) == owner_since + 90 * DAY
    history = await gw.graph.query(HISTORY, {"id": customer_id(target)}, **rep_token(examples.rep))
    [claim] = [e["node"] for e in history["data"]["poolHistory"]["edges"]]
    assert (claim["kind"], claim["ownerId"], claim["actor"]) == ("CLAIM", examples.rep, examples.rep)
    # claiming what one already owns is harmless
    again = await gw.graph.query(CLAIM, {"id": customer_id(target)}, **rep_token(examples.rep))
    assert again["data"]["claimCustomer"]["customer"]["owner"] == {"userId": examples.rep}
    history = await gw.graph.query(HISTORY, {"id": customer_id(target)}, **rep_token(examples.rep))
    assert len(history["data"]["poolHistory"]["edges"]) == 1


@pytest.mark.parametrize("role", ["sales_manager", "support_agent", "data_steward", "auditor"])
async def test_only_sales_reps_claim(
    gw: Gateway, systems: DemoSystems, examples: DemoExamples, role: str
) -> None:
    region = raw(systems, examples.pool)["region"]
    result = await gw.graph.query(
        CLAIM, {"id": customer_id(examples.pool)}, roles=[role], sub=examples.manager, region=region
    )
    assert error(result) == {"code": "FORBIDDEN", "reason": "POLICY"}
    assert raw(systems, examples.pool)["owner_id"] is None


async def test_claim_refused_at_the_ownership_limit(
    systems: DemoSystems, examples: DemoExamples, db_url: str
) -> None:
    owned = len(all_accounts(systems, owner_id=examples.rep))
    async with gateway(systems, db_url, CG_POOL_MAX_OWNED=str(owned)) as gw:
        result = await gw.graph.query(CLAIM, {"id": customer_id(examples.pool)}, **rep_token(examples.rep))
        assert result["data"]["claimCustomer"] is None
        assert error(result) == {"code": "FORBIDDEN", "reason": "OWNED_LIMIT", "owned": owned, "limit": owned}
        assert "limit is" in result["errors"][0]["message"]
        assert raw(systems, examples.pool)["owner_id"] is None
    async with gateway(systems, db_url, CG_POOL_MAX_OWNED=str(owned + 1)) as gw:
        result = await gw.graph.query(CLAIM, {"id": customer_id(examples.pool)}, **rep_token(examples.rep))
        assert "errors" not in result, result


async def test_cooldown_after_release(gw: Gateway, systems: DemoSystems, examples: DemoExamples) -> None:
    target = examples.owned
    released = await gw.graph.query(
        RELEASE,
        {"id": customer_id(target), "reason": "NO_DEMAND", "note": "budget frozen"},
        **rep_token(examples.rep),
    )
    assert "errors" not in released, released
    customer = released["data"]["releaseCustomer"]["customer"]
    assert customer["inPool"] is True and customer["owner"] is None
    assert customer["email"] is None or "***@" in customer["email"]  # now a pool customer: masked
    assert raw(systems, target)["owner_id"] is None

    again = await gw.graph.query(CLAIM, {"id": customer_id(target)}, **rep_token(examples.rep))
    refusal = error(again)
    assert (refusal["code"], refusal["reason"]) == ("FORBIDDEN", "COOLDOWN")
    assert at(refusal["until"]) > datetime.now(UTC) + 29 * DAY
    assert raw(systems, target)["owner_id"] is None

    other = next(r for r in reps(systems) if r != examples.rep)
    taken = await gw.graph.query(CLAIM, {"id": customer_id(target)}, **rep_token(other))
    assert taken["data"]["claimCustomer"]["customer"]["owner"] == {"userId": other}


async def test_cooldown_is_a_setting(systems: DemoSystems, examples: DemoExamples, db_url: str) -> None:
    async with gateway(systems, db_url, CG_POOL_COOLDOWN_DAYS="0") as gw:
        target = customer_id(examples.owned)
        await gw.graph.query(RELEASE, {"id": target, "reason": "CAPACITY"}, **rep_token(examples.rep))
        again = await gw.graph.query(CLAIM, {"id": target}, **rep_token(examples.rep))
        assert again["data"]["claimCustomer"]["customer"]["owner"] == {"userId": examples.rep}


async def test_two_reps_racing_exactly_one_wins(gw: Gateway, systems: DemoSystems) -> None:
    first, second = reps(systems)[:2]
    targets = [a["account_no"] for a in pool_accounts(systems)[:6]]
    systems.reset_stats("sales")
    for target in targets:
        results = await asyncio.gather(
            gw.graph.query(CLAIM, {"id": customer_id(target)}, **rep_token(first)),
            gw.graph.query(CLAIM, {"id": customer_id(target)}, **rep_token(second)),
        )
        winners = [r for r in results if r["data"]["claimCustomer"] is not None]
        losers = [r for r in results if r["data"]["claimCustomer"] is None]
        assert len(winners) == 1 and len(losers) == 1, results
        assert error(losers[0]) == {"code": "CONFLICT", "reason": "ALREADY_CLAIMED"}
        assert "claimed this customer first" in losers[0]["errors"][0]["message"]
        winner = winners[0]["data"]["claimCustomer"]["customer"]["owner"]["userId"]
        assert raw(systems, target)["owner_id"] == winner  # never silently overwritten
        history = await gw.graph.query(HISTORY, {"id": customer_id(target)}, **rep_token(winner))
        assert [e["node"]["ownerId"] for e in history["data"]["poolHistory"]["edges"]] == [winner]
    puts = systems.stats("sales")["endpoints"]["PUT /api/v1/accounts/{account_no}/owner"]["statuses"]
    # one owner change per customer; the losers were stopped by If-Match (both read it in the pool)
    assert puts["200"] == len(targets) and puts.get("412", 0) >= 1, puts


async def test_release_reasons_and_who_may_release(
    gw: Gateway, systems: DemoSystems, examples: DemoExamples
) -> None:
    target = customer_id(examples.owned)
    no_note = await gw.graph.query(RELEASE, {"id": target, "reason": "OTHER"}, **rep_token(examples.rep))
    assert error(no_note)["code"] == "BAD_USER_INPUT"
    too_long = await gw.graph.query(
        RELEASE, {"id": target, "reason": "DUPLICATE", "note": "x" * 501}, **rep_token(examples.rep)
    )
    assert error(too_long)["code"] == "BAD_USER_INPUT"
    unknown = await gw.graph.query(RELEASE, {"id": target, "reason": "BORED"}, **rep_token(examples.rep))
    assert error(unknown)["code"] == "BAD_USER_INPUT"
    other = next(r for r in reps(systems) if r != examples.rep)
    not_theirs = await gw.graph.query(RELEASE, {"id": target, "reason": "CAPACITY"}, **rep_token(other))
    assert error(not_theirs)["code"] == "NOT_FOUND"  # another rep's customer does not exist for it
    region = raw(systems, examples.owned)["region"]
    manager = await gw.graph.query(
        RELEASE,
        {"id": target, "reason": "CAPACITY"},
        roles=["sales_manager"],
        sub=examples.manager,
        region=region,
    )
    assert error(manager) == {"code": "FORBIDDEN", "reason": "POLICY"}
    assert raw(systems, examples.owned)["owner_id"] == examples.rep

    done = await gw.graph.query(
        RELEASE, {"id": target, "reason": "OTHER", "note": "moved abroad"}, **rep_token(examples.rep)
    )
    assert done["data"]["releaseCustomer"]["customer"]["inPool"] is True


# --- history ---------------------------------------------------------------------------------------


async def test_pool_history(gw: Gateway, systems: DemoSystems, examples: DemoExamples) -> None:
    target = customer_id(examples.owned)
    other = next(r for r in reps(systems) if r != examples.rep)
    await gw.graph.query(
        RELEASE, {"id": target, "reason": "OTHER", "note": "moved abroad"}, **rep_token(examples.rep)
    )
    await gw.graph.query(CLAIM, {"id": target}, **rep_token(other))

    mine = await gw.graph.query(HISTORY, {"id": target}, **rep_token(other))
    nodes = [e["node"] for e in mine["data"]["poolHistory"]["edges"]]
    assert [(n["kind"], n["ownerId"], n["actor"]) for n in nodes] == [
        ("CLAIM", other, other),
        ("RELEASE", examples.rep, examples.rep),
    ]
    assert nodes[1]["releaseReason"] == "OTHER"
    assert nodes[1]["note"] is None  # another rep's note: not for this rep
    assert at(nodes[0]["at"]) >= at(nodes[1]["at"])

    region = raw(systems, examples.owned)["region"]
    # the customer is another rep's now: outside the first rep's rows
    gone = await gw.graph.query(HISTORY, {"id": target}, **rep_token(examples.rep))
    assert error(gone)["code"] == "NOT_FOUND"
    # whoever may assign its owner reads the note
    manager = await gw.graph.query(
        HISTORY, {"id": target}, roles=["sales_manager"], sub=examples.manager, region=region
    )
    assert manager["data"]["poolHistory"]["edges"][1]["node"]["note"] == "moved abroad"


# --- publicPool -------------------------------------------------------------------------------------


async def test_public_pool_as_a_rep_sees_it(
    gw: Gateway, systems: DemoSystems, examples: DemoExamples
) -> None:
    in_pool = {a["account_no"]: a for a in pool_accounts(systems)}
    asked = datetime.now(UTC)
    result = await gw.graph.query(POOL, {"first": 100}, **rep_token(examples.rep))
    answered = datetime.now(UTC)
    page = result["data"]["publicPool"]
    assert page["totalCount"] == len(in_pool)
    nodes = [e["node"] for e in page["edges"]]
    assert nodes and len(nodes) == min(100, len(in_pool))
    for node in nodes:
        customer = node["customer"]
        account = in_pool[customer["accountNo"]]
        assert customer["inPool"] is True and customer["address"] is None
        assert customer["contactName"] == account["contact_name"]
        if account["email"]:
            local, domain = account["email"].lower().split("@")
            assert customer["email"] == f"{local[0]}***@{domain}"
        if customer["phone"]:
            assert "*" in customer["phone"]
        assert node["poolSince"] == account["pool_since"]
        since = at(account["pool_since"])
        assert (asked - since).days <= node["daysInPool"] <= (answered - since).days
        assert node["reason"] == "UNKNOWN"  # in the pool since before the gateway's history
    address_errors = [e for e in result["errors"] if e["path"][-1] == "address"]
    assert address_errors and address_errors[0]["extensions"]["code"] == "FORBIDDEN"
    # every page, and nothing owned
    seen, after = [], None
    while True:
        body = await gw.graph.query(POOL, {"first": 40, "after": after}, **rep_token(examples.rep))
        part = body["data"]["publicPool"]
        seen += [e["node"]["customer"]["accountNo"] for e in part["edges"]]
        if not part["pageInfo"]["hasNextPage"]:
            break
        after = part["pageInfo"]["endCursor"]
    assert seen == sorted(in_pool)


async def test_public_pool_says_why_and_filters(
    gw: Gateway, systems: DemoSystems, examples: DemoExamples
) -> None:
    account = raw(systems, examples.owned)
    await gw.graph.query(
        RELEASE, {"id": customer_id(examples.owned), "reason": "UNREACHABLE"}, **rep_token(examples.rep)
    )
    region = account["region"]
    manager = {"roles": ["sales_manager"], "sub": examples.manager, "region": region}
    result = await gw.graph.query(POOL, {"first": 100, "filter": {"region": region.upper()}}, **manager)
    nodes = {e["node"]["customer"]["accountNo"]: e["node"] for e in result["data"]["publicPool"]["edges"]}
    assert "errors" not in result, result
    assert set(nodes) == {a["account_no"] for a in pool_accounts(systems) if a["region"] == region}
    released = nodes[examples.owned]
    assert (released["reason"], released["releaseReason"], released["daysInPool"]) == (
        "RELEASED",
        "UNREACHABLE",
        0,
    )
    assert released["customer"]["email"] == (account["email"].lower() if account["email"] else None)
    other_region = next(r for r in ("east", "north", "south", "west", "central") if r != region)
    outside = await gw.graph.query(POOL, {"filter": {"region": other_region.upper()}}, **manager)
    assert outside["data"]["publicPool"]["edges"] == []


# --- recycling: sweep, protection, warnings, two instances -------------------------------------------


async def test_sweep_recycles_the_due_ones_and_is_idempotent(
    gw: Gateway, systems: DemoSystems, db_url: str
) -> None:
    events: list[PoolEvent] = []
    gw.pool.on_pool_event(events.append)
    now = datetime.now(UTC)
    due = expected_due(systems, now, 90 * DAY, 14 * DAY)
    assert due, "the demo data has customers whose owner went quiet"
    owners = {a["account_no"]: a["owner_id"] for a in all_accounts(systems) if a["owner_id"]}

    first = await gw.pool.sweep(now=now)
    assert first.ran and set(first.recycled_accounts) == due
    assert first.recycled == len(due) and first.conflicts == 0 and first.errors == 0
    assert all(raw(systems, no)["owner_id"] is None for no in sorted(due)[:20])
    assert sorted(e.account_no for e in events if e.kind == "recycled") == sorted(due)
    assert {e.owner_id for e in events if e.kind == "recycled"} <= set(owners.values())

    # audited, and in the history
    database = keyed_database(db_url)
    try:
        sample = sorted(due)[0]
        page = await AuditLog(database).query(AuditFilter(customer_id=sample, kinds={"pool"}))
        [record] = page.records
        assert (record.user_sub, record.operation_type, record.before, record.after) == (
            "system:pool-sweep",
            "system",
            {"owner_id": owners[sample]},
            {"owner_id": None},
        )
        assert (await AuditLog(database).verify()).ok
    finally:
        await database.aclose()
    token = {"roles": ["data_steward"], "sub": "u-steward"}
    history = await gw.graph.query(HISTORY, {"id": customer_id(sample)}, **token)
    [node] = [e["node"] for e in history["data"]["poolHistory"]["edges"]]
    assert (node["kind"], node["ownerId"], node["actor"], node["recycleReason"]) == (
        "RECYCLE",
        owners[sample],
        "system:pool-sweep",
        "INACTIVE",
    )
    pool_view = await gw.graph.query(POOL, {"first": 100, "filter": {"search": None}}, **token)
    reasons = {
        e["node"]["customer"]["accountNo"]: e["node"]["reason"]
        for e in pool_view["data"]["publicPool"]["edges"]
    }
    assert {reasons[no] for no in due if no in reasons} == {"RECYCLED_INACTIVE"}

    # once more: nothing is due, nothing is announced twice
    warned = [e for e in events if e.kind == "recycle_warning"]
    events.clear()
    second = await gw.pool.sweep(now=now)
    assert (second.recycled, second.warned, second.conflicts) == (0, 0, 0)
    assert second.due_warnings == len(warned) and events == []


async def test_protection_period_after_a_claim(
    systems: DemoSystems, examples: DemoExamples, db_url: str
) -> None:
    # recycle as soon as the owner is quiet at all: only the protection period keeps the claim
    async with gateway(systems, db_url, CG_POOL_RECYCLE_AFTER_DAYS="0", CG_POOL_WARN_DAYS="0") as gw:
        claimed = await gw.graph.query(CLAIM, {"id": customer_id(examples.pool)}, **rep_token(examples.rep))
        recycle_at = at(claimed["data"]["claimCustomer"]["customer"]["recycleAt"])
        since = at(raw(systems, examples.pool)["owner_since"])
        assert recycle_at == since + 14 * DAY

        now = datetime.now(UTC)
        first = await gw.pool.sweep(now=now)
        assert first.recycled > 0 and examples.pool not in first.recycled_accounts
        assert raw(systems, examples.pool)["owner_id"] == examples.rep

        later = await gw.pool.sweep(now=since + 14 * DAY + timedelta(seconds=1))
        assert examples.pool in later.recycled_accounts
        assert raw(systems, examples.pool)["owner_id"] is None
        # the rep lost it: the cooldown applies to it now
        again = await gw.graph.query(CLAIM, {"id": customer_id(examples.pool)}, **rep_token(examples.rep))
        assert error(again)["reason"] == "COOLDOWN"


async def test_warning_before_recycling(gw: Gateway, systems: DemoSystems, examples: DemoExamples) -> None:
    query = """query($id: ID!) { customer(id: $id) { recycleAt } }"""
    [owned, *_] = [a["account_no"] for a in all_accounts(systems, owner_id=examples.rep)]
    result = await gw.graph.query(query, {"id": customer_id(owned)}, **rep_token(examples.rep))
    recycle_at = at(result["data"]["customer"]["recycleAt"])
    pool = await gw.graph.query(query, {"id": customer_id(examples.pool)}, **rep_token(examples.rep))
    assert pool["data"]["customer"]["recycleAt"] is None

    events: list[PoolEvent] = []
    gw.pool.on_pool_event(events.append)
    moment = recycle_at - 3 * DAY  # inside the 7 days' warning
    first = await gw.pool.sweep(now=moment)
    assert raw(systems, owned)["owner_id"] == examples.rep
    [warning] = [e for e in events if e.account_no == owned]
    assert (warning.kind, warning.owner_id, warning.recycle_at) == (
        "recycle_warning",
        examples.rep,
        recycle_at,
    )
    assert first.warned >= 1
    await gw.pool.sweep(now=moment + DAY)
    assert [e for e in events if e.account_no == owned] == [warning]  # announced once
    history = await gw.graph.query(HISTORY, {"id": customer_id(owned)}, **rep_token(examples.rep))
    [node] = [e["node"] for e in history["data"]["poolHistory"]["edges"]]
    assert (node["kind"], node["ownerId"], at(node["recycleAt"])) == ("WARNING", examples.rep, recycle_at)


async def test_two_gateway_instances_sweep_once_sqlite(systems: DemoSystems, db_url: str) -> None:
    await _two_instances(systems, db_url)


@pytest.mark.services
async def test_two_gateway_instances_sweep_once_postgresql(systems: DemoSystems) -> None:
    url = pg_test_url()
    if not _reachable(url):
        where = make_url(url).render_as_string(hide_password=True)
        message = f"PostgreSQL not reachable at {where} (set CG_TEST_DATABASE_URL)"
        if services_required():
            pytest.fail(message + " and CG_REQUIRE_SERVICES=1", pytrace=False)
        pytest.skip(message)
    schema = f"cg_pool_{uuid.uuid4().hex[:12]}"
    try:
        await _two_instances(systems, f"{url}?schema={schema}")
    finally:
        admin = keyed_database(url)
        try:
            async with admin.engine.begin() as conn:
                await conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        finally:
            await admin.aclose()


async def _two_instances(systems: DemoSystems, url: str) -> None:
    now = datetime.now(UTC)
    due = expected_due(systems, now, 90 * DAY, 14 * DAY)
    async with gateway(systems, url) as one, gateway(systems, url) as two:
        await asyncio.gather(one.pool.ready(), two.pool.ready())
        results = await asyncio.gather(one.pool.sweep(now=now), two.pool.sweep(now=now))
        ran = [r for r in results if r.ran]
        skipped = [r for r in results if not r.ran]
        assert len(ran) == 1 and len(skipped) == 1, [r.summary() for r in results]
        assert skipped[0].skipped == "locked"
        assert set(ran[0].recycled_accounts) == due and ran[0].conflicts == 0
        # the lock is free again: the other instance's next pass runs, and finds nothing to do
        again = await two.pool.sweep(now=now)
        assert again.ran and again.recycled == 0
        database = keyed_database(url)
        try:
            async with database.engine.connect() as conn:
                count = (
                    await conn.execute(sa.text("SELECT count(*) FROM pool_history WHERE kind = 'recycle'"))
                ).scalar()
        finally:
            await database.aclose()
        assert count == len(due)


async def test_scheduled_sweep_runs_inside_the_gateway(systems: DemoSystems, db_url: str) -> None:
    async with gateway(systems, db_url) as gw:
        assert gw.pool._task is None  # CG_POOL_SWEEP_INTERVAL=0: off
    settings = settings_for(systems, CG_DATABASE_URL=db_url, CG_POOL_SWEEP_INTERVAL="0.2")
    app = create_app(settings)
    pool: PoolService = app.state.gateway.pool
    async with app.router.lifespan_context(app):
        assert pool._task is not None
        for _ in range(100):
            await asyncio.sleep(0.05)
            database = keyed_database(db_url)
            try:
                async with database.engine.connect() as conn:
                    done = (
                        await conn.execute(sa.text("SELECT last_finished_at FROM pool_sweeps"))
                    ).scalar_one_or_none()
            except Exception:
                done = None
            finally:
                await database.aclose()
            if done is not None:
                break
        assert done is not None
    assert pool._task is None  # cancelled on shutdown


# --- dormant customers ------------------------------------------------------------------------------------


async def test_dormant_filter_for_a_manager(
    gw: Gateway, systems: DemoSystems, examples: DemoExamples
) -> None:
    region = raw(systems, examples.dormant)["region"]
    manager = {"roles": ["sales_manager"], "sub": examples.manager, "region": region}
    everyone = """query($after: String) { customers(first: 100, after: $after) {
      pageInfo { hasNextPage endCursor } edges { node { accountNo dormant } } } }"""
    truth: dict[str, bool] = {}
    after = None
    while True:
        body = await gw.graph.query(everyone, {"after": after}, **manager)
        part = body["data"]["customers"]
        truth.update({e["node"]["accountNo"]: e["node"]["dormant"] for e in part["edges"]})
        if not part["pageInfo"]["hasNextPage"]:
            break
        after = part["pageInfo"]["endCursor"]

    query = """query($after: String, $dormant: Boolean) { customers(first: 7, after: $after, filter: {dormant: $dormant}) {
      totalCount pageInfo { hasNextPage endCursor } edges { node { accountNo dormant lastContactAt region } } } }"""
    for dormant in (True, False):
        found: list[str] = []
        after = None
        while True:
            body = await gw.graph.query(query, {"after": after, "dormant": dormant}, **manager)
            assert "errors" not in body, body
            part = body["data"]["customers"]
            assert part["totalCount"] is None  # decided by the gateway while scanning
            for edge in part["edges"]:
                node = edge["node"]
                assert node["dormant"] is dormant and node["region"] == region.upper()
                if dormant and node["lastContactAt"]:
                    assert at(node["lastContactAt"]) < datetime.now(UTC) - 365 * DAY
                found.append(node["accountNo"])
            if not part["pageInfo"]["hasNextPage"]:
                break
            after = part["pageInfo"]["endCursor"]
        assert found == sorted(no for no, flag in truth.items() if flag is dormant)
    assert examples.dormant in [no for no, flag in truth.items() if flag]


async def test_recycle_dormant_by_region(gw: Gateway, systems: DemoSystems, examples: DemoExamples) -> None:
    region = raw(systems, examples.dormant)["region"]
    manager = {"roles": ["sales_manager"], "sub": examples.manager, "region": region}
    listing = """query($after: String) { customers(first: 100, after: $after, filter: {dormant: true, inPool: false}) {
      pageInfo { hasNextPage endCursor } edges { node { accountNo owner { userId } } } } }"""
    dormant_owned: dict[str, str] = {}
    after = None
    while True:
        body = await gw.graph.query(listing, {"after": after}, **manager)
        part = body["data"]["customers"]
        dormant_owned.update({e["node"]["accountNo"]: e["node"]["owner"]["userId"] for e in part["edges"]})
        if not part["pageInfo"]["hasNextPage"]:
            break
        after = part["pageInfo"]["endCursor"]
    assert dormant_owned

    mutation = """mutation($region: Region!, $after: String) { recycleDormant(region: $region, after: $after) {
      recycledCount conflictCount deniedCount scannedCount hasMore endCursor recycled { accountNo inPool } } }"""
    for role, sub, token_region in (
        ("sales_rep", examples.rep, None),
        ("sales_manager", examples.manager, "central" if region != "central" else "east"),
    ):
        refused = await gw.graph.query(
            mutation, {"region": region.upper()}, roles=[role], sub=sub, region=token_region
        )
        assert error(refused) == {"code": "FORBIDDEN", "reason": "POLICY"}

    result = await gw.graph.query(mutation, {"region": region.upper()}, **manager)
    assert "errors" not in result, result
    payload = result["data"]["recycleDormant"]
    assert payload["recycledCount"] == len(dormant_owned) and payload["conflictCount"] == 0
    assert (
        payload["scannedCount"] == len(all_accounts(systems, region=region)) and payload["hasMore"] is False
    )
    assert sorted(c["accountNo"] for c in payload["recycled"]) == sorted(dormant_owned)
    assert all(c["inPool"] for c in payload["recycled"])
    assert all(raw(systems, no)["owner_id"] is None for no in dormant_owned)

    sample = sorted(dormant_owned)[0]
    history = await gw.graph.query(HISTORY, {"id": customer_id(sample)}, **manager)
    [node] = [e["node"] for e in history["data"]["poolHistory"]["edges"]]
    assert (node["kind"], node["ownerId"], node["actor"], node["recycleReason"]) == (
        "RECYCLE",
        dormant_owned[sample],
        examples.manager,
        "DORMANT",
    )
    # the owner lost it: its cooldown applies
    lost = await gw.graph.query(CLAIM, {"id": customer_id(sample)}, **rep_token(dormant_owned[sample]))
    assert error(lost)["reason"] == "COOLDOWN"
    # nothing left to do in that region; a data steward may do it anywhere
    again = await gw.graph.query(
        mutation, {"region": region.upper()}, roles=["data_steward"], sub="u-steward"
    )
    assert again["data"]["recycleDormant"]["recycledCount"] == 0


async def test_cli_runs_one_sweep(
    systems: DemoSystems, db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.cli import main

    environ = {
        "CG_SALES_URL": systems.sales_url,
        "CG_SALES_API_KEY": systems.sales_api_key,
        "CG_JWT_SECRET": "cli-test-secret",
        "CG_DATABASE_URL": db_url,
    }
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    due = expected_due(systems, datetime.now(UTC), 90 * DAY, 14 * DAY)

    assert await asyncio.to_thread(main, ["pool", "sweep", "--dry-run"]) == 0
    dry = capsys.readouterr().out
    total = httpx.get(  # the generated customers and the duplicates planted after them
        systems.sales_url + "/api/v1/accounts", headers=systems.auth_headers("sales")
    ).json()["meta"]["total"]
    assert f"would recycle {len(due)};" in dry and f"{total} customers scanned" in dry
    assert all(raw(systems, no)["owner_id"] is not None for no in sorted(due)[:5])

    assert await asyncio.to_thread(main, ["pool", "sweep"]) == 0
    done = capsys.readouterr().out
    assert f"recycled {len(due)};" in done
    assert "A1" not in done  # counts only, no customers
    assert await asyncio.to_thread(main, ["pool", "sweep"]) == 0
    assert "recycled 0;" in capsys.readouterr().out
