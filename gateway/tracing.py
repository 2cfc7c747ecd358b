"""OpenTelemetry tracing, off by default (``CG_TRACING=otlp`` or ``console`` turns it on).

One server span per HTTP request (``POST /graphql``), one client span per upstream attempt
(``sales orders``), the request's trace context propagated to the systems as ``traceparent``, and an
incoming ``traceparent`` continued. Spans carry route templates, fixed endpoint names, statuses and
the request id — never a query string, a variable, a header value or a URL with ids.
The OTLP exporter takes its endpoint from the standard ``OTEL_EXPORTER_OTLP_ENDPOINT``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from opentelemetry.propagate import extract
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connectors.base import Connector

from .settings import SettingsError

MODES = ("off", "console", "otlp")


def build_provider(mode: str, exporter: SpanExporter | None = None) -> TracerProvider | None:
    """The tracer provider for ``mode`` (None when off); ``exporter`` overrides (tests)."""
    if mode not in MODES:
        raise SettingsError(f"tracing: expected one of {', '.join(MODES)}, got {mode!r}")
    if mode == "off" and exporter is None:
        return None
    if exporter is None:
        if mode == "console":
            exporter = ConsoleSpanExporter()
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "customer-graph"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def trace_upstreams(provider: TracerProvider, connectors: Iterable[Connector]) -> None:
    tracer = provider.get_tracer("customer_graph.upstream")
    for connector in connectors:
        connector.tracer = tracer


class TracingMiddleware:
    """Pure ASGI: a server span per HTTP request, continuing the caller's ``traceparent``."""

    def __init__(self, app: ASGIApp, *, tracer: Tracer) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())}
        method = scope.get("method", "GET")
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.time_ns()
        with self.tracer.start_as_current_span(
            f"{method} request", context=extract(carrier), kind=SpanKind.SERVER, start_time=started
        ) as span:
            try:
                await self.app(scope, receive, send_status)
            finally:
                route = getattr(scope.get("route"), "path", None)
                span.update_name(f"{method} {route or 'unmatched'}")
                span.set_attribute("http.request.method", method)
                span.set_attribute("http.route", route or "unmatched")
                span.set_attribute("http.response.status_code", status or 500)
                request_id = carrier.get("x-request-id")
                if request_id:
                    span.set_attribute("cg.request_id", request_id)
                if not status or status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
