"""The gateway's Prometheus metrics, in their own ``CollectorRegistry`` (one per app, so tests can build
several), served by ``metrics_endpoint`` at ``/metrics``. ``Metrics.watch(connector)`` plugs a
connector's attempt observer and breaker listener in; ``Metrics.graphql_extension()`` is a strawberry
extension that counts and times operations.

No label carries personal data: labels are fixed names (systems, resources, statuses, limits),
operation names that are plain identifiers of valid operations of callers with a token (at most 100),
or ``anonymous``/``other``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from strawberry.extensions import SchemaExtension
from strawberry.types.execution import PreExecutionError

from connectors.base import Connector
from connectors.models import System
from connectors.resilience import BreakerState

__all__ = ["OPERATION_NAME", "Metrics", "metrics_endpoint"]

upstream_log = logging.getLogger("customer_graph.upstream")

OPERATION_NAME = _OPERATION = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_LABEL = re.compile(r"[A-Za-z0-9_.:-]{1,64}")

REQUEST_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UPSTREAM_BUCKETS: Final = (0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Outcomes an ``AttemptObserver`` reports for a call that never reached the system.
_LOCAL_REFUSALS: Final = frozenset({"circuit_open", "deadline", "queue_timeout", "throttled"})


class _Bounded:
    """Label values from outside: a plain value is kept while fewer than ``limit`` distinct ones
    were seen; anything else becomes ``fallback`` / ``other``."""

    def __init__(self, pattern: re.Pattern[str], limit: int, fallback: str) -> None:
        self._pattern = pattern
        self._limit = limit
        self._fallback = fallback
        self._seen: dict[str, str] = {}

    def __call__(self, value: str | None) -> str:
        if not value:
            return self._fallback
        known = self._seen.get(value)
        if known is not None:
            return known
        if not self._pattern.fullmatch(value):
            return self._fallback
        if len(self._seen) >= self._limit:
            return "other"
        self._seen[value] = value
        return value


class Metrics:
    """The gateway's Prometheus metrics, in a registry of their own.

    - ``cg_requests_total{operation,outcome}`` and ``cg_request_seconds{operation}``
    - ``cg_upstream_calls_total{system,resource,status}`` and ``cg_upstream_seconds{system,resource}``
    - ``cg_upstream_in_flight{system}``, ``cg_breaker_state{system}`` (0 closed, 1 half-open, 2 open)
    - ``cg_limit_rejections_total{limit}``, ``cg_cache_total{resource,result}``
    - ``cg_bulk_read_alerts_total{roles}`` (gateway/readwatch.py)
    """

    def __init__(self, *, max_operations: int = 100, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "cg_requests", "GraphQL operations by outcome.", ["operation", "outcome"], registry=r
        )
        self.request_seconds = Histogram(
            "cg_request_seconds",
            "GraphQL operation latency.",
            ["operation"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.upstream_calls = Counter(
            "cg_upstream_calls",
            "Attempts at upstream calls (and calls refused before going out) by answer status or kind.",
            ["system", "resource", "status"],
            registry=r,
        )
        self.upstream_seconds = Histogram(
            "cg_upstream_seconds",
            "Upstream attempt latency.",
            ["system", "resource"],
            buckets=UPSTREAM_BUCKETS,
            registry=r,
        )
        self.upstream_in_flight = Gauge(
            "cg_upstream_in_flight", "Upstream calls out right now.", ["system"], registry=r
        )
        self.breaker_state = Gauge(
            "cg_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open.", ["system"], registry=r
        )
        self.shared_fallback = Gauge(
            "cg_shared_limit_fallback",
            "1 while a deployment-wide limit falls back to this instance's share (Redis unreachable).",
            ["system"],
            registry=r,
        )
        self.limit_rejections = Counter(
            "cg_limit_rejections", "Work refused by a limit.", ["limit"], registry=r
        )
        self.bulk_read_alerts = Counter(
            "cg_bulk_read_alerts",
            "Users noticed reading personal data of more than CG_READ_ALERT_CUSTOMERS customers in an "
            "hour (once per user per hour), by the user's roles (no user id here: see the log).",
            ["roles"],
            registry=r,
        )
        # Cache lookups happen several times per field-rich request: plain counts on the event loop,
        # read when /metrics is scraped (a prometheus Counter takes a lock per increment).
        self._cache_counts: dict[tuple[str, str], int] = {}
        r.register(_CacheCounts(self._cache_counts))
        self._operation = _Bounded(_OPERATION, max_operations, "anonymous")
        self._label = _Bounded(_LABEL, 100, "other")
        self._roles = _Bounded(_LABEL, 30, "other")  # role combinations (of the policy's roles)
        # labelled children by their label values: ``labels()`` is the slow part of a metric update
        self._children: dict[tuple[Any, ...], Any] = {}

    # --- requests --------------------------------------------------------------------------

    def operation_label(self, name: str | None) -> str:
        """The operation name when it is a short identifier (and among the first
        ``max_operations`` seen), else ``anonymous`` / ``other``."""
        return self._operation(name)

    def observe_request(self, operation: str | None, outcome: str, seconds: float) -> None:
        """One GraphQL operation ended: ``outcome`` is a short word (``ok``, ``partial``, ``error``,
        ``invalid``, ``rejected``, …)."""
        label = self._operation(operation)
        self._child(self.requests, label, self._label(outcome)).inc()
        self._child(self.request_seconds, label).observe(seconds)

    def graphql_extension(self) -> Callable[[], SchemaExtension]:
        """A strawberry extension factory (pass it in ``extensions=``) that feeds
        ``observe_request`` once per operation."""
        metrics = self

        class RequestMetrics(SchemaExtension):
            def on_operation(self) -> Iterator[None]:
                started = time.perf_counter()
                try:
                    yield
                finally:
                    context = self.execution_context
                    outcome = _outcome(context)
                    # A name becomes a label only for a valid operation of a caller with a token: an
                    # anonymous or invalid request cannot take one of the bounded label slots.
                    caller = getattr(context.context, "principal", None)
                    labelled = caller is not None and outcome != "invalid"
                    name = _operation_name(context) if labelled else None
                    metrics.observe_request(name, outcome, time.perf_counter() - started)

        return RequestMetrics

    # --- upstreams -------------------------------------------------------------------------

    def watch(self, connector: Connector) -> None:
        """Report this connector's attempts and breaker changes here (replacing any observer)."""
        connector.observer = self.observe_upstream
        connector.breaker.on_change = self.breaker_changed
        system = connector.system.value
        self.breaker_state.labels(system).set(connector.breaker.state.level)
        self.upstream_in_flight.labels(system).set_function(lambda: connector.in_flight)

    def observe_upstream(
        self, system: System, resource: str, outcome: str, seconds: float, attempt: int
    ) -> None:
        """The connectors' ``AttemptObserver``: count, time, and log each failed attempt."""
        self._child(self.upstream_calls, system.value, resource, outcome).inc()
        if outcome in _LOCAL_REFUSALS:
            if outcome != "circuit_open":  # an open breaker is logged when it opens, not per call
                self.limit_rejections.labels(f"{system.value}.{outcome}").inc()
                upstream_log.info(
                    "upstream call refused",
                    extra={"system": system.value, "resource": resource, "kind": outcome, "attempt": attempt},
                )
            return
        self._child(self.upstream_seconds, system.value, resource).observe(seconds)
        if outcome.isdigit() and int(outcome) < 500 and outcome != "429":
            return  # an answer (2xx, or the caller's 4xx): not a failure of the system
        upstream_log.warning(
            "upstream attempt failed",
            extra={
                "system": system.value,
                "resource": resource,
                "kind": outcome,
                "attempt": attempt,
                "duration_ms": round(seconds * 1000, 1),
            },
        )

    def breaker_changed(self, system: System, state: BreakerState) -> None:
        """The connectors' ``BreakerListener``."""
        self.breaker_state.labels(system.value).set(state.level)
        level = logging.INFO if state is BreakerState.CLOSED else logging.WARNING
        upstream_log.log(
            level, "circuit breaker %s", state.value, extra={"system": system.value, "state": state.value}
        )

    # --- limits and caches -----------------------------------------------------------------

    def watch_shared_limit(self, system: str, degraded: Callable[[], bool]) -> None:
        """``cg_shared_limit_fallback{system}``: 1 while the instance keeps its own share of a
        deployment-wide limit because Redis cannot be reached."""
        self.shared_fallback.labels(system).set_function(lambda: float(degraded()))

    def limit_rejected(self, limit: str) -> None:
        """A request (or part of one) was refused by ``limit`` (a fixed name: ``depth``, ``cost``…)."""
        self.limit_rejections.labels(self._label(limit)).inc()

    def bulk_read(self, roles: Iterable[str]) -> None:
        """One user crossed the bulk-read threshold: counted under its roles (``finance:legal``)."""
        label = ":".join(sorted(roles)) or "none"
        self.bulk_read_alerts.labels(self._roles(label)).inc()

    def cache_result(self, resource: str, result: str) -> None:
        """A cache lookup: ``result`` is ``hit``, ``miss``, ``stale``, …"""
        key = (self._label(resource), self._label(result))
        self._cache_counts[key] = self._cache_counts.get(key, 0) + 1

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, made once (the label values are already bounded)."""
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _CacheCounts(Collector):
    """``cg_cache_total{resource,result}`` from ``Metrics``' plain counts, at scrape time."""

    def __init__(self, counts: dict[tuple[str, str], int]) -> None:
        self.counts = counts

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily("cg_cache", "Cache lookups by result.", labels=["resource", "result"])
        for (resource, result), count in sorted(self.counts.items()):
            family.add_metric([resource, result], count)
        yield family


def _operation_name(context: Any) -> str | None:
    try:
        name = context.operation_name
    except Exception:  # no document (a parse error): no name
        return None
    return name if isinstance(name, str) else None


def _outcome(context: Any) -> str:
    """``ok``; ``partial`` (data and errors); ``error`` (errors, no data); ``invalid`` (refused
    before execution: parse or validation errors)."""
    result = getattr(context, "result", None)
    if result is None:
        return "invalid" if getattr(context, "pre_execution_errors", None) else "error"
    if isinstance(result, PreExecutionError):
        return "invalid"
    if getattr(result, "errors", None):
        return "error" if getattr(result, "data", None) is None else "partial"
    return "ok"


async def metrics_endpoint(request: Request) -> Response:
    """``GET /metrics``: the ``Metrics`` at ``request.app.state.metrics`` in Prometheus text format."""
    metrics: Metrics = request.app.state.metrics
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
