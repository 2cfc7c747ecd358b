"""Live updates without the demo systems: webhook receivers (signatures, bodies, deduplication), the
publisher (eviction, restarts), the bus (slow subscribers, Redis between instances), the register's
poller, the e-mail/tax-id resolution, and the demo systems' webhook sender."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import httpx
import orjson
import pytest
from starlette.applications import Starlette

from connectors.errors import UpstreamUnavailable
from connectors.models import Account, AccountPage, Contract, Money, System
from demo.webhooks import WebhookSender
from demo.webhooks import sign as demo_sign
from features.store import Database
from gateway.app import Gateway, create_app
from gateway.events import ChangeEvent, EventBus
from gateway.events.inbox import Inbox
from gateway.events.poller import ContractsPoller
from gateway.events.receiver import MAX_BODY, signature, verify
from gateway.events.resolve import AccountResolver
from gateway.settings import load_settings
from tests.factories import data_keyring

from .services import need_redis

SECRET = "webhook-tests-jwt-secret-0123456789"
SALES_SECRET = "sales-webhook-secret-for-tests"
SUPPORT_SECRET = "support-webhook-secret-for-tests"
CLOSED = "http://127.0.0.1:9"


def settings(tmp_path: Path, **env: str) -> Any:
    environ = {
        "CG_JWT_SECRET": SECRET,
        "CG_SALES_URL": CLOSED,
        "CG_SUPPORT_URL": CLOSED,
        "CG_CONTRACTS_URL": CLOSED,
        "CG_CACHE": "false",
        "CG_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/gateway.db",
        "CG_SALES_WEBHOOK_SECRET": SALES_SECRET,
        "CG_SUPPORT_WEBHOOK_SECRET": SUPPORT_SECRET,
        "CG_CONTRACTS_POLL_INTERVAL": "0",
        "CG_RETRY_ATTEMPTS": "1",
        **env,
    }
    return load_settings(environ=environ)


@dataclass
class Running:
    app: Starlette
    client: httpx.AsyncClient

    @property
    def gateway(self) -> Gateway:
        gateway: Gateway = self.app.state.gateway
        return gateway

    @property
    def inbox(self) -> Inbox:
        assert self.gateway.live.inbox is not None
        return self.gateway.live.inbox


@contextlib.asynccontextmanager
async def running(app: Starlette) -> AsyncIterator[Running]:
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
    ):
        yield Running(app, client)


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Running]:
    async with running(create_app(settings(tmp_path))) as started:
        yield started


def sales_body(event_id: str = "ev_0001", account_no: str = "A100001", **extra: Any) -> bytes:
    event = {
        "event_id": event_id,
        "type": "account.updated",
        "account_no": account_no,
        "occurred_at": "2025-03-02T08:15:00Z",
        **extra,
    }
    return orjson.dumps(event)


def support_body(event_id: str = "evt-0001", email: str = "Wang.Fang@Chengchuan.cn") -> bytes:
    return orjson.dumps(
        {
            "id": event_id,
            "kind": "ticket.created",
            "ticket_id": 88123,
            "requester_email": email,
            "at": 1717003600,
        }
    )


async def post_sales(client: httpx.AsyncClient, body: bytes, sig: str | None = None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    headers["X-Sales-Signature"] = sig if sig is not None else signature("sales", SALES_SECRET, body)
    return await client.post("/hooks/sales", content=body, headers=headers)


async def post_support(client: httpx.AsyncClient, body: bytes, sig: str | None = None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    headers["X-Helpdesk-Signature"] = sig if sig is not None else signature("support", SUPPORT_SECRET, body)
    return await client.post("/hooks/support", content=body, headers=headers)


async def next_change(subscriber: Any, timeout: float = 2.0) -> ChangeEvent:
    change: ChangeEvent = await asyncio.wait_for(anext(subscriber), timeout)
    return change


async def nothing_more(subscriber: Any, wait: float = 0.3) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(subscriber), wait)


# --- signatures ---------------------------------------------------------------------------------


def test_signature_conventions_match_the_demo_systems() -> None:
    body = sales_body()
    assert signature("sales", "k", body) == demo_sign("sales", "k", body)
    assert signature("sales", "k", body).startswith("sha256=")
    assert signature("support", "k", body) == demo_sign("support", "k", body)
    assert len(signature("support", "k", body)) == 64
    assert verify("sales", "k", body, signature("sales", "k", body).upper().replace("SHA256=", "sha256="))
    assert not verify("sales", "k", body, "sha256=" + "0" * 64)
    assert not verify("support", "k", body, "ünïcode")


@pytest.mark.parametrize(
    "sig",
    [
        "",  # missing
        "sha256=" + "0" * 64,  # wrong
        signature("support", SALES_SECRET, sales_body()),  # right digest, no prefix
        signature("sales", "another-secret", sales_body()),  # another key
        signature("sales", SALES_SECRET, sales_body("ev_other")),  # another body
    ],
)
async def test_bad_sales_signature_is_401_and_nothing_is_stored(gw: Running, sig: str) -> None:
    response = await post_sales(gw.client, sales_body(), sig)
    assert response.status_code == 401
    assert "signature" in response.json()["error"]
    assert await gw.inbox.count() == 0


async def test_bad_support_signature_is_401(gw: Running) -> None:
    body = support_body()
    prefixed = "sha256=" + signature("support", SUPPORT_SECRET, body)  # the sales convention
    for sig in ("", prefixed, signature("support", SALES_SECRET, body)):
        assert (await post_support(gw.client, body, sig)).status_code == 401
    response = await gw.client.post("/hooks/support", content=body)  # no header at all
    assert response.status_code == 401
    assert await gw.inbox.count() == 0


async def test_unconfigured_source_is_404(tmp_path: Path) -> None:
    async with running(create_app(settings(tmp_path, CG_SUPPORT_WEBHOOK_SECRET=""))) as started:
        body = support_body()
        assert (await post_support(started.client, body)).status_code == 404
        assert (await post_sales(started.client, sales_body())).status_code == 202


# --- bodies -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        orjson.dumps({"event_id": "ev_1", "type": "account.updated"}),  # no account_no
        sales_body(occurred_at="yesterday"),
        sales_body(account_no="A1; DROP TABLE"),
        sales_body(event_id=""),
    ],
)
async def test_bad_body_is_400(gw: Running, body: bytes) -> None:
    response = await post_sales(gw.client, body)
    assert response.status_code == 400, response.text
    assert await gw.inbox.count() == 0


async def test_huge_body_is_413(gw: Running) -> None:
    body = sales_body(padding="x" * (MAX_BODY + 1))
    assert (await post_sales(gw.client, body)).status_code == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        for _ in range(MAX_BODY // 1024 + 2):
            yield b" " * 1024

    headers = {"X-Sales-Signature": "sha256=" + "0" * 64}
    response = await gw.client.post("/hooks/sales", content=chunks(), headers=headers)
    assert response.status_code == 413


# --- accepted, deduplicated, published ----------------------------------------------------------


async def test_accepted_event_is_published_once_and_duplicates_are_acked(gw: Running) -> None:
    async with gw.gateway.live.bus.subscribe() as subscriber:
        body = sales_body("ev_dup")
        first = await post_sales(gw.client, body)
        assert first.status_code == 202 and first.json() == {"status": "accepted", "event_id": "ev_dup"}
        change = await next_change(subscriber)
        assert (change.event_id, change.system, change.type, change.account_no) == (
            "ev_dup",
            "sales",
            "account.updated",
            "A100001",
        )
        assert change.at == datetime(2025, 3, 2, 8, 15, tzinfo=UTC)
        for _ in range(3):  # the system delivers it again (at least once)
            again = await post_sales(gw.client, body)
            assert again.status_code == 200 and again.json()["status"] == "duplicate"
        await nothing_more(subscriber)
    assert await gw.inbox.count() == 1
    stored = await gw.inbox.get("sales", "ev_dup")
    assert stored is not None and stored.published_at is not None


async def test_events_are_published_in_order(gw: Running) -> None:
    async with gw.gateway.live.bus.subscribe() as subscriber:
        for n in range(5):
            assert (await post_sales(gw.client, sales_body(f"ev_{n}"))).status_code == 202
        assert [(await next_change(subscriber)).event_id for _ in range(5)] == [f"ev_{n}" for n in range(5)]


async def test_an_event_evicts_what_it_names(tmp_path: Path) -> None:
    async with running(create_app(settings(tmp_path, CG_CACHE="true"))) as started:
        cache = started.gateway.cache
        assert cache is not None

        async def fetch(keys: list[str]) -> dict[str, str]:
            return {key: f"cached {key}" for key in keys}

        await cache.wrap("account", fetch)(["A100001", "A100002"])
        await cache.wrap("tickets", fetch)(["wang.fang@chengchuan.cn"])
        async with started.gateway.live.bus.subscribe() as subscriber:
            await post_sales(started.client, sales_body(account_no="A100001"))
            await next_change(subscriber)
        assert cache.peek("account", "A100001") is None
        assert cache.peek("account", "A100002") == "cached A100002"
        # a support event evicts the requester's tickets even while its customers cannot be resolved
        await post_support(started.client, support_body())
        started.gateway.live.resolver._by_email["wang.fang@chengchuan.cn"] = ()
        started.gateway.live.wake()
        for _ in range(100):
            if cache.peek("tickets", "wang.fang@chengchuan.cn") is None:
                break
            await asyncio.sleep(0.02)
        assert cache.peek("tickets", "wang.fang@chengchuan.cn") is None


async def test_unknown_type_is_accepted_and_not_published(gw: Running) -> None:
    async with gw.gateway.live.bus.subscribe() as subscriber:
        body = orjson.dumps({"event_id": "ev_new", "type": "invoice.created", "account_no": "A100001"})
        assert (await post_sales(gw.client, body)).status_code == 202
        await nothing_more(subscriber)
    stored = await gw.inbox.get("sales", "ev_new")
    assert stored is not None and stored.published_at is not None


async def test_support_event_waits_while_its_customers_cannot_be_resolved(gw: Running) -> None:
    """The sales system (closed port here) cannot say whose e-mail it is: the event stays in the inbox."""
    async with gw.gateway.live.bus.subscribe() as subscriber:
        response = await post_support(gw.client, support_body("evt-wait"))
        assert response.status_code == 202
        await nothing_more(subscriber, 0.5)
        stored = await gw.inbox.get("support", "evt-wait")
        assert stored is not None and stored.published_at is None
        assert stored.event.email == "wang.fang@chengchuan.cn"
        # once it can be resolved (as if the sales system were back), it is published
        gw.gateway.live.resolver._by_email["wang.fang@chengchuan.cn"] = ("A100001", "A100007")
        gw.gateway.live.wake()
        changes = [await next_change(subscriber, 5.0), await next_change(subscriber, 5.0)]
        assert {c.account_no for c in changes} == {"A100001", "A100007"}
        assert {c.event_id for c in changes} == {"evt-wait"}
        assert {c.type for c in changes} == {"ticket.created"}


async def test_no_event_is_lost_when_the_gateway_stops_before_publishing(tmp_path: Path) -> None:
    config = settings(tmp_path)
    async with running(create_app(config)) as first:
        publisher = first.gateway.live.publisher
        assert publisher is not None
        await publisher.stop()  # the gateway accepts, then stops before it publishes
        for n in range(3):
            assert (await post_sales(first.client, sales_body(f"ev_r{n}"))).status_code == 202
        assert await first.inbox.count(published=False) == 3

    second = create_app(config)  # a new process on the same database
    async with second.state.gateway.live.bus.subscribe() as subscriber, running(second) as started:
        ids = [(await next_change(subscriber)).event_id for _ in range(3)]
        assert ids == ["ev_r0", "ev_r1", "ev_r2"]
        for _ in range(50):  # marked in the same transaction, just after publishing
            if await started.inbox.count(published=False) == 0:
                break
            await asyncio.sleep(0.02)
        assert await started.inbox.count(published=False) == 0
        # a redelivery after the restart is still recognised
        assert (await post_sales(started.client, sales_body("ev_r1"))).status_code == 200
        await nothing_more(subscriber)


async def test_store_down_is_503_so_the_system_retries(gw: Running) -> None:
    inbox = gw.inbox
    await inbox.database.aclose()
    inbox.database = Database("sqlite+aiosqlite:////nonexistent-dir/none/gateway.db")
    response = await post_sales(gw.client, sales_body("ev_down"))
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"


# --- the bus ------------------------------------------------------------------------------------


def change(n: int, account_no: str = "A1") -> ChangeEvent:
    return ChangeEvent(f"ev_{n}", "sales", "account.updated", account_no, datetime(2025, 1, 1, tzinfo=UTC))


async def test_slow_subscriber_loses_the_oldest_and_is_told() -> None:
    bus = EventBus(queue_size=3)
    async with bus.subscribe() as slow, bus.subscribe(frozenset({"A2"})) as picky:
        for n in range(5):
            await bus.publish([change(n, "A1" if n != 4 else "A2")])
        missed = await next_change(slow)
        assert missed.type == "gateway.missed" and missed.account_no is None
        assert [(await next_change(slow)).event_id for _ in range(3)] == ["ev_2", "ev_3", "ev_4"]
        assert slow.dropped == 2
        assert (await next_change(picky)).event_id == "ev_4"  # only its customer, nothing dropped
        await nothing_more(picky, 0.05)
    assert bus.subscribers == 0


@pytest.mark.services
async def test_redis_carries_changes_to_every_instance() -> None:
    url = need_redis()
    one, two = EventBus(), EventBus()
    evicted: list[str] = []
    await one.connect(url)
    await two.connect(url, on_remote=lambda c: evicted.append(c.account_no or ""))
    try:
        async with one.subscribe() as here, two.subscribe() as there:
            await one.publish([change(1, "A100001")])
            assert (await next_change(here)).event_id == "ev_1"
            remote = await next_change(there)
            assert remote == change(1, "A100001")
            assert evicted == ["A100001"]  # the other instance's cache first
            await nothing_more(here, 0.2)  # its own message is not delivered twice
    finally:
        await one.aclose()
        await two.aclose()


# --- the register's poller ----------------------------------------------------------------------


def contract(
    contract_id: str, updated_on: date, status: str = "active", confidential: bool = False
) -> Contract:
    return Contract(
        contract_id=contract_id,
        party_tax_id="91310115MA1K4Q2X3L",
        party_name="上海澄川科技有限公司",
        type="sales",
        status=status,
        signed_on=date(2024, 1, 15),
        starts_on=date(2024, 2, 1),
        ends_on=None,
        auto_renew=False,
        value=Money(Decimal("125000.00"), "CNY"),
        payment_terms="NET30",
        confidential=confidential,
        updated_on=updated_on,
    )


@dataclass
class FakeRegister:
    contracts: list[Contract] = field(default_factory=list)
    asked: list[date] = field(default_factory=list)

    async def updated_since(self, day: date) -> list[Contract]:
        self.asked.append(day)
        return [c for c in self.contracts if c.updated_on >= day]


async def test_poller_baseline_then_changes_once(tmp_path: Path) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path}/poll.db", keyring=data_keyring())
    await database.migrate()
    try:
        inbox = Inbox(database)
        today = date(2025, 3, 2)
        register = FakeRegister([contract("HT-1", today)])
        woken: list[int] = []
        poller = ContractsPoller(inbox, lambda: register, interval=60, on_new=lambda: woken.append(1))  # type: ignore[arg-type,return-value]
        poller.today = lambda: today
        assert await poller.poll_once() == 0  # the first poll is the baseline: nothing is news
        assert register.asked == [date(2025, 3, 1)]
        assert await inbox.count("contracts", published=True) == 1
        assert await poller.poll_once() == 0 and not woken  # nothing changed

        register.contracts = [contract("HT-1", today, status="terminated"), contract("HT-2", today)]
        assert await poller.poll_once() == 2  # a second change of HT-1 on the same day is news
        assert woken == [1]
        pending = await inbox.pending()
        assert {row.event.detail["contract_id"] for row in pending} == {"HT-1", "HT-2"}
        assert all(row.event.tax_id == "91310115MA1K4Q2X3L" for row in pending)

        restarted = ContractsPoller(inbox, lambda: register, interval=60)  # type: ignore[arg-type,return-value]
        restarted.today = lambda: today
        assert await restarted.poll_once() == 0  # the inbox knows them: no repeats after a restart
    finally:
        await database.aclose()


# --- which customers an event names -------------------------------------------------------------


def account(account_no: str, email: str | None, tax_id: str | None, name: str = "Chengchuan") -> Account:
    moment = datetime(2025, 1, 1, tzinfo=UTC)
    return Account(
        account_no, "company", name, None, None, email, None, None, tax_id, "east", "customer",
        None, None, moment, moment, moment, 1,
    )  # fmt: skip


@dataclass
class FakeSales:
    accounts: list[Account]
    queries: list[str] = field(default_factory=list)
    down: bool = False

    async def list_accounts(self, *, q: str, page: int, per_page: int) -> AccountPage:
        self.queries.append(q)
        if self.down:
            raise UpstreamUnavailable(System.SALES, "timeout")
        found = [a for a in self.accounts if q.casefold() in f"{a.name} {a.email or ''}".casefold()]
        return AccountPage(found[(page - 1) * per_page : page * per_page], page, per_page, len(found))


async def test_resolver_finds_exact_matches_and_remembers() -> None:
    sales = FakeSales(
        [
            account("A1", "wang.fang@chengchuan.cn", "T1"),
            account("A2", "wang.fang@chengchuan.cn", None),
            account("A3", "xwang.fang@chengchuan.cn", "T1", name="Chengchuan Holdings"),
            account("A4", "li@other.cn", "T2", name="Other"),
        ]
    )
    resolver = AccountResolver(lambda: sales)  # type: ignore[arg-type,return-value]
    assert await resolver.by_email("Wang.Fang@chengchuan.cn") == ("A1", "A2")
    assert await resolver.by_email("wang.fang@chengchuan.cn") == ("A1", "A2")
    assert sales.queries == ["wang.fang@chengchuan.cn"]  # remembered
    assert await resolver.by_tax_id("T1", "Chengchuan") == ("A1", "A3")
    assert await resolver.by_tax_id("T9", None) == ()
    resolver.forget("A2")  # its account changed: ask again
    await resolver.by_email("wang.fang@chengchuan.cn")
    assert sales.queries.count("wang.fang@chengchuan.cn") == 2
    sales.down = True
    with pytest.raises(UpstreamUnavailable):
        await resolver.by_email("new@chengchuan.cn")


# --- the demo systems' sender -------------------------------------------------------------------


class _Recorder(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []
    fail_first: ClassVar[int] = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        failing = type(self).fail_first > 0
        type(self).fail_first -= 1
        self.send_response(500 if failing else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[str]:
    _Recorder.received = []
    _Recorder.fail_first = 2
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/sales"
    finally:
        server.shutdown()
        server.server_close()


def test_demo_sender_signs_retries_and_keeps_order(recorder: str) -> None:
    sender = WebhookSender("sales", recorder, "s3cret", first_backoff=0.01).start()
    try:
        started = time.monotonic()
        for n in range(3):
            sender({"event_id": f"ev_{n}", "type": "account.updated", "account_no": "A1", "occurred_at": "x"})
        assert time.monotonic() - started < 0.05  # the API's answer never waits for delivery
        deadline = time.monotonic() + 5
        while sender.delivered < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        sender.stop()
    assert sender.delivered == 3 and sender.attempts_failed == 2 and sender.dropped == 0
    bodies = [json.loads(body)["event_id"] for _, body in _Recorder.received]
    assert bodies == ["ev_0", "ev_0", "ev_0", "ev_1", "ev_2"]  # retried until accepted, then the next
    for headers, body in _Recorder.received:
        assert verify("sales", "s3cret", body, headers["x-sales-signature"])


def test_demo_sender_stops_with_undelivered_events_counted() -> None:
    sender = WebhookSender("support", CLOSED + "/hooks/support", "s", first_backoff=0.01, flush_timeout=0.2)
    sender.start()
    sender({"id": "evt-1"})
    sender({"id": "evt-2"})
    sender.stop()
    assert sender.delivered == 0 and sender.dropped == 2


async def test_the_pools_recycle_warning_is_published(gw: Running) -> None:
    from features.pool.rules import PoolEvent

    at = datetime(2025, 3, 2, 8, 0, tzinfo=UTC)
    warning = PoolEvent("recycle_warning", "A100001", "u-1021", "system:pool-sweep", at, recycle_at=at)
    claimed = PoolEvent("claimed", "A100002", "u-1021", "u-1021", at)  # the sales webhook announces it
    async with gw.gateway.live.bus.subscribe() as subscriber:
        await gw.gateway.live.pool_event(claimed)
        await gw.gateway.live.pool_event(warning)
        await gw.gateway.live.pool_event(warning)  # a sweep run again: once
        change = await next_change(subscriber)
        assert (change.system, change.type, change.account_no) == ("pool", "pool.recycle_warning", "A100001")
        await nothing_more(subscriber)


@pytest.mark.services
async def test_an_event_accepted_by_one_gateway_reaches_another(tmp_path: Path) -> None:
    url = need_redis()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = create_app(settings(tmp_path / "a", CG_REDIS_URL=url, CG_CACHE="true"))
    two = create_app(settings(tmp_path / "b", CG_REDIS_URL=url, CG_CACHE="true"))
    async with running(one) as a, running(two) as b:
        cache = b.gateway.cache
        assert cache is not None

        async def fetch(keys: list[str]) -> dict[str, str]:
            return {key: "stale" for key in keys}

        await cache.wrap("account", fetch)(["A100009"])
        async with b.gateway.live.bus.subscribe() as there:
            assert (await post_sales(a.client, sales_body("ev_across", "A100009"))).status_code == 202
            change = await next_change(there)
            assert (change.event_id, change.account_no) == ("ev_across", "A100009")
            assert cache.peek("account", "A100009") is None  # evicted on B before its subscribers load it


def test_live_settings_are_checked() -> None:
    from gateway.settings import SettingsError

    base = {"CG_JWT_SECRET": SECRET}
    assert load_settings(environ=base).contracts_poll_interval == 60.0
    with pytest.raises(SettingsError, match="live_queue_size"):
        load_settings(environ={**base, "CG_LIVE_QUEUE_SIZE": "0"})
    with pytest.raises(SettingsError, match="contracts_poll_interval"):
        load_settings(environ={**base, "CG_CONTRACTS_POLL_INTERVAL": "-1"})
