import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from connectors import SupportConnector, UpstreamNotFound, UpstreamUnavailable
from connectors.models import Requester, System, Ticket, TicketRating
from tests.connectors.fakes import Handler, Recorder, answer, body, raw_ticket

BASE_URL = "http://helpdesk.internal:8002"
TOKEN = "tok-support-51c2e8"


def support(handler: Handler, **options: Any) -> tuple[SupportConnector, Recorder]:
    recorder = Recorder(handler)
    return SupportConnector(BASE_URL, TOKEN, transport=recorder.transport, **options), recorder


def page(tickets: list[dict[str, Any]], next_cursor: str | None = None) -> httpx.Response:
    return httpx.Response(200, json={"tickets": tickets, "next_cursor": next_cursor})


def too_many(retry_after: str = "1") -> httpx.Response:
    return httpx.Response(429, headers={"Retry-After": retry_after}, json={"errors": [{"title": "Too Many"}]})


async def test_ticket_maps_every_field() -> None:
    connector, recorder = support(lambda request: page([raw_ticket(email="Wang.Fang@ChengChuan.cn")]))
    async with connector:
        tickets = await connector.tickets(["wang.fang@chengchuan.cn"])

    assert recorder.last.headers["Authorization"] == f"Bearer {TOKEN}"
    assert tickets == {
        "wang.fang@chengchuan.cn": [
            Ticket(
                id="88123",
                requester_email="wang.fang@chengchuan.cn",
                subject="发票抬头错误",
                category="complaint",
                priority="high",
                status="open",
                channel="phone",
                assignee="agent-17",
                created_at=datetime(2024, 5, 29, 16, 26, 40, tzinfo=UTC),
                updated_at=datetime(2024, 5, 29, 17, 26, 40, tzinfo=UTC),
                satisfaction=TicketRating(score=4, comment="处理及时"),
            )
        ]
    }


async def test_search_body_and_case_insensitive_keys() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return page([raw_ticket(1, "a@x.cn", satisfaction=None, assignee=None)])

    connector, recorder = support(handler)
    async with connector:
        tickets = await connector.tickets(
            [" A@X.cn", "a@x.cn", "B@y.cn"],
            status=["open", "pending"],
            updated_after=datetime(2024, 5, 29, 16, 26, 40, tzinfo=UTC),
        )

    request = recorder.last
    assert (request.method, request.url.path) == ("POST", "/v2/tickets/search")
    assert body(request) == {
        "requester_emails": ["a@x.cn", "b@y.cn"],
        "status": ["open", "pending"],
        "updated_after": 1717000000,
        "limit": 500,
        "cursor": None,
    }
    assert list(tickets) == ["a@x.cn", "b@y.cn"]
    assert tickets["b@y.cn"] == []  # asked, none found
    assert tickets["a@x.cn"][0].satisfaction is None
    assert tickets["a@x.cn"][0].assignee is None


async def test_single_status_string_is_one_status() -> None:
    connector, recorder = support(lambda request: page([]))
    async with connector:
        await connector.tickets(["a@x.cn"], status="open")
    assert body(recorder.last)["status"] == ["open"]


async def test_450_emails_go_out_as_three_bodies_of_at_most_200() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        emails = body(request)["requester_emails"]
        return page([raw_ticket(n, email) for n, email in enumerate(emails)])

    asked = [f"User{n}@Example.cn" for n in range(450)]
    connector, recorder = support(handler)
    async with connector:
        tickets = await connector.tickets(asked)

    sizes = [len(body(request)["requester_emails"]) for request in recorder.requests]
    assert len(sizes) == 3
    assert all(size <= 200 for size in sizes)
    assert sum(sizes) == 450
    assert list(tickets) == [email.lower() for email in asked]
    assert all(len(found) == 1 for found in tickets.values())


async def test_cursor_is_followed_and_pages_merged_in_order() -> None:
    pages = {
        None: page([raw_ticket(3, "a@x.cn"), raw_ticket(2, "a@x.cn")], "c1"),
        "c1": page([raw_ticket(1, "a@x.cn"), raw_ticket(9, "b@x.cn")], "c2"),
        "c2": page([raw_ticket(8, "b@x.cn")]),
    }

    def handler(request: httpx.Request) -> httpx.Response:
        return pages[body(request)["cursor"]]

    connector, recorder = support(handler)
    async with connector:
        tickets = await connector.tickets(["a@x.cn", "b@x.cn"])

    assert [body(r)["cursor"] for r in recorder.requests] == [None, "c1", "c2"]
    assert all(body(r)["requester_emails"] == ["a@x.cn", "b@x.cn"] for r in recorder.requests)
    assert [t.id for t in tickets["a@x.cn"]] == ["3", "2", "1"]
    assert [t.id for t in tickets["b@x.cn"]] == ["9", "8"]


async def test_a_cursor_that_goes_round_in_circles_is_a_bad_response() -> None:
    connector, recorder = support(lambda request: page([raw_ticket()], "same"))
    async with connector:
        with pytest.raises(UpstreamUnavailable) as caught:
            await connector.tickets(["wang.fang@chengchuan.cn"])
    assert caught.value.kind == "bad_response"
    assert len(recorder.requests) == 2


async def test_retry_after_is_honoured() -> None:
    answers = [too_many("1"), page([raw_ticket()])]
    connector, recorder = support(lambda request: answers.pop(0))
    async with connector:
        started = time.monotonic()
        tickets = await connector.tickets(["wang.fang@chengchuan.cn"])
        waited = time.monotonic() - started

    assert len(recorder.requests) == 2
    assert waited >= 1.0
    assert len(tickets["wang.fang@chengchuan.cn"]) == 1


async def test_gives_up_at_once_when_the_wait_exceeds_the_budget() -> None:
    connector, recorder = support(lambda request: too_many("30"))
    async with connector:
        started = time.monotonic()
        with pytest.raises(UpstreamUnavailable) as caught:
            await connector.requesters(["a@x.cn"])
        assert time.monotonic() - started < 0.5
    assert caught.value.kind == "rate_limited"
    assert caught.value.system is System.SUPPORT
    assert len(recorder.requests) == 1


async def test_gives_up_when_attempts_run_out() -> None:
    connector, recorder = support(lambda request: too_many("0"), max_attempts=3)
    async with connector:
        with pytest.raises(UpstreamUnavailable) as caught:
            await connector.ticket(1)
    assert caught.value.kind == "rate_limited"
    assert len(recorder.requests) == 3


async def test_waits_add_up_to_at_most_max_retry_wait() -> None:
    connector, recorder = support(lambda request: too_many("1"), max_attempts=5, max_retry_wait=1.5)
    async with connector:
        with pytest.raises(UpstreamUnavailable) as caught:
            await connector.ticket(1)
    assert caught.value.kind == "rate_limited"
    assert len(recorder.requests) == 2  # waited 1 s once; a second 1 s would pass 1.5 s


@pytest.mark.parametrize("retry_after", [None, "soon", "-1", "nan"])
async def test_429_without_a_usable_retry_after_is_rate_limited(retry_after: str | None) -> None:
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    connector, recorder = support(lambda request: httpx.Response(429, headers=headers))
    async with connector:
        with pytest.raises(UpstreamUnavailable) as caught:
            await connector.satisfaction(["a@x.cn"])
    assert caught.value.kind == "rate_limited"
    assert len(recorder.requests) == 1


async def test_ticket_detail_with_comments() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        comments = [
            {
                "id": 1,
                "author": "wang.fang@chengchuan.cn",
                "body": "抬头错了",
                "public": True,
                "created_at": 1717000000,
            },
            {"id": 2, "author": "agent-17", "body": "内部备注", "public": False, "created_at": 1717000060},
        ]
        return httpx.Response(200, json={"ticket": raw_ticket(), "comments": comments})

    connector, recorder = support(handler)
    async with connector:
        detail = await connector.ticket(88123)

    assert recorder.last.url.path == "/v2/tickets/88123"
    assert detail.ticket.id == "88123"
    assert [(c.id, c.author, c.public) for c in detail.comments] == [
        ("1", "wang.fang@chengchuan.cn", True),
        ("2", "agent-17", False),
    ]
    assert detail.comments[1].created_at == datetime(2024, 5, 29, 16, 27, 40, tzinfo=UTC)


async def test_unknown_ticket_is_not_found() -> None:
    not_found = httpx.Response(404, json={"errors": [{"title": "Not Found", "detail": "no ticket 7"}]})
    connector, _ = support(lambda request: not_found)
    async with connector:
        with pytest.raises(UpstreamNotFound):
            await connector.ticket("7")


async def test_requesters_keyed_by_lower_case_email_with_e164_phone() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        requester = {
            "email": "wang.fang@chengchuan.cn",
            "display_name": "王芳",
            "phone": "138-1234-5678",
            "vip": True,
            "language": "zh-CN",
            "created_at": 1699999999,
        }
        return httpx.Response(200, json={"requesters": [requester]})

    connector, recorder = support(handler)
    async with connector:
        found = await connector.requesters(["Wang.Fang@ChengChuan.cn", "nobody@x.cn"])

    assert recorder.last.url.params["emails"] == "wang.fang@chengchuan.cn,nobody@x.cn"
    assert found == {
        "wang.fang@chengchuan.cn": Requester(
            email="wang.fang@chengchuan.cn",
            display_name="王芳",
            phone="+8613812345678",
            vip=True,
            language="zh-CN",
            created_at=datetime(2023, 11, 14, 22, 13, 19, tzinfo=UTC),
        )
    }


async def test_requesters_are_chunked_by_200() -> None:
    connector, recorder = support(lambda request: httpx.Response(200, json={"requesters": []}))
    async with connector:
        assert await connector.requesters([f"u{n}@x.cn" for n in range(401)]) == {}
    assert sorted(len(r.url.params["emails"].split(",")) for r in recorder.requests) == [1, 200, 200]


async def test_satisfaction_rounds_and_covers_every_email() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        summaries = [
            {"email": "a@x.cn", "rated": 3, "average": 4.6666667, "last_rated_at": 1717000000},
            {"email": "b@x.cn", "rated": 0, "average": None, "last_rated_at": None},
        ]
        return httpx.Response(200, json={"summaries": summaries})

    connector, _ = support(handler)
    async with connector:
        found = await connector.satisfaction(["A@x.cn", "b@x.cn", "c@x.cn"])

    assert found["a@x.cn"].average == Decimal("4.67")
    assert found["a@x.cn"].rated == 3
    assert found["a@x.cn"].last_rated_at == datetime(2024, 5, 29, 16, 26, 40, tzinfo=UTC)
    assert (found["b@x.cn"].rated, found["b@x.cn"].average, found["b@x.cn"].last_rated_at) == (0, None, None)
    assert (found["c@x.cn"].rated, found["c@x.cn"].average) == (0, None)


async def test_create_ticket_sends_request_id() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        sent = body(request)
        return httpx.Response(201, json={"ticket": raw_ticket(5, sent["requester_email"], status="new")})

    connector, recorder = support(handler)
    async with connector:
        ticket = await connector.create_ticket(
            "Wang.Fang@ChengChuan.cn", "发票", "request", "normal", "web", "请重开发票", request_id="req-9"
        )

    request = recorder.last
    assert (request.method, request.url.path) == ("POST", "/v2/tickets")
    assert request.headers["X-Request-Id"] == "req-9"
    assert body(request) == {
        "requester_email": "wang.fang@chengchuan.cn",
        "subject": "发票",
        "category": "request",
        "priority": "normal",
        "channel": "web",
        "body": "请重开发票",
    }
    assert (ticket.id, ticket.status) == ("5", "new")


@pytest.mark.parametrize(
    ("response", "kind"),
    [
        (httpx.Response(401, json={"errors": [{"title": "Unauthorized", "detail": "..."}]}), "unauthorized"),
        (httpx.Response(503), "overloaded"),
        (httpx.Response(500), "error"),
        (page([raw_ticket(created_at="2024-05-29")]), "bad_response"),
        (httpx.Response(200, json={"tickets": [], "next_cursor": 7}), "bad_response"),
    ],
)
async def test_failures(response: httpx.Response, kind: str) -> None:
    connector, _ = support(lambda request: response)
    async with connector:
        with pytest.raises(UpstreamUnavailable) as caught:
            await connector.tickets(["a@x.cn"])
    assert caught.value.kind == kind


async def test_no_url_token_or_body_in_errors() -> None:
    bad = httpx.Response(400, json={"errors": [{"title": "Bad", "detail": "wang.fang@chengchuan.cn 王芳"}]})
    for response in [bad, too_many("99"), httpx.Response(500, text=TOKEN)]:
        connector, _ = support(answer(response))
        async with connector:
            with pytest.raises(Exception) as caught:
                await connector.tickets(["wang.fang@chengchuan.cn"])
        text = f"{caught.value} {caught.value!r}"
        for secret in (TOKEN, BASE_URL, "helpdesk.internal", "wang.fang", "王芳", "/v2"):
            assert secret not in text
