"""What every connector shares: one pooled client, one way out, one error mapping.

Every upstream call goes through ``Connector._request``, which puts it through, in order:

1. the system's **circuit breaker** (open → ``UpstreamUnavailable(system, "circuit_open")`` at once);
2. the request's **deadline** (``connectors.resilience.deadline_scope``; none left → ``timeout`` at
   once, without calling);
3. the optional **rate limit** and the **in-flight bound** (waiting for either counts against the
   deadline, never past it; a call queued for the bound waits with its request built, and the call
   that frees a slot starts it at once: ``Slots``);
4. the send, bounded by ``min(per-call timeout, time left)``;
5. the **retry** decision: reads (and writes carrying their idempotency key) are tried again, up to
   ``max_attempts`` in all, on connection errors, timeouts, 500/502/503/504, and 429 with a usable
   ``Retry-After``; waits are full-jitter exponential back-off, or ``Retry-After`` when the answer
   gives one and it fits both the deadline and ``max_retry_wait``.

**The send** builds one ``httpx.Request`` (the URL parsed once, the system's fixed headers already
merged) and hands it to the connector's ``httpx`` transport — the client's per-call work (base-URL
and parameter merging, auth flow, redirects, cookies, event hooks) does nothing for these systems
and cost about a quarter of the CPU of a call (measured). Tests pass any ``httpx`` transport
(``MockTransport``) as before.

Every attempt (and every local refusal) is reported to ``observer`` with a fixed resource name and
a status or kind, never a URL. Subclasses say which answers are worth retrying (``_retryable``) and
how to find field errors in a refusal (``_invalid_fields``).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypedDict, TypeVar
from urllib.parse import urlencode

import httpx
import orjson

from .errors import UpstreamConflict, UpstreamError, UpstreamInvalid, UpstreamNotFound, UpstreamUnavailable
from .models import System
from .resilience import (
    _DEADLINE,
    PROBE,
    REJECT,
    AttemptObserver,
    BreakerListener,
    CircuitBreaker,
    RateLimiter,
    SharedRate,
    SharedSlots,
    backoff_delay,
    deadline_scope,
    parse_retry_after,
)
from .transport import PooledTransport, pooled_transport

__all__ = ["Connector", "ConnectorOptions", "basic_auth", "in_chunks", "unique"]

T = TypeVar("T")

Params = Mapping[str, str | int]
Headers = Mapping[str, str]

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

log = logging.getLogger("customer_graph.upstream")

DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_IN_FLIGHT = 16
DEFAULT_MAX_CONNECTIONS = DEFAULT_MAX_IN_FLIGHT
DEFAULT_ATTEMPTS = 3
DEFAULT_MAX_RETRY_WAIT = 2.0
DEFAULT_BACKOFF_BASE = 0.05
DEFAULT_BACKOFF_CAP = 1.0
DEFAULT_BREAKER_FAILURES = 5
DEFAULT_BREAKER_COOLDOWN = 10.0
# A call the gateway gave up on keeps its in-flight slot until the system answers, at most this long
# (seconds); then its connection is closed and the slot freed.
ABANDONED_LIMIT = 30.0

# An attempt is not started after a retry wait unless at least this much time is left for it.
MIN_ATTEMPT_TIME = 0.05
# A timeout counts against the system only when the attempt had at least this long (or its full
# per-call timeout): one cut short by a nearly spent request deadline says nothing about it.
BLAME_FLOOR = 1.0

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})

# What a mapping function raises on JSON that does not have the contract's shape.
_SHAPE_ERRORS = (KeyError, IndexError, TypeError, ValueError, AttributeError, ArithmeticError)

_STATUS_TEXT = {code: str(code) for code in range(100, 600)}

_clock = time.monotonic


class ConnectorOptions(TypedDict, total=False):
    """The keyword arguments every connector takes (see ``Connector.__init__``)."""

    timeout: float
    max_connections: int | None
    max_in_flight: int
    max_rate: float | None
    max_attempts: int
    max_retry_wait: float
    backoff_base: float
    backoff_cap: float
    breaker_failures: int
    breaker_cooldown: float
    observer: AttemptObserver | None
    on_breaker_change: BreakerListener | None
    transport: httpx.AsyncBaseTransport | None


class Connector:
    """One departmental system behind one pooled httpx transport (``connectors/transport.py``)."""

    system: ClassVar[System]
    # The header whose presence makes a write safe to repeat (the system answers a repeat with the
    # first answer); ``None``: no write is ever repeated.
    idempotency_header: ClassVar[str | None] = None

    def __init__(
        self,
        base_url: str,
        *,
        headers: Headers | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_connections: int | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        max_rate: float | None = None,
        max_attempts: int = DEFAULT_ATTEMPTS,
        max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT,
        backoff_base: float = DEFAULT_BACKOFF_BASE,
        backoff_cap: float = DEFAULT_BACKOFF_CAP,
        breaker_failures: int = DEFAULT_BREAKER_FAILURES,
        breaker_cooldown: float = DEFAULT_BREAKER_COOLDOWN,
        observer: AttemptObserver | None = None,
        on_breaker_change: BreakerListener | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """
        ``timeout``: seconds per attempt (also bounded by the request deadline).
        ``max_in_flight``: calls out to the system at once, however many requests share the
        connector; ``max_connections``: the pool size (default ``max_in_flight``).
        ``max_rate``: calls a second at most (``None``: no rate bound).
        ``max_attempts``: tries per call in all (reads, and writes with their idempotency key).
        ``max_retry_wait``: seconds one call may spend sleeping between attempts, in all.
        ``backoff_base`` / ``backoff_cap``: the full-jitter back-off's first ceiling and its cap.
        ``breaker_failures`` / ``breaker_cooldown``: consecutive failed calls that open the
        breaker, and seconds it stays open before one probe.
        ``observer``: told about every attempt (``AttemptObserver``); ``on_breaker_change``: told
        each breaker state change.
        """
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if max_retry_wait < 0 or backoff_base < 0 or backoff_cap < 0:
            raise ValueError("retry waits must not be negative")
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._max_retry_wait = max_retry_wait
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self._slots = Slots(max_in_flight)
        # the deployment-wide bound, when the gateway shares one (gateway/shared_limits.py): a call
        # holds a lease from it as well as a slot of this process
        self.shared_slots: SharedSlots | None = None
        self.shared_rate: SharedRate | None = None  # likewise the system's call rate
        self._rate = None if max_rate is None else RateLimiter(max_rate)
        self.observer = observer
        self.tracer: Tracer | None = None  # set by the gateway when tracing is on (gateway/tracing.py)
        self.breaker = CircuitBreaker(
            self.system, failures=breaker_failures, cooldown=breaker_cooldown, on_change=on_breaker_change
        )
        pool = max_in_flight if max_connections is None else max_connections
        self._transport = transport or pooled_transport(connections=pool, ssl_context=_tls_context())
        self._base_url = str(httpx.URL(base_url)).rstrip("/")
        # the departments see who calls them (and can rate-limit or trace it)
        self._headers: dict[str, str] = {
            "Accept": "application/json",
            "User-Agent": "customer-graph",
            **(headers or {}),
        }

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.aclose()

    async def health(self, timeout: float | None = None) -> bool:
        """``GET /health`` answered ``{"status": "ok"}`` within ``timeout`` (default: the per-call
        timeout); one attempt, never raises. An open breaker reads as unhealthy without a call."""
        with deadline_scope(self._timeout if timeout is None else timeout):
            try:
                return await self._call("GET", "/health", _is_ok, resource="health", retry=False)
            except UpstreamError:
                return False

    def status(self) -> dict[str, object]:
        """What an operator wants to see: the breaker and the in-flight bound (no secrets)."""
        return {
            "system": self.system.value,
            "breaker": self.breaker.snapshot(),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
        }

    # --- the one way out -------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        parse: Callable[[Any], T],
        *,
        resource: str,
        params: Params | None = None,
        json: Any = None,
        headers: Headers | None = None,
        timeout: float | None = None,
        retry: bool | None = None,
    ) -> T:
        """``_request``, then the JSON body through ``parse``; a body of the wrong shape is
        ``bad_response``."""
        response = await self._request(
            method,
            path,
            resource=resource,
            params=params,
            json=json,
            headers=headers,
            timeout=timeout,
            retry=retry,
        )
        try:
            return parse(orjson.loads(response.content))
        except _SHAPE_ERRORS:
            log.warning(
                "upstream answer of the wrong shape",
                extra={"system": self.system.value, "resource": resource, "kind": "bad_response"},
            )
            raise UpstreamUnavailable(self.system, "bad_response") from None

    async def _request(
        self,
        method: str,
        path: str,
        *,
        resource: str,
        params: Params | None = None,
        json: Any = None,
        headers: Headers | None = None,
        timeout: float | None = None,
        retry: bool | None = None,
    ) -> httpx.Response:
        """Send until a 2xx answer or a failure not worth retrying; raise that as an UpstreamError.

        ``resource``: the endpoint's fixed short name for the observer. ``retry``: whether the call
        may be repeated; ``None`` decides by the method (GET/HEAD/OPTIONS) or, for a write, by the
        presence of the system's idempotency header.
        """
        breaker = self.breaker
        admitted = breaker.admit()
        if admitted == REJECT:
            self._observe(resource, "circuit_open", 0.0, 0)
            raise UpstreamUnavailable(self.system, "circuit_open")
        probe = admitted == PROBE
        if retry is None:
            retry = method in SAFE_METHODS or self._has_idempotency_key(headers)
        verdict: bool | None = None  # True: the system answered; False: the system failed
        try:
            response, verdict = await self._attempts(
                method,
                path,
                resource,
                params,
                json,
                headers,
                self._timeout if timeout is None else timeout,
                self._max_attempts if retry else 1,
                probe,
            )
            return response
        except _Failed as failed:
            verdict = failed.verdict
            raise failed.error from None
        finally:
            if verdict is True:
                breaker.success(probe)
            elif verdict is False:
                breaker.failure(probe)
            else:
                breaker.abandon(probe)

    async def _attempts(
        self,
        method: str,
        path: str,
        resource: str,
        params: Params | None,
        json: Any,
        headers: Headers | None,
        per_call: float,
        attempts: int,
        probe: bool,
    ) -> tuple[httpx.Response, bool]:
        """The retry loop: the 2xx answer and ``True``, or ``_Failed`` with the error to raise and
        the breaker's verdict on it."""
        slots = self._slots
        attempt = 0
        waited = 0.0
        # The last attempt's error and verdict: what a call that cannot go again ends with.
        error: UpstreamError | None = None
        verdict: bool | None = None
        while True:
            attempt += 1
            deadline = _DEADLINE.get()
            started = _clock()
            if deadline is not None and deadline - started <= 0:
                self._observe(resource, "deadline", 0.0, attempt)
                raise self._out_of_time(error, verdict)

            # Wait for a rate token and an in-flight slot, never past the deadline.
            limited = self._rate is not None or self.shared_rate is not None
            if limited and not await self._throttle(resource, attempt, deadline, started):
                raise self._out_of_time(error, verdict)
            response: httpx.Response | None = None
            lost: UpstreamUnavailable | None = None  # the exchange itself failed
            if (
                slots.locked()
                and self.tracer is None
                and self.shared_slots is None
                and isinstance(self._transport, PooledTransport)
            ):
                # Wait with the request built: the call that frees a slot starts this one at once,
                # in the protocol callback that read its last byte (``Slots``, ``_start_queued``).
                try:
                    request = self._build(method, path, params, json, headers)
                except httpx.InvalidURL:
                    self._observe(resource, "bad_request", 0.0, attempt)
                    raise _Failed(UpstreamUnavailable(self.system, "bad_request"), None) from None
                turn = slots.wait(functools.partial(self._start_queued, request, deadline, per_call))
                try:
                    if deadline is None:
                        await turn
                    else:
                        async with asyncio.timeout(deadline - _clock()):
                            await turn
                except TimeoutError:
                    if turn.cancelled() or not turn.done():
                        self._observe(resource, "queue_timeout", _clock() - started, attempt)
                        raise self._out_of_time(error, verdict) from None
                except BaseException:
                    _abandon(turn)  # cancelled: an exchange already started goes on by itself
                    raise
                started_call = turn.result()
                if started_call is None:  # its turn came with no time left
                    self._observe(resource, "deadline", 0.0, attempt)
                    raise self._out_of_time(error, verdict)
                exchange, sent, budget = started_call
                try:
                    response = await self._answer(exchange)
                except UpstreamUnavailable as exc:
                    lost = exc
                    self._observe(resource, exc.kind, _clock() - sent, attempt)
            else:
                if slots.locked():
                    try:
                        if deadline is None:
                            await slots.acquire()
                        else:
                            async with asyncio.timeout(deadline - _clock()):
                                await slots.acquire()
                    except TimeoutError:
                        self._observe(resource, "queue_timeout", _clock() - started, attempt)
                        raise self._out_of_time(error, verdict) from None
                else:
                    slots.take()
                lease: str | None = None
                if self.shared_slots is not None:
                    left = None if deadline is None else deadline - _clock()
                    lease = await self.shared_slots.acquire(left)
                    if lease is None:
                        slots.release()
                        self._observe(resource, "queue_timeout", _clock() - started, attempt)
                        raise self._out_of_time(error, verdict)

                # One attempt, bounded by the per-call timeout and the time left. A caller that gives
                # up (timeout, deadline, cancellation) does not free the slot while the system still
                # works on the call: the exchange goes on in the background, holding the slot, until
                # the system answers or ABANDONED_LIMIT closes the connection, so the system never
                # sees more than the bound in flight. The slot is freed by ``_exchange`` the moment
                # the exchange ends.
                self.in_flight += 1
                release = functools.partial(self._release, lease)
                sent = _clock()
                budget = per_call if deadline is None else min(per_call, deadline - sent)
                if budget <= 0:
                    release()
                    self._observe(resource, "deadline", 0.0, attempt)
                    raise self._out_of_time(error, verdict)
                try:
                    if self.tracer is None:
                        response = await self._exchange(
                            method, path, params, json, headers, budget, max(budget, ABANDONED_LIMIT), release
                        )
                    else:
                        response = await self._traced_exchange(
                            resource, attempt, method, path, params, json, headers, budget, release
                        )
                except UpstreamUnavailable as exc:
                    lost = exc
                    self._observe(resource, exc.kind, _clock() - sent, attempt)

            # The verdict, and whether (and when) to go again.
            delay: float | None = None
            if response is not None:
                status = response.status_code
                self._observe(resource, _STATUS_TEXT.get(status) or str(status), _clock() - sent, attempt)
                if 200 <= status < 300:
                    return response, True
                error = self._error(response)
                verdict = status < 500 and status != 429
                if attempt >= attempts or not self._retryable(response):
                    raise _Failed(error, verdict)
                retry_after = parse_retry_after(response.headers.get("retry-after"))
                if retry_after is not None:
                    if retry_after > self._max_retry_wait - waited or (
                        deadline is not None and retry_after + MIN_ATTEMPT_TIME > deadline - _clock()
                    ):
                        raise _Failed(error, verdict)  # it does not fit: give up now, not later
                    delay = retry_after
                elif status == 429:  # a rate limit with no usable wait: hammering it helps nobody
                    raise _Failed(error, verdict)
            else:
                assert lost is not None
                error = lost
                kind = lost.kind
                if kind == "timeout":
                    # A timeout cut short by the request deadline says little about the system.
                    verdict = None if budget < min(per_call, BLAME_FLOOR) else False
                else:
                    verdict = False if kind == "unreachable" else None
                if attempt >= attempts or kind not in ("timeout", "unreachable"):
                    raise _Failed(error, verdict)

            if not probe and not self.breaker.closed:
                raise _Failed(error, verdict)  # it opened meanwhile: stop adding load
            if delay is None:
                delay = backoff_delay(attempt, self._backoff_base, self._backoff_cap)
                delay = min(delay, self._max_retry_wait - waited)
                if deadline is not None:
                    spare = deadline - _clock() - MIN_ATTEMPT_TIME
                    if spare < 0:
                        raise _Failed(error, verdict)
                    delay = min(delay, spare)
            if delay > 0:
                await asyncio.sleep(delay)
                waited += delay

    async def _throttle(self, resource: str, attempt: int, deadline: float | None, started: float) -> bool:
        """Wait for a rate token; ``False`` (and no wait) when none comes before the deadline."""
        max_wait = None if deadline is None else deadline - started
        if self.shared_rate is not None:
            wait = await self.shared_rate.reserve(max_wait)
        else:
            assert self._rate is not None
            wait = self._rate.reserve(max_wait)
        if wait is None:
            self._observe(resource, "throttled", 0.0, attempt)
            return False
        if wait > 0:
            await asyncio.sleep(wait)
        return True

    def _out_of_time(self, error: UpstreamError | None, verdict: bool | None) -> _Failed:
        """No time left for (another) attempt: the last attempt's failure, else a timeout."""
        if error is None:
            return _Failed(UpstreamUnavailable(self.system, "timeout"), None)
        return _Failed(error, verdict)

    def _release(self, lease: str | None) -> None:
        """An attempt has ended at the system (answered, failed, or its connection closed)."""
        self.in_flight -= 1
        self._slots.release()
        if lease is not None and self.shared_slots is not None:
            self.shared_slots.release(lease)

    def _build(
        self, method: str, path: str, params: Params | None, json: Any, headers: Headers | None
    ) -> httpx.Request:
        url = self._base_url + path
        if params:
            url += "?" + urlencode(params)
        return httpx.Request(
            method, url, headers={**self._headers, **headers} if headers else self._headers, json=json
        )

    async def _exchange(
        self,
        method: str,
        path: str,
        params: Params | None,
        json: Any,
        headers: Headers | None,
        budget: float,
        limit: float,
        release: Callable[[], None],
    ) -> httpx.Response:
        """One exchange: the answer within ``budget`` seconds, or ``UpstreamUnavailable``.

        ``release`` runs exactly once, when the exchange is over at the system: the answer's last
        byte in, or after at most ``limit`` seconds (the connection is then closed), or at once when
        nothing was sent. On the connectors' own transport that is inside the protocol callback
        that read the last byte (``connectors/transport.py``), with one timer for the whole
        exchange; any other httpx transport (tests' ``MockTransport``) runs in a task of its own
        the caller stops waiting for after ``budget``.
        """
        try:
            request = self._build(method, path, params, json, headers)
        except httpx.InvalidURL:
            release()
            raise UpstreamUnavailable(self.system, "bad_request") from None
        except BaseException:
            release()
            raise
        transport = self._transport
        if isinstance(transport, PooledTransport):
            return await self._answer(transport.exchange(request, wait=budget, hold=limit, on_end=release))
        exchange = asyncio.ensure_future(self._send(request, limit))
        exchange.add_done_callback(functools.partial(_ended, release))
        return await self._answer(asyncio.shield(exchange), budget)

    def _start_queued(
        self,
        request: httpx.Request,
        deadline: float | None,
        per_call: float,
        turn: asyncio.Future[tuple[asyncio.Future[httpx.Response], float, float] | None],
    ) -> bool:
        """A waiting call's turn (``Slots.release``, in the callback that freed the slot): start its
        exchange now and hand it over; ``False`` (the slot goes on) when its deadline has passed."""
        sent = _clock()
        budget = per_call if deadline is None else min(per_call, deadline - sent)
        if budget <= 0:
            turn.set_result(None)
            return False
        self.in_flight += 1
        assert isinstance(self._transport, PooledTransport)
        release = functools.partial(self._release, None)
        exchange = self._transport.exchange(
            request, wait=budget, hold=max(budget, ABANDONED_LIMIT), on_end=release
        )
        turn.set_result((exchange, sent, budget))
        return True

    async def _answer(self, exchange: Awaitable[httpx.Response], wait: float | None = None) -> httpx.Response:
        """The exchange's answer (within ``wait`` seconds when given), or ``UpstreamUnavailable``."""
        try:
            if wait is None:
                return await exchange
            async with asyncio.timeout(wait):
                return await exchange
        except (TimeoutError, httpx.TimeoutException):
            raise UpstreamUnavailable(self.system, "timeout") from None
        except httpx.LocalProtocolError:
            # our request could not be sent as asked (a URL or header the protocol does not allow):
            # the caller's input, never the system's fault, so it does not count toward the breaker
            raise UpstreamUnavailable(self.system, "bad_request") from None
        except httpx.TransportError:
            raise UpstreamUnavailable(self.system, "unreachable") from None
        except httpx.RequestError:
            raise UpstreamUnavailable(self.system, "bad_response") from None
        except httpx.InvalidURL:
            raise UpstreamUnavailable(self.system, "bad_request") from None

    async def _send(self, request: httpx.Request, timeout: float) -> httpx.Response:
        """One exchange through any httpx transport, bounded by ``timeout``."""
        request.extensions = {
            "timeout": {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
        }
        async with asyncio.timeout(timeout):
            response = await self._transport.handle_async_request(request)
            try:
                await response.aread()
            finally:
                await response.aclose()
        response.request = request
        return response

    async def _traced_exchange(
        self,
        resource: str,
        attempt: int,
        method: str,
        path: str,
        params: Params | None,
        json: Any,
        headers: Headers | None,
        budget: float,
        release: Callable[[], None],
    ) -> httpx.Response:
        """``_exchange`` in a client span, with the trace context propagated to the system
        (``traceparent``). The span names the system and the endpoint's fixed name, never a URL."""
        from opentelemetry.propagate import inject
        from opentelemetry.trace import SpanKind, Status, StatusCode

        assert self.tracer is not None
        name = f"{self.system.value} {resource}"
        attributes = {"cg.system": self.system.value, "cg.resource": resource, "cg.attempt": attempt}
        with self.tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes) as span:
            carrier = dict(headers or {})
            inject(carrier)
            try:
                response = await self._exchange(
                    method, path, params, json, carrier, budget, max(budget, ABANDONED_LIMIT), release
                )
            except UpstreamUnavailable as exc:
                span.set_status(Status(StatusCode.ERROR, exc.kind))
                raise
            span.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 500:
                span.set_status(Status(StatusCode.ERROR))
            return response

    def _observe(self, resource: str, outcome: str, seconds: float, attempt: int) -> None:
        observer = self.observer
        if observer is None:
            return
        try:
            observer(self.system, resource, outcome, seconds, attempt)
        except Exception:  # a broken observer must never break a call
            log.exception("upstream observer failed", extra={"system": self.system.value})

    # --- hooks -----------------------------------------------------------------------------

    def _has_idempotency_key(self, headers: Headers | None) -> bool:
        name = self.idempotency_header
        return bool(name and headers and headers.get(name))

    def _retryable(self, response: httpx.Response) -> bool:
        """Whether this failed answer is worth another attempt (when the call may be repeated)."""
        return response.status_code in RETRYABLE_STATUSES

    def _invalid_fields(self, response: httpx.Response) -> dict[str, str]:
        """Field → reason, from a 400/422 body that names them."""
        return {}

    def _error(self, response: httpx.Response) -> UpstreamError:
        """The error for a non-2xx answer. It names the system and a short word, nothing else."""
        status = response.status_code
        if status in (401, 403):
            return UpstreamUnavailable(self.system, "unauthorized")
        if status == 404:
            return UpstreamNotFound(self.system, "not_found")
        if status == 409:
            return UpstreamConflict(self.system, "conflict")
        if status == 412:
            return UpstreamConflict(self.system, "precondition_failed")
        if status in (400, 422):
            reason = "invalid" if status == 422 else "bad_request"
            return UpstreamInvalid(self.system, reason, self._invalid_fields(response))
        if status == 429:
            return UpstreamUnavailable(self.system, "rate_limited")
        if status == 503:
            return UpstreamUnavailable(self.system, "overloaded")
        if status >= 500:
            return UpstreamUnavailable(self.system, "error")
        return UpstreamUnavailable(self.system, "bad_response")


_Start = Callable[[asyncio.Future[Any]], bool]


class Slots:
    """A connector's in-flight bound: ``free`` slots, and the calls waiting for one, first come first
    served. A freed slot goes straight to the first waiter still waiting: a plain waiter (``acquire``)
    is woken and takes it on the loop's next turn; a waiter that left a ``start`` callback is started
    right there, inside ``release`` — for the connectors, inside the protocol callback that read the
    last byte of the call that held the slot, so a queued register call is on the wire without
    another turn of the event loop (under S3 each turn holds a slot idle while other requests' work
    runs). ``start(turn)`` resolves ``turn`` itself and says whether it used the slot."""

    def __init__(self, size: int) -> None:
        self.free = size
        self._waiting: deque[tuple[asyncio.Future[Any], _Start | None]] = deque()

    def locked(self) -> bool:
        return self.free <= 0

    def take(self) -> None:
        """Take a free slot (``locked()`` was false)."""
        assert self.free > 0
        self.free -= 1

    def wait(self, start: _Start | None = None) -> asyncio.Future[Any]:
        """A place in the queue: the future is resolved when the slot is this waiter's."""
        turn: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((turn, start))
        return turn

    async def acquire(self) -> None:
        if self.free > 0:
            self.free -= 1
            return
        turn = self.wait()
        try:
            await turn
        except BaseException:
            if turn.done() and not turn.cancelled():
                self.release()  # it was ours already: pass it on
            raise

    def release(self) -> None:
        waiting = self._waiting
        while waiting:
            turn, start = waiting.popleft()
            if turn.done():  # gave up waiting
                continue
            if start is None:
                turn.set_result(None)
                return
            try:
                used = start(turn)
            except BaseException as exc:  # never into the protocol callback that freed the slot
                if not turn.done():
                    turn.set_exception(exc)
                used = False
            if used:
                return
        self.free += 1


def _abandon(turn: asyncio.Future[Any]) -> None:
    """A waiter went away after its turn came: nobody will read its exchange's outcome."""
    if turn.done() and not turn.cancelled() and turn.exception() is None and turn.result() is not None:
        turn.result()[0].add_done_callback(_retrieved)


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _ended(release: Callable[[], None], exchange: asyncio.Future[httpx.Response]) -> None:
    """A task-run exchange is over: free its slot; a failure nobody waits for any more is no news."""
    release()
    if not exchange.cancelled():
        exchange.exception()


class _Failed(Exception):
    """Inside ``_request`` only: the error to raise, and the breaker's verdict on it."""

    def __init__(self, error: UpstreamError, verdict: bool | None) -> None:
        self.error = error
        self.verdict = verdict


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context for every connector of the process (loading the CA bundle takes
    hundreds of milliseconds; each httpx transport would otherwise load it again)."""
    return httpx.create_ssl_context()


def basic_auth(user: str, password: str) -> str:
    """The ``Authorization`` value of HTTP Basic authentication (RFC 7617, UTF-8)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _is_ok(body: Any) -> bool:
    return isinstance(body, dict) and body.get("status") == "ok"


def unique(keys: Iterable[str]) -> list[str]:
    """The keys without blanks and repeats, in first-seen order."""
    return [key for key in dict.fromkeys(keys) if key]


async def in_chunks(
    keys: Sequence[str], size: int, fetch: Callable[[list[str]], Awaitable[list[T]]]
) -> list[T]:
    """``fetch`` each run of at most ``size`` keys, all at once; the results joined in key order.

    On the first failure the other fetches are cancelled and that failure is raised.
    """
    batches = [list(keys[i : i + size]) for i in range(0, len(keys), size)]
    if len(batches) <= 1:
        return await fetch(batches[0]) if batches else []
    tasks = [asyncio.ensure_future(fetch(batch)) for batch in batches]
    try:
        results = await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        raise
    return [item for result in results for item in result]
