"""Metrics at /metrics, JSON log lines, the request id middleware."""

import io
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import strawberry
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors import SalesConnector, SupportConnector, UpstreamUnavailable
from connectors.models import System
from connectors.resilience import BreakerState, get_deadline
from gateway.logs import JsonFormatter, configure_logging
from gateway.metrics import Metrics, metrics_endpoint
from gateway.request_id import RequestIdMiddleware, accept_request_id, current_request_id
from tests.connectors.fakes import Recorder, raw_account

EMAIL = "Wang.Fang@ChengChuan.cn"


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample in the exposition text, by name and sorted labels."""
    found = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Everything logged during the test, as configured by ``configure_logging``."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    configure_logging("DEBUG", stream=stream)
    try:
        yield stream
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def parsed(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


# --- metrics ---------------------------------------------------------------------------------


def test_each_metrics_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.observe_request("GetCustomer", "ok", 0.01)
    assert samples(first)[("cg_requests_total", (("operation", "GetCustomer"), ("outcome", "ok")))] == 1
    assert not any(name == "cg_requests_total" for name, _ in samples(second))


def test_operation_label_is_a_short_identifier_and_bounded() -> None:
    metrics = Metrics(max_operations=3)
    assert metrics.operation_label("GetCustomer") == "GetCustomer"
    for odd in (None, "", "query { customer }", "1st", "a" * 65, "wang.fang@x.cn", "王芳"):
        assert metrics.operation_label(odd) == "anonymous"
    assert metrics.operation_label("Two") == "Two"
    assert metrics.operation_label("Three") == "Three"
    assert metrics.operation_label("Four") == "other"
    assert metrics.operation_label("GetCustomer") == "GetCustomer"  # the first ones stay


async def test_upstream_calls_are_counted_by_system_resource_and_status_without_personal_data(
    log_lines: io.StringIO,
) -> None:
    answers = [httpx.Response(503), httpx.Response(200, json={"requesters": []})]
    recorder = Recorder(lambda request: answers.pop(0))
    connector = SupportConnector("http://helpdesk.internal", "tok-secret", transport=recorder.transport)
    metrics = Metrics()
    metrics.watch(connector)
    async with connector:
        await connector.requesters([EMAIL])

    found = samples(metrics)
    calls = "cg_upstream_calls_total"
    assert found[(calls, (("resource", "requesters"), ("status", "503"), ("system", "support")))] == 1
    assert found[(calls, (("resource", "requesters"), ("status", "200"), ("system", "support")))] == 1
    assert found[("cg_upstream_seconds_count", (("resource", "requesters"), ("system", "support")))] == 2
    assert found[("cg_breaker_state", (("system", "support"),))] == 0
    assert found[("cg_upstream_in_flight", (("system", "support"),))] == 0

    text = metrics.render().decode() + log_lines.getvalue()
    for secret in ("wang", "chengchuan", "@", "helpdesk.internal", "tok-secret", "/v2/"):
        assert secret not in text.lower()

    failures = [line for line in parsed(log_lines) if line["message"] == "upstream attempt failed"]
    assert len(failures) == 1
    assert {key: failures[0][key] for key in ("system", "resource", "kind", "attempt")} == {
        "system": "support",
        "resource": "requesters",
        "kind": "503",
        "attempt": 1,
    }


async def test_breaker_state_and_local_refusals_are_visible(log_lines: io.StringIO) -> None:
    recorder = Recorder(lambda request: httpx.Response(500))
    connector = SalesConnector(
        "http://sales.internal", "k", transport=recorder.transport, max_attempts=1, breaker_failures=2
    )
    metrics = Metrics()
    metrics.watch(connector)
    async with connector:
        for _ in range(3):
            with pytest.raises(UpstreamUnavailable):
                await connector.account("A100234")
    assert connector.breaker.state is BreakerState.OPEN
    found = samples(metrics)
    assert found[("cg_breaker_state", (("system", "sales"),))] == 2
    calls = "cg_upstream_calls_total"
    assert found[(calls, (("resource", "account"), ("status", "500"), ("system", "sales")))] == 2
    assert found[(calls, (("resource", "account"), ("status", "circuit_open"), ("system", "sales")))] == 1
    lines = parsed(log_lines)
    assert any(line["message"] == "circuit breaker open" and line["system"] == "sales" for line in lines)
    assert "A100234" not in log_lines.getvalue()

    metrics.breaker_changed(System.SALES, BreakerState.HALF_OPEN)
    assert samples(metrics)[("cg_breaker_state", (("system", "sales"),))] == 1


def test_limits_and_caches_are_counted_with_bounded_labels() -> None:
    metrics = Metrics()
    metrics.limit_rejected("depth")
    metrics.limit_rejected("wang fang@x.cn")
    metrics.cache_result("accounts", "hit")
    metrics.observe_upstream(System.CONTRACTS, "contracts", "queue_timeout", 0.2, 1)
    found = samples(metrics)
    assert found[("cg_limit_rejections_total", (("limit", "depth"),))] == 1
    assert found[("cg_limit_rejections_total", (("limit", "other"),))] == 1
    assert found[("cg_limit_rejections_total", (("limit", "contracts.queue_timeout"),))] == 1
    assert found[("cg_cache_total", (("resource", "accounts"), ("result", "hit")))] == 1


async def test_metrics_endpoint_serves_the_apps_registry() -> None:
    metrics = Metrics()
    metrics.observe_request("GetCustomer", "ok", 0.02)
    app = Starlette(routes=[Route("/metrics", metrics_endpoint)])
    app.state.metrics = metrics
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'cg_requests_total{operation="GetCustomer",outcome="ok"} 1.0' in response.text
    assert 'cg_request_seconds_bucket{le="0.025",operation="GetCustomer"} 1.0' in response.text


async def test_graphql_extension_counts_operations_by_outcome() -> None:
    @strawberry.type
    class Query:
        @strawberry.field
        def ok(self) -> int:
            return 1

        @strawberry.field
        def broken(self) -> int | None:
            raise RuntimeError("wang.fang@x.cn")

    class Caller:
        principal = object()  # a caller with a valid token: its valid operations get their own label

    metrics = Metrics()
    schema = strawberry.Schema(query=Query, extensions=[metrics.graphql_extension()])
    for document in (
        "query GetOk { ok }",
        "query GetSome { ok broken }",
        "{ ok }",
        "query Bad { nope }",
        "query {",
    ):
        await schema.execute(document, context_value=Caller())
    found = samples(metrics)

    def count(operation: str, outcome: str) -> float:
        return found.get(("cg_requests_total", (("operation", operation), ("outcome", outcome))), 0)

    assert count("GetOk", "ok") == 1
    assert count("GetSome", "partial") == 1
    assert count("anonymous", "ok") == 1
    assert count("anonymous", "invalid") == 2  # an invalid document's name is not a label
    assert found[("cg_request_seconds_count", (("operation", "GetOk"),))] == 1
    assert "wang" not in metrics.render().decode()


# --- logging ---------------------------------------------------------------------------------


def test_json_lines_carry_whitelisted_fields_only() -> None:
    formatter = JsonFormatter()
    record = logging.LogRecord(
        "customer_graph.test", logging.WARNING, __file__, 1, "hello %s", ("there",), None
    )
    record.__dict__.update(system="sales", attempt=2, email="wang@x.cn", body={"a": 1}, status=None)
    line = json.loads(formatter.format(record))
    assert line["message"] == "hello there"
    assert line["level"] == "WARNING"
    assert line["logger"] == "customer_graph.test"
    assert line["time"].endswith("+00:00")
    assert (line["system"], line["attempt"]) == ("sales", 2)
    assert "email" not in line and "body" not in line and "status" not in line
    assert "request_id" not in line


def test_exceptions_log_their_type_and_frames_not_their_message() -> None:
    formatter = JsonFormatter()
    email = "wang@" + "x.cn"
    try:
        raise KeyError(email)
    except KeyError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed", (), None)
        record.exc_info = sys.exc_info()
    line = json.loads(formatter.format(record))
    assert line["error_type"] == "KeyError"
    assert "test_observability.py" in line["stack"]
    assert "wang@x.cn" not in json.dumps(line)


def test_configure_logging_is_idempotent_and_quietens_url_loggers(log_lines: io.StringIO) -> None:
    configure_logging("INFO", stream=log_lines)
    root = logging.getLogger()
    assert sum(isinstance(h.formatter, JsonFormatter) for h in root.handlers) == 1
    assert logging.getLogger("httpx").getEffectiveLevel() >= logging.WARNING
    logging.getLogger("httpx").info("HTTP Request: GET http://sales/api/v1/accounts?ids=A1")
    logging.getLogger("customer_graph.test").info("visible")
    assert [line["message"] for line in parsed(log_lines)] == ["visible"]


async def test_graphql_errors_are_logged_without_their_text(log_lines: io.StringIO) -> None:
    @strawberry.type
    class Query:
        @strawberry.field
        def customer(self, email: str) -> int:
            raise RuntimeError(f"no customer {email}")

    schema = strawberry.Schema(query=Query)
    await schema.execute('query Find { customer(email: "wang.fang@x.cn") }')
    await schema.execute('query Typo { customer(email: "wang.fang@x.cn"')
    lines = [line for line in parsed(log_lines) if line["logger"] == "strawberry.execution"]
    assert [line["message"] for line in lines] == ["graphql error", "graphql error"]
    assert lines[0]["graphql_path"] == "customer"
    assert lines[0]["error_type"] == "RuntimeError"
    assert "wang" not in log_lines.getvalue()


# --- the request id middleware ---------------------------------------------------------------


def build_app(deadline: float | None = 5.0) -> Starlette:
    async def echo(request: Request) -> Response:
        logging.getLogger("customer_graph.test").info("inside")
        left = get_deadline()
        return JSONResponse(
            {
                "header": request.headers.get("x-request-id"),
                "context": current_request_id(),
                "deadline": left is not None,
            },
            headers={"X-Request-Id": "app-chosen"},
        )

    async def boom(request: Request) -> Response:
        raise RuntimeError("wang.fang@x.cn")

    return Starlette(
        routes=[Route("/items/{item}", echo), Route("/boom", boom)],
        middleware=[Middleware(RequestIdMiddleware, deadline=deadline)],
    )


def client(app: Starlette) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://gw")


async def test_a_plain_request_id_is_kept_and_returned(log_lines: io.StringIO) -> None:
    async with client(build_app()) as http:
        response = await http.get(
            "/items/A100234?email=wang.fang@x.cn",
            headers={"X-Request-Id": "req-123.abc:7", "Authorization": "Bearer t0k"},
        )
    assert response.headers.get_list("x-request-id") == ["req-123.abc:7"]
    assert response.json() == {"header": "req-123.abc:7", "context": "req-123.abc:7", "deadline": True}

    lines = parsed(log_lines)
    inside = next(line for line in lines if line["message"] == "inside")
    assert inside["request_id"] == "req-123.abc:7"
    request = next(line for line in lines if line["message"] == "request")
    assert request["request_id"] == "req-123.abc:7"
    assert (request["method"], request["path"], request["status"]) == ("GET", "/items/{item}", 200)
    assert isinstance(request["duration_ms"], float)
    text = log_lines.getvalue()
    for secret in ("A100234", "wang", "email=", "t0k", "Bearer"):
        assert secret not in text


@pytest.mark.parametrize("given", [None, "", "x" * 129, "has space", "wang@x.cn", "a\tb", "王芳"])
async def test_an_odd_request_id_is_replaced(given: str | None) -> None:
    headers = [] if given is None else [(b"x-request-id", given.encode())]
    async with client(build_app()) as http:
        response = await http.get("/items/1", headers=headers)
    made = response.headers["x-request-id"]
    assert made != given and len(made) == 32 and int(made, 16) >= 0
    assert response.json()["header"] == made == response.json()["context"]


async def test_failures_and_unknown_paths_are_logged_without_their_path(log_lines: io.StringIO) -> None:
    async with client(build_app()) as http:
        failed = await http.get("/boom", headers={"X-Request-Id": "r-1"})
        missing = await http.get("/people/wang.fang@x.cn", headers={"X-Request-Id": "r-2"})
    assert failed.status_code == 500
    assert missing.status_code == 404
    requests = [line for line in parsed(log_lines) if line["message"] == "request"]
    by_id = {line["request_id"]: line for line in requests}
    assert (by_id["r-1"]["path"], by_id["r-1"]["status"], by_id["r-1"]["level"]) == ("/boom", 500, "ERROR")
    assert (by_id["r-2"]["path"], by_id["r-2"]["status"]) == ("unmatched", 404)
    assert "wang" not in log_lines.getvalue()


async def test_no_deadline_when_none_is_configured() -> None:
    async with client(build_app(deadline=None)) as http:
        response = await http.get("/items/1")
    assert response.json()["deadline"] is False


def test_accept_request_id() -> None:
    assert accept_request_id("abc-DEF_1.2:3") == "abc-DEF_1.2:3"
    assert accept_request_id("a b") != "a b"


async def test_an_upstream_failure_inside_a_request_logs_the_request_id(log_lines: io.StringIO) -> None:
    recorder = Recorder(lambda request: httpx.Response(502))
    connector = SalesConnector("http://sales.internal", "k", transport=recorder.transport, max_attempts=2)
    metrics = Metrics()
    metrics.watch(connector)

    async def read(request: Request) -> Response:
        try:
            await connector.accounts(["A100234"])
        except UpstreamUnavailable as exc:
            return JSONResponse({"kind": exc.kind}, status_code=502)
        return JSONResponse(raw_account())

    app = Starlette(routes=[Route("/read", read)], middleware=[Middleware(RequestIdMiddleware)])
    async with connector, client(app) as http:
        await http.get("/read", headers={"X-Request-Id": "rid-9"})
    failures = [line for line in parsed(log_lines) if line["message"] == "upstream attempt failed"]
    assert [(line["request_id"], line["attempt"], line["kind"]) for line in failures] == [
        ("rid-9", 1, "502"),
        ("rid-9", 2, "502"),
    ]
    assert "A100234" not in log_lines.getvalue()


async def test_the_request_line_names_the_operation_and_the_apq_outcome(log_lines: io.StringIO) -> None:
    from hashlib import sha256

    from .gateway_client import bearer, gateway

    query = "query WhoAmI { viewer { id } }"
    persisted = {"persistedQuery": {"version": 1, "sha256Hash": sha256(query.encode()).hexdigest()}}
    async with gateway() as client:
        headers = bearer(["finance"])
        await client.post("/graphql", json={"extensions": persisted}, headers=headers)
        await client.post("/graphql", json={"query": query, "extensions": persisted}, headers=headers)
        await client.post("/graphql", json={"extensions": persisted}, headers=headers)
    lines = [line for line in parsed(log_lines) if line["message"] == "request"]
    assert [line.get("apq") for line in lines] == ["miss", "registered", "hit"]
    assert [line.get("operation") for line in lines[1:]] == ["WhoAmI", "WhoAmI"]


async def test_a_thousand_operation_names_do_not_make_a_thousand_series() -> None:
    from .gateway_client import bearer, gateway

    async with gateway() as client:
        for i in range(1000):
            await client.post(
                "/graphql", json={"query": f"query Op{i} {{ __typename }}"}, headers=bearer(["finance"])
            )
        for i in range(50):  # without a token: never a label of its own
            await client.post("/graphql", json={"query": f"query Anon{i} {{ __typename }}"})
        exposition = (await client.get("/metrics")).text
    operations = {
        sample.labels["operation"]
        for family in text_string_to_metric_families(exposition)
        if family.name == "cg_requests"
        for sample in family.samples
    }
    assert len(operations) <= 102  # 100 names, "other", "anonymous"
    assert not any(name.startswith("Anon") for name in operations)
