import asyncio
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from connectors import (
    SalesConnector,
    UpstreamConflict,
    UpstreamInvalid,
    UpstreamNotFound,
    UpstreamUnavailable,
)
from connectors.models import Account, Money, System
from tests.connectors.fakes import Handler, Recorder, answer, body, raw_account

BASE_URL = "http://sales.internal:8001"
API_KEY = "sk-sales-7f3a9c"


def sales(handler: Handler, **options: Any) -> tuple[SalesConnector, Recorder]:
    recorder = Recorder(handler)
    return SalesConnector(BASE_URL, API_KEY, transport=recorder.transport, **options), recorder


def error(status: int, code: str, **extra: object) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": "王芳 wang@x.cn", **extra}})


def ids_of(request: httpx.Request, name: str) -> list[str]:
    return request.url.params[name].split(",")


async def test_account_maps_every_field() -> None:
    connector, recorder = sales(lambda request: httpx.Response(200, json=raw_account()))
    async with connector:
        account = await connector.account("A100234")

    assert recorder.last.url.path == "/api/v1/accounts/A100234"
    assert recorder.last.headers["X-Api-Key"] == API_KEY
    assert account == Account(
        account_no="A100234",
        kind="company",
        name="上海澄川科技有限公司",
        contact_name="王芳",
        title="采购经理",
        email="wang.fang@chengchuan.cn",
        phone="+8613812345678",
        address="上海市浦东新区张江路 88 号",
        tax_id="91310115MA1K4Q2X3L",
        region="east",
        status="customer",
        owner_id="u-1021",
        owner_since=datetime(2025, 1, 10, 2, 0, tzinfo=UTC),
        pool_since=None,
        created_at=datetime(2023, 11, 2, 3, 4, 5, tzinfo=UTC),
        updated_at=datetime(2025, 6, 1, 10, 0, tzinfo=UTC),
        version=7,
    )


async def test_person_in_pool_maps_nulls() -> None:
    raw = raw_account(
        kind="person",
        contact_name=None,
        title=None,
        email=None,
        phone="021-5888 1234",
        tax_id=None,
        owner_id=None,
        owner_since=None,
        pool_since="2025-02-01T00:00:00Z",
    )
    connector, _ = sales(lambda request: httpx.Response(200, json=raw))
    async with connector:
        account = await connector.account("A100234")
    assert (account.kind, account.tax_id, account.email, account.owner_id) == ("person", None, None, None)
    assert account.phone == "+862158881234"
    assert account.pool_since == datetime(2025, 2, 1, tzinfo=UTC)


async def test_unknown_account_is_not_found() -> None:
    connector, _ = sales(lambda request: error(404, "not_found"))
    async with connector:
        with pytest.raises(UpstreamNotFound) as caught:
            await connector.account("A999999")
    assert caught.value.system is System.SALES


async def test_account_number_cannot_escape_its_path() -> None:
    connector, recorder = sales(lambda request: httpx.Response(200, json=raw_account()))
    async with connector:
        await connector.account("A1/../../admin?x=1")
    assert recorder.last.url.path.startswith("/api/v1/accounts/")
    assert "x" not in recorder.last.url.params


async def test_batch_of_250_goes_out_as_three_calls_of_at_most_100() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        ids = ids_of(request, "ids")
        return httpx.Response(200, json={"data": [raw_account(no) for no in ids if not no.startswith("X")]})

    asked = [f"A{n:06d}" for n in range(245)] + ["X1", "X2", "X3", "X4", "X5"]
    connector, recorder = sales(handler)
    async with connector:
        found = await connector.accounts([*asked, asked[0]])

    sent = [ids_of(request, "ids") for request in recorder.requests]
    assert len(sent) == 3
    assert all(len(ids) <= 100 for ids in sent)
    assert sorted(no for ids in sent for no in ids) == sorted(asked)  # each asked once
    assert list(found) == asked[:245]  # unknown ones simply absent
    assert found["A000007"].account_no == "A000007"


async def test_empty_batch_makes_no_call() -> None:
    connector, recorder = sales(lambda request: httpx.Response(500))
    async with connector:
        assert await connector.accounts([]) == {}
        assert await connector.orders([]) == {}
    assert recorder.requests == []


async def test_list_accounts_sends_filters_and_reads_meta() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        page = {"page": 2, "per_page": 2, "total": 1234}
        return httpx.Response(200, json={"data": [raw_account("A1"), raw_account("A2")], "meta": page})

    connector, recorder = sales(handler)
    async with connector:
        page = await connector.list_accounts(
            page=2,
            per_page=2,
            region="east",
            status="customer",
            unowned=True,
            q="澄川",
            updated_since=datetime(2025, 3, 2, 8, 15, tzinfo=UTC),
        )

    assert dict(recorder.last.url.params) == {
        "page": "2",
        "per_page": "2",
        "region": "east",
        "status": "customer",
        "unowned": "true",
        "q": "澄川",
        "updated_since": "2025-03-02T08:15:00Z",
    }
    assert [a.account_no for a in page.accounts] == ["A1", "A2"]
    assert (page.page, page.per_page, page.total) == (2, 2, 1234)


async def test_list_accounts_sends_only_what_is_given() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"data": [], "meta": {"page": 1, "per_page": 50, "total": 0}})

    connector, recorder = sales(handler)
    async with connector:
        page = await connector.list_accounts(page=1, per_page=50, owner_id="u-1021")
    assert dict(recorder.last.url.params) == {"page": "1", "per_page": "50", "owner_id": "u-1021"}
    assert page.accounts == []


async def test_orders_map_money_and_keep_order_per_account() -> None:
    def order(no: str, account_no: str, at: str) -> dict[str, object]:
        items = [{"sku": "SKU-1", "name": "服务器", "qty": 2, "unit_price_cents": 649950}]
        return {
            "order_no": no,
            "account_no": account_no,
            "ordered_at": at,
            "status": "paid",
            "currency": "CNY",
            "total_cents": 1299900,
            "items": items,
        }

    def handler(request: httpx.Request) -> httpx.Response:
        data = [
            order("O3", "A1", "2025-03-01T00:00:00Z"),
            order("O1", "A1", "2025-01-01T00:00:00Z"),
            order("O2", "A2", "2025-02-01T00:00:00Z"),
        ]
        return httpx.Response(200, json={"data": data})

    connector, recorder = sales(handler)
    async with connector:
        orders = await connector.orders(["A1", "A2", "A3"], since=datetime(2024, 1, 1, tzinfo=UTC))

    assert recorder.last.url.params["account_nos"] == "A1,A2,A3"
    assert recorder.last.url.params["since"] == "2024-01-01T00:00:00Z"
    assert [o.order_no for o in orders["A1"]] == ["O3", "O1"]
    assert [o.order_no for o in orders["A2"]] == ["O2"]
    assert orders["A3"] == []
    first = orders["A1"][0]
    assert first.ordered_at == datetime(2025, 3, 1, tzinfo=UTC)
    assert first.status == "paid"
    assert first.total == Money(Decimal("12999.00"), "CNY")
    assert first.items[0].unit_price == Money(Decimal("6499.50"), "CNY")
    assert (first.items[0].sku, first.items[0].name, first.items[0].qty) == ("SKU-1", "服务器", 2)


async def test_histories_are_chunked_by_100_account_numbers() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        data = [
            {
                "activity_id": f"AC{no}",
                "account_no": no,
                "type": "wechat",
                "occurred_at": "2025-03-02T08:15:00Z",
                "subject": "回访",
                "notes": None,
                "by_user": "u-1021",
            }
            for no in ids_of(request, "account_nos")
        ]
        return httpx.Response(200, json={"data": data})

    asked = [f"A{n}" for n in range(250)]
    connector, recorder = sales(handler)
    async with connector:
        activities = await connector.activities(asked)

    assert [len(ids_of(r, "account_nos")) for r in recorder.requests] == [100, 100, 50]
    assert all("since" not in r.url.params for r in recorder.requests)
    assert list(activities) == asked
    assert activities["A249"][0].activity_id == "ACA249"
    assert activities["A249"][0].occurred_at == datetime(2025, 3, 2, 8, 15, tzinfo=UTC)


async def test_payments_opportunities_and_users_map() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/api/v1/payments":
            payment = {
                "payment_id": "P88001",
                "account_no": "A1",
                "order_no": None,
                "paid_at": "2025-03-02T08:15:00Z",
                "amount_cents": 100,
                "currency": "CNY",
                "method": "wechat_pay",
                "card_last4": None,
                "bank_account": "6222 **** **** 1234",
                "invoice_no": None,
            }
            return httpx.Response(200, json={"data": [payment]})
        if path == "/api/v1/opportunities":
            opportunity = {
                "opportunity_id": "OP1",
                "account_no": "A1",
                "title": "扩容",
                "stage": "negotiate",
                "amount_cents": 50000000,
                "currency": "CNY",
                "expected_close": "2025-09-30T00:00:00Z",
                "updated_at": "2025-06-01T10:00:00Z",
            }
            return httpx.Response(200, json={"data": [opportunity]})
        user = {
            "user_id": "u-1021",
            "name": "李雷",
            "email": "Li.Lei@Corp.cn",
            "region": "east",
            "role": "rep",
        }
        return httpx.Response(200, json={"data": [user]})

    connector, _ = sales(handler)
    async with connector:
        payments = await connector.payments(["A1"])
        opportunities = await connector.opportunities(["A1"])
        users = await connector.users(["u-1021", "u-404"])

    payment = payments["A1"][0]
    assert (payment.method, payment.order_no, payment.bank_account) == (
        "wechat_pay",
        None,
        "6222 **** **** 1234",
    )
    assert payment.amount == Money(Decimal("1.00"), "CNY")
    opportunity = opportunities["A1"][0]
    assert opportunity.stage == "negotiate"
    assert opportunity.amount == Money(Decimal("500000.00"), "CNY")
    assert opportunity.expected_close == datetime(2025, 9, 30, tzinfo=UTC)
    assert list(users) == ["u-1021"]
    assert users["u-1021"].email == "li.lei@corp.cn"
    assert users["u-1021"].role == "rep"


async def test_update_account_sends_if_match_and_idempotency_key() -> None:
    connector, recorder = sales(
        lambda request: httpx.Response(200, json=raw_account(version=8, title="总监"))
    )
    async with connector:
        account = await connector.update_account(
            "A100234", {"title": "总监", "address": None}, version=7, idempotency_key="idem-1"
        )

    request = recorder.last
    assert (request.method, request.url.path) == ("PATCH", "/api/v1/accounts/A100234")
    assert request.headers["If-Match"] == '"7"'
    assert request.headers["Idempotency-Key"] == "idem-1"
    assert body(request) == {"title": "总监", "address": None}
    assert (account.version, account.title) == (8, "总监")


async def test_update_without_version_sends_no_if_match() -> None:
    connector, recorder = sales(lambda request: httpx.Response(200, json=raw_account()))
    async with connector:
        await connector.update_account("A100234", {"status": "churned"}, version=None, idempotency_key="k")
    assert "If-Match" not in recorder.last.headers


async def test_stale_version_is_a_conflict() -> None:
    connector, _ = sales(lambda request: error(412, "precondition_failed"))
    async with connector:
        with pytest.raises(UpstreamConflict):
            await connector.update_account("A100234", {"title": "x"}, version=6, idempotency_key="k")
        with pytest.raises(UpstreamConflict):
            await connector.set_owner("A100234", "u-1021", version=6)


async def test_409_is_a_conflict() -> None:
    connector, _ = sales(lambda request: error(409, "conflict"))
    async with connector:
        with pytest.raises(UpstreamConflict):
            await connector.set_owner("A100234", "u-1021", version=None)


async def test_refused_value_is_invalid_with_fields() -> None:
    connector, _ = sales(lambda request: error(422, "invalid", fields={"email": "not an e-mail address"}))
    async with connector:
        with pytest.raises(UpstreamInvalid) as caught:
            await connector.update_account("A100234", {"email": "nope"}, version=None, idempotency_key="k")
    assert caught.value.fields == {"email": "not an e-mail address"}
    assert "nope" not in str(caught.value)


async def test_bad_request_is_invalid() -> None:
    connector, _ = sales(lambda request: error(400, "bad_request"))
    async with connector:
        with pytest.raises(UpstreamInvalid) as caught:
            await connector.list_accounts(page=1, per_page=50, owner_id="u-1", unowned=True)
    assert caught.value.fields == {}


async def test_set_owner_puts_owner_or_null() -> None:
    connector, recorder = sales(lambda request: httpx.Response(200, json=raw_account(owner_id=None)))
    async with connector:
        account = await connector.set_owner("A100234", None, version=7)
    request = recorder.last
    assert (request.method, request.url.path) == ("PUT", "/api/v1/accounts/A100234/owner")
    assert body(request) == {"owner_id": None}
    assert request.headers["If-Match"] == '"7"'
    assert account.owner_id is None


async def test_create_activity_posts_utc_time_and_idempotency_key() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(201, json={"activity_id": "AC000123", **body(request)})

    connector, recorder = sales(handler)
    async with connector:
        activity = await connector.create_activity(
            "A100234",
            "visit",
            datetime.fromisoformat("2025-03-02T16:15:00+08:00"),
            "上门拜访",
            "带了样品",
            "u-1021",
            idempotency_key="idem-2",
        )
    request = recorder.last
    assert (request.method, request.url.path) == ("POST", "/api/v1/activities")
    assert request.headers["Idempotency-Key"] == "idem-2"
    assert body(request)["occurred_at"] == "2025-03-02T08:15:00Z"
    assert activity.activity_id == "AC000123"
    assert activity.type == "visit"
    assert activity.occurred_at == datetime(2025, 3, 2, 8, 15, tzinfo=UTC)


async def test_activity_for_unknown_account_is_invalid() -> None:
    connector, _ = sales(lambda request: error(422, "invalid", fields={"account_no": "unknown account"}))
    async with connector:
        with pytest.raises(UpstreamInvalid) as caught:
            await connector.create_activity(
                "A0", "call", datetime.now(UTC), "s", None, "u-1", idempotency_key="k"
            )
    assert caught.value.fields == {"account_no": "unknown account"}


@pytest.mark.parametrize(
    ("response", "kind"),
    [
        (error(401, "unauthorized"), "unauthorized"),
        (httpx.Response(403, text="forbidden"), "unauthorized"),
        (error(503, "unavailable"), "overloaded"),
        (httpx.Response(500, text="Traceback ... 王芳"), "error"),
        (httpx.Response(502), "error"),
        (httpx.Response(200, text="<html>王芳</html>"), "bad_response"),
        (httpx.Response(200, json={"data": [{"account_no": "A1"}]}), "bad_response"),
        (httpx.Response(200, json={"data": [raw_account(created_at="yesterday")]}), "bad_response"),
        (httpx.Response(302, headers={"Location": "/login"}), "bad_response"),
    ],
)
async def test_failures_are_unavailable_with_a_kind(response: httpx.Response, kind: str) -> None:
    connector, _ = sales(lambda request: response)
    async with connector:
        with pytest.raises(UpstreamUnavailable) as caught:
            await connector.accounts(["A1"])
    assert caught.value.kind == kind
    assert caught.value.system is System.SALES


def refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError(f"cannot connect to {request.url}")


async def stall(request: httpx.Request) -> httpx.Response:
    await asyncio.sleep(5)
    return httpx.Response(200, json={"data": []})


def read_timeout(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("read timed out")


@pytest.mark.parametrize(
    ("handler", "kind"), [(refuse, "unreachable"), (stall, "timeout"), (read_timeout, "timeout")]
)
async def test_unreachable_and_timeout(handler: Handler, kind: str) -> None:
    connector, _ = sales(handler, timeout=0.05)
    async with connector:
        started = time.monotonic()
        with pytest.raises(UpstreamUnavailable) as caught:
            await connector.accounts(["A1"])
        assert time.monotonic() - started < 1
    assert caught.value.kind == kind
    assert "sales.internal" not in str(caught.value)


async def test_no_url_secret_or_body_in_any_error() -> None:
    responses = [
        error(401, "unauthorized"),
        error(404, "not_found"),
        error(412, "precondition_failed"),
        error(422, "invalid", fields={"email": "bad"}),
        httpx.Response(500, text=f"boom {API_KEY} 王芳 wang@x.cn"),
        httpx.Response(200, text="王芳 wang@x.cn"),
    ]
    for response in responses:
        connector, _ = sales(answer(response))
        async with connector:
            with pytest.raises(Exception) as caught:
                await connector.update_account("A100234", {"email": "x"}, version=1, idempotency_key="k")
        text = f"{caught.value} {caught.value!r}"
        for secret in (API_KEY, BASE_URL, "sales.internal", "A100234", "王芳", "wang@x.cn", "/api/v1"):
            assert secret not in text


async def test_health() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/health"
        return httpx.Response(200, json={"status": "ok"})

    connector, _ = sales(handler)
    async with connector:
        assert await connector.health() is True

    connector, _ = sales(lambda request: httpx.Response(503))
    async with connector:
        assert await connector.health() is False
