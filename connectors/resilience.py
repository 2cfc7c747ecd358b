"""What keeps one slow or failing system from taking the gateway (or itself) down.

- **Deadline**: a request-scoped instant (``time.monotonic()`` seconds) in a context variable. The
  gateway opens a ``deadline_scope`` per request; every upstream attempt is bounded by the time
  left, retry waits never pass it, and a call that starts with no time left fails at once.
- **Back-off**: full-jitter exponential back-off and ``Retry-After`` parsing for the retry loop in
  ``Connector._request``.
- **CircuitBreaker**: one per system; opens after consecutive failures, fails fast while open,
  lets one probe through after a cool-down.
- **RateLimiter**: an optional calls-per-second bound per system (a spike at the gateway never
  becomes more calls a second than the system is configured to take).

Nothing here knows HTTP details beyond ``Retry-After``; ``connectors.base`` wires it together.
"""

from __future__ import annotations

import contextlib
import enum
import math
import random
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol

from .models import System

__all__ = [
    "AttemptObserver",
    "BreakerListener",
    "BreakerState",
    "CircuitBreaker",
    "RateLimiter",
    "backoff_delay",
    "deadline_scope",
    "get_deadline",
    "parse_retry_after",
    "reset_deadline",
    "set_deadline",
    "time_left",
]

Clock = Callable[[], float]


# --- deadline --------------------------------------------------------------------------------

_DEADLINE: ContextVar[float | None] = ContextVar("customer_graph_deadline", default=None)


def get_deadline() -> float | None:
    """The current request's deadline as a ``time.monotonic()`` instant, or ``None`` (unbounded)."""
    return _DEADLINE.get()


def set_deadline(at: float | None) -> Token[float | None]:
    """Make ``at`` (a ``time.monotonic()`` instant, or ``None``) the deadline of this context and the
    tasks it starts from now on; undo with ``reset_deadline(token)``."""
    return _DEADLINE.set(at)


def reset_deadline(token: Token[float | None]) -> None:
    _DEADLINE.reset(token)


def time_left() -> float | None:
    """Seconds until the deadline (may be ≤ 0), or ``None`` when there is none."""
    at = _DEADLINE.get()
    return None if at is None else at - time.monotonic()


@contextlib.contextmanager
def deadline_scope(seconds: float | None) -> Iterator[float | None]:
    """Bound everything inside to ``seconds`` from now (``None``: no new bound).

    Scopes nest and only ever tighten: an inner scope never outlives the outer deadline. Yields the
    deadline in force (a ``time.monotonic()`` instant, or ``None``).
    """
    outer = _DEADLINE.get()
    at = outer
    if seconds is not None:
        mine = time.monotonic() + seconds
        at = mine if outer is None else min(outer, mine)
    token = _DEADLINE.set(at)
    try:
        yield at
    finally:
        _DEADLINE.reset(token)


# --- back-off --------------------------------------------------------------------------------


def backoff_delay(attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random) -> float:
    """Full jitter: uniform in ``[0, min(cap, base · 2^(attempt-1)))`` after failed attempt ``attempt``
    (from 1)."""
    return rand() * min(cap, base * (1 << min(attempt - 1, 30)))


def parse_retry_after(value: str | None, now: Callable[[], datetime] | None = None) -> float | None:
    """Seconds from a ``Retry-After`` value (delta-seconds or an HTTP date), or ``None`` when it is
    absent or unusable (negative, NaN, infinite, garbage)."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = max(0.0, (when - (now or _utcnow)()).total_seconds())
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


def _utcnow() -> datetime:
    return datetime.now(UTC)


# --- hooks -----------------------------------------------------------------------------------


class AttemptObserver(Protocol):
    """Told about every attempt at an upstream call, and every call refused before it went out.

    ``resource`` is a short fixed name for the endpoint (``accounts``, ``tickets.search``, …), never
    a URL. ``outcome`` is the HTTP status as text (``"200"``, ``"503"``) or, when no answer came, a
    kind: ``timeout``, ``unreachable``, ``bad_response`` (the exchange broke), or a refusal that
    never reached the system: ``circuit_open``, ``deadline`` (no time left), ``queue_timeout`` (no
    in-flight slot before the deadline), ``throttled`` (no rate token before the deadline).
    ``seconds`` is how long the attempt (or the wait) took; ``attempt`` counts from 1 (0 for a call
    the breaker refused).
    """

    def __call__(self, system: System, resource: str, outcome: str, seconds: float, attempt: int) -> None: ...


BreakerListener = Callable[[System, "BreakerState"], None]


# --- circuit breaker -------------------------------------------------------------------------


class BreakerState(enum.Enum):
    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"

    @property
    def level(self) -> int:
        """0 closed, 1 half-open, 2 open (the ``cg_breaker_state`` gauge)."""
        return _LEVEL[self]


_LEVEL = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}

# What ``CircuitBreaker.admit`` answers.
REJECT, PASS, PROBE = 0, 1, 2


class CircuitBreaker:
    """Closed → open after ``failures`` consecutive failed calls; open → (after ``cooldown`` seconds)
    half-open, which lets exactly one probe call through: its success closes, its failure re-opens.

    Single event loop, no locks: every method runs to completion without awaiting. Only verdicts of
    calls admitted while closed (or of the probe) count; a verdict of a call that started before the
    breaker opened is ignored unless the breaker is closed.
    """

    def __init__(
        self,
        system: System,
        *,
        failures: int = 5,
        cooldown: float = 10.0,
        clock: Clock = time.monotonic,
        on_change: BreakerListener | None = None,
    ) -> None:
        if failures < 1:
            raise ValueError("failures must be at least 1")
        if cooldown < 0:
            raise ValueError("cooldown must not be negative")
        self.system = system
        self.threshold = failures
        self.cooldown = cooldown
        self.on_change = on_change
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._opened_at = 0.0
        self._probing = False
        self.consecutive_failures = 0
        self.times_opened = 0
        self.rejected = 0

    @property
    def state(self) -> BreakerState:
        """The state now (an open breaker whose cool-down is over reads ``half_open``)."""
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.cooldown:
            return BreakerState.HALF_OPEN
        return self._state

    @property
    def closed(self) -> bool:
        return self._state is BreakerState.CLOSED

    def admit(self) -> int:
        """``PASS`` (go ahead), ``PROBE`` (go ahead: you are the half-open probe, report back) or
        ``REJECT`` (fail fast)."""
        state = self._state
        if state is BreakerState.CLOSED:
            return PASS
        if state is BreakerState.OPEN:
            if self._clock() - self._opened_at < self.cooldown:
                self.rejected += 1
                return REJECT
            self._set(BreakerState.HALF_OPEN)
        if self._probing:
            self.rejected += 1
            return REJECT
        self._probing = True
        return PROBE

    def success(self, probe: bool = False) -> None:
        if probe:
            self._probing = False
            self.consecutive_failures = 0
            self._set(BreakerState.CLOSED)
        elif self._state is BreakerState.CLOSED:
            self.consecutive_failures = 0

    def failure(self, probe: bool = False) -> None:
        if probe:
            self._probing = False
            self._open()
        elif self._state is BreakerState.CLOSED:
            self.consecutive_failures += 1
            if self.consecutive_failures >= self.threshold:
                self._open()

    def abandon(self, probe: bool = False) -> None:
        """A call ended without a verdict (cancelled, refused locally): a probe frees its place so
        the next call probes."""
        if probe:
            self._probing = False

    def snapshot(self) -> dict[str, object]:
        return {
            "state": self.state.value,
            "consecutive_failures": self.consecutive_failures,
            "times_opened": self.times_opened,
            "rejected": self.rejected,
        }

    def _open(self) -> None:
        self._opened_at = self._clock()
        self.times_opened += 1
        self._set(BreakerState.OPEN)

    def _set(self, state: BreakerState) -> None:
        if state is self._state:
            return
        self._state = state
        if self.on_change is not None:
            self.on_change(self.system, state)


# --- rate limiter ----------------------------------------------------------------------------


class RateLimiter:
    """At most ``rate`` calls a second on average, with bursts of up to ``burst`` (GCRA).

    ``reserve(max_wait)`` books the next slot and says how long to wait for it, or refuses (books
    nothing) when that wait would exceed ``max_wait``.
    """

    def __init__(self, rate: float, burst: int = 1, clock: Clock = time.monotonic) -> None:
        if not rate > 0:
            raise ValueError("rate must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.rate = rate
        self._interval = 1.0 / rate
        self._tolerance = (burst - 1) * self._interval
        self._clock = clock
        self._tat = 0.0  # theoretical arrival time of the next call

    def reserve(self, max_wait: float | None = None) -> float | None:
        now = self._clock()
        tat = self._tat if self._tat > now else now
        wait = tat - self._tolerance - now
        if wait <= 0:
            wait = 0.0
        elif max_wait is not None and wait > max_wait:
            return None
        self._tat = tat + self._interval
        return wait


class SharedSlots(Protocol):
    """A bound on calls in flight shared by every process of a deployment (the gateway implements it
    on Redis: ``gateway/shared_limits.py``). ``acquire`` waits at most ``timeout`` seconds (``None``:
    as long as it takes) and returns a lease, or ``None`` when none came in time; ``release`` gives
    the lease back without waiting."""

    async def acquire(self, timeout: float | None) -> str | None: ...

    def release(self, lease: str) -> None: ...


class SharedRate(Protocol):
    """A call rate shared by every process of a deployment (``gateway/shared_limits.py``):
    ``reserve(max_wait)`` books the next call's slot and says how long to wait for it, or refuses
    (``None``, nothing booked) when that would exceed ``max_wait`` — ``RateLimiter.reserve``'s contract."""

    async def reserve(self, max_wait: float | None) -> float | None: ...
