"""Tracing (off by default): a server span per request, a client span per upstream call in the same
trace, the trace context propagated to the systems — and no query string or variable in any span."""

from __future__ import annotations

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from connectors.sales import SalesConnector
from gateway.app import create_app
from gateway.auth import issue_token
from gateway.settings import SettingsError, load_settings
from gateway.tracing import build_provider, trace_upstreams
from schema.loaders import Upstreams

SECRET = "tracing-test-secret-0123456789abcdef"


def account(no: str) -> dict[str, object]:
    return {
        "account_no": no,
        "kind": "company",
        "name": "上海澄川科技有限公司",
        "contact_name": "王芳",
        "title": None,
        "email": "wang.fang@chengchuan.cn",
        "phone": "13812345678",
        "address": None,
        "tax_id": None,
        "region": "east",
        "status": "customer",
        "owner_id": None,
        "owner_since": None,
        "pool_since": None,
        "created_at": "2023-11-02T03:04:05Z",
        "updated_at": "2025-06-01T10:00:00Z",
        "version": 7,
    }


async def test_spans_for_the_request_and_each_upstream_call() -> None:
    seen_headers: list[httpx.Headers] = []

    def sales(request: httpx.Request) -> httpx.Response:
        seen_headers.append(request.headers)
        return httpx.Response(200, json={"data": [account("A100234")]})

    exporter = InMemorySpanExporter()
    settings = load_settings(environ={"CG_JWT_SECRET": SECRET, "CG_CACHE": "false", "CG_TRACING": "off"})
    app = create_app(settings, span_exporter=exporter)
    gateway = app.state.gateway
    connector = SalesConnector("http://sales.test", "key", transport=httpx.MockTransport(sales))
    gateway._upstreams = Upstreams(
        sales=connector, support=gateway.upstreams.support, contracts=gateway.upstreams.contracts
    )
    trace_upstreams(gateway.tracing, [connector])
    token = issue_token(SECRET, sub="u-1", roles=["data_steward"])
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
    ):
        incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        response = await client.get(
            "/graphql",
            params={"query": '{ customer(id: "Q3VzdG9tZXI6QTEwMDIzNA") { name email } }'},
            headers={
                "Authorization": f"Bearer {token}",
                "traceparent": incoming,
                "Accept": "application/json",
            },
        )
        assert response.json()["data"]["customer"]["name"] == "上海澄川科技有限公司"
        gateway.tracing.force_flush()
    spans = exporter.get_finished_spans()
    server = [s for s in spans if s.name == "GET /graphql"]
    client_spans = [s for s in spans if s.name == "sales accounts"]
    assert len(server) == 1 and len(client_spans) == 1
    assert f"{server[0].context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"  # continued
    assert client_spans[0].context.trace_id == server[0].context.trace_id
    assert seen_headers[0]["traceparent"].split("-")[1] == "0af7651916cd43dd8448eb211c80319c"
    dumped = " ".join(str(dict(s.attributes or {})) + s.name for s in spans)
    assert "wang.fang" not in dumped and "customer(" not in dumped and "A100234" not in dumped


def test_tracing_is_off_by_default_and_modes_are_checked() -> None:
    assert load_settings(environ={}).tracing == "off"
    assert build_provider("off") is None
    with pytest.raises(SettingsError, match="tracing"):
        build_provider("jaeger")
