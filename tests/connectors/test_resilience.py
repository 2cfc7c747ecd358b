"""Deadlines, retries, the circuit breaker, the in-flight bound and the observer hook."""

import asyncio
import itertools
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from connectors import (
    ContractsConnector,
    SalesConnector,
    SupportConnector,
    UpstreamConflict,
    UpstreamInvalid,
    UpstreamNotFound,
    UpstreamUnavailable,
)
from connectors.base import Connector
from connectors.models import System
from connectors.resilience import (
    BreakerState,
    CircuitBreaker,
    RateLimiter,
    backoff_delay,
    deadline_scope,
    get_deadline,
    parse_retry_after,
    time_left,
)
from connectors.transport import PooledTransport
from tests.connectors.fakes import Handler, Recorder, raw_account, raw_contract, raw_ticket

EPSILON = 0.15  # scheduling slack on a busy CI machine


def sales(handler: Handler, **options: Any) -> tuple[SalesConnector, Recorder]:
    recorder = Recorder(handler)
    return SalesConnector("http://sales.internal", "key", transport=recorder.transport, **options), recorder


def support(handler: Handler, **options: Any) -> tuple[SupportConnector, Recorder]:
    recorder = Recorder(handler)
    return SupportConnector(
        "http://helpdesk.internal", "tok", transport=recorder.transport, **options
    ), recorder


def contracts(handler: Handler, **options: Any) -> tuple[ContractsConnector, Recorder]:
    recorder = Recorder(handler)
    connector = ContractsConnector(
        "http://register.internal", "u", "p", transport=recorder.transport, **options
    )
    return connector, recorder


def sequence(*responses: httpx.Response | type[Exception]) -> Handler:
    """Answer each request with the next of ``responses``; an exception class is raised instead."""
    queue = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        item = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(item, type):
            raise item("boom")
        return item

    return handler


async def hang(request: httpx.Request) -> httpx.Response:
    await asyncio.Event().wait()  # never answers (the demo's ``hang`` fault)
    raise AssertionError("unreachable")


ACCOUNTS = httpx.Response(200, json={"data": [raw_account()]})
ACCOUNT = httpx.Response(200, json=raw_account())


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Observed:
    """An AttemptObserver that keeps what it is told."""

    def __init__(self) -> None:
        self.calls: list[tuple[System, str, str, int]] = []

    def __call__(self, system: System, resource: str, outcome: str, seconds: float, attempt: int) -> None:
        assert seconds >= 0
        self.calls.append((system, resource, outcome, attempt))


# --- the deadline ----------------------------------------------------------------------------


def test_deadline_scope_sets_nests_and_restores() -> None:
    assert get_deadline() is None and time_left() is None
    with deadline_scope(5) as outer:
        assert outer is not None
        left = time_left()
        assert left is not None and 4.9 < left <= 5
        with deadline_scope(60) as inner:  # an inner scope never outlives the outer one
            assert inner == outer
        with deadline_scope(1) as inner:
            assert inner is not None and inner < outer
        with deadline_scope(None) as inner:
            assert inner == outer
        assert get_deadline() == outer
    assert get_deadline() is None


@pytest.mark.parametrize("system", ["sales", "support", "contracts"])
async def test_deadline_bounds_a_hanging_system(system: str) -> None:
    build = {"sales": sales, "support": support, "contracts": contracts}[system]
    connector, recorder = build(hang, timeout=30)
    calls = {
        "sales": lambda c: c.accounts(["A1"]),
        "support": lambda c: c.tickets(["a@x.cn"]),
        "contracts": lambda c: c.contracts("91310115MA1K4Q2X3L"),
    }
    async with connector:
        started = time.monotonic()
        with deadline_scope(0.3), pytest.raises(UpstreamUnavailable) as caught:
            await calls[system](connector)
        elapsed = time.monotonic() - started
    assert caught.value.kind == "timeout"
    assert 0.25 <= elapsed < 0.3 + EPSILON
    assert len(recorder.requests) == 1  # nothing left to retry with


async def test_a_request_of_many_calls_is_bounded_as_a_whole() -> None:
    connector, recorder = sales(hang, timeout=30)
    async with connector:
        started = time.monotonic()
        with deadline_scope(0.3):
            for _ in range(5):
                with pytest.raises(UpstreamUnavailable):
                    await connector.account("A1")
        elapsed = time.monotonic() - started
    assert elapsed < 0.3 + EPSILON
    assert len(recorder.requests) == 1  # the later calls found no time left and never went out


async def test_no_time_left_fails_at_once_without_calling() -> None:
    observed = Observed()
    connector, recorder = sales(lambda request: ACCOUNT, observer=observed)
    async with connector:
        with deadline_scope(0), pytest.raises(UpstreamUnavailable) as caught:
            await connector.account("A1")
    assert (caught.value.system, caught.value.kind) == (System.SALES, "timeout")
    assert recorder.requests == []
    assert observed.calls == [(System.SALES, "account", "deadline", 1)]


async def test_per_call_timeout_still_applies_inside_a_long_deadline() -> None:
    connector, recorder = sales(hang, timeout=0.1, max_attempts=2)
    async with connector:
        started = time.monotonic()
        with deadline_scope(10), pytest.raises(UpstreamUnavailable) as caught:
            await connector.account("A1")
        elapsed = time.monotonic() - started
    assert caught.value.kind == "timeout"
    assert len(recorder.requests) == 2  # a timed-out read is retried while time remains
    assert elapsed < 0.2 + 0.05 + EPSILON


async def test_the_deadline_reaches_tasks_started_inside_it() -> None:
    connector, _ = sales(hang, timeout=30)
    async with connector:
        started = time.monotonic()
        with deadline_scope(0.2):
            results = await asyncio.gather(
                connector.accounts([f"A{n}" for n in range(250)]),  # three batches, in parallel tasks
                connector.orders(["A1"]),
                return_exceptions=True,
            )
        elapsed = time.monotonic() - started
    assert all(isinstance(result, UpstreamUnavailable) for result in results)
    assert elapsed < 0.2 + EPSILON


# --- retries ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "first",
    [
        httpx.Response(500),
        httpx.Response(502),
        httpx.Response(503, json={"error": {"code": "unavailable"}}),
        httpx.Response(504),
        httpx.ConnectError,
        httpx.ReadTimeout,
        httpx.RemoteProtocolError,
    ],
)
async def test_a_read_is_retried_and_succeeds_on_the_second_attempt(
    first: httpx.Response | type[Exception],
) -> None:
    connector, recorder = sales(sequence(first, ACCOUNTS))
    async with connector:
        found = await connector.accounts(["A100234"])
    assert list(found) == ["A100234"]
    assert len(recorder.requests) == 2
    assert connector.breaker.consecutive_failures == 0


async def test_retries_stop_at_the_attempt_budget() -> None:
    connector, recorder = sales(lambda request: httpx.Response(500), max_attempts=4)
    async with connector:
        with pytest.raises(UpstreamUnavailable) as caught:
            await connector.account("A1")
    assert caught.value.kind == "error"
    assert len(recorder.requests) == 4


@pytest.mark.parametrize("status", [400, 401, 404, 409, 412, 422, 501])
async def test_answers_that_will_not_change_are_not_retried(status: int) -> None:
    connector, recorder = sales(lambda request: httpx.Response(status, json={"error": {"code": "x"}}))
    async with connector:
        with pytest.raises((UpstreamUnavailable, UpstreamNotFound, UpstreamConflict, UpstreamInvalid)):
            await connector.account("A1")
    assert len(recorder.requests) == 1


async def test_back_off_is_jittered_exponential_and_capped() -> None:
    assert backoff_delay(1, 0.05, 1.0, rand=lambda: 0.999) == pytest.approx(0.04995)
    assert backoff_delay(3, 0.05, 1.0, rand=lambda: 1.0) == pytest.approx(0.2)
    assert backoff_delay(10, 0.05, 1.0, rand=lambda: 1.0) == 1.0
    assert backoff_delay(100, 0.05, 1.0, rand=lambda: 1.0) == 1.0
    assert backoff_delay(2, 0.05, 1.0, rand=lambda: 0.0) == 0.0
    delays = {backoff_delay(4, 0.05, 1.0) for _ in range(50)}
    assert len(delays) > 1 and all(0 <= d < 0.4 for d in delays)


async def test_back_off_waits_between_attempts() -> None:
    times: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        times.append(time.monotonic())
        return httpx.Response(500)

    connector, _ = sales(handler, max_attempts=3, backoff_base=0.2, backoff_cap=0.2)
    async with connector:
        with pytest.raises(UpstreamUnavailable):
            await connector.account("A1")
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) == 2 and all(gap < 0.2 + EPSILON for gap in gaps)


async def test_back_off_never_waits_past_the_deadline() -> None:
    connector, _ = sales(lambda request: httpx.Response(500), backoff_base=5, backoff_cap=5)
    async with connector:
        started = time.monotonic()
        with deadline_scope(0.3), pytest.raises(UpstreamUnavailable):
            await connector.account("A1")
        assert time.monotonic() - started < 0.3 + EPSILON


async def test_retry_after_is_honoured_when_it_fits_the_deadline() -> None:
    slow_down = httpx.Response(503, headers={"Retry-After": "0.3"})
    connector, recorder = sales(sequence(slow_down, ACCOUNT))
    async with connector:
        started = time.monotonic()
        with deadline_scope(2):
            account = await connector.account("A100234")
        waited = time.monotonic() - started
    assert account.account_no == "A100234"
    assert len(recorder.requests) == 2
    assert waited >= 0.3


async def test_retry_after_that_does_not_fit_gives_up_at_once() -> None:
    connector, recorder = support(
        sequence(httpx.Response(429, headers={"Retry-After": "1"}), httpx.Response(200))
    )
    async with connector:
        started = time.monotonic()
        with deadline_scope(0.5), pytest.raises(UpstreamUnavailable) as caught:
            await connector.requesters(["a@x.cn"])
        assert time.monotonic() - started < EPSILON
    assert (caught.value.system, caught.value.kind) == (System.SUPPORT, "rate_limited")
    assert len(recorder.requests) == 1


def test_retry_after_forms() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(" 0.5 ") == 0.5
    for bad in (None, "", "soon", "-1", "nan", "inf"):
        assert parse_retry_after(bad) is None
    now = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(later, now=lambda: now) == 30.0
    earlier = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(earlier, now=lambda: now) == 0.0


async def test_search_is_a_read_and_is_retried() -> None:
    page = httpx.Response(200, json={"tickets": [raw_ticket()], "next_cursor": None})
    connector, recorder = support(sequence(httpx.Response(502), page))
    async with connector:
        tickets = await connector.tickets(["wang.fang@chengchuan.cn"])
    assert len(tickets["wang.fang@chengchuan.cn"]) == 1
    assert [request.url.path for request in recorder.requests] == ["/v2/tickets/search"] * 2


# --- writes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("first", [httpx.Response(500), httpx.ConnectError, httpx.ReadTimeout])
async def test_a_write_with_its_idempotency_key_is_retried_with_the_same_key(
    first: httpx.Response | type[Exception],
) -> None:
    connector, recorder = sales(sequence(first, ACCOUNT))
    async with connector:
        await connector.update_account("A100234", {"title": "总监"}, version=7, idempotency_key="key-1")
    assert len(recorder.requests) == 2
    assert [request.headers["Idempotency-Key"] for request in recorder.requests] == ["key-1", "key-1"]
    assert [request.method for request in recorder.requests] == ["PATCH", "PATCH"]


async def test_create_activity_and_ticket_are_retried_with_their_keys() -> None:
    activity = {
        "activity_id": "AC1",
        "account_no": "A1",
        "type": "call",
        "occurred_at": "2025-06-01T10:00:00Z",
        "subject": "s",
        "notes": None,
        "by_user": "u-1",
    }
    connector, recorder = sales(sequence(httpx.Response(503), httpx.Response(201, json=activity)))
    async with connector:
        await connector.create_activity(
            "A1", "call", datetime(2025, 6, 1, tzinfo=UTC), "s", None, "u-1", idempotency_key="k"
        )
    assert len(recorder.requests) == 2

    helpdesk, recorder = support(
        sequence(httpx.ConnectError, httpx.Response(201, json={"ticket": raw_ticket()}))
    )
    async with helpdesk:
        await helpdesk.create_ticket("a@x.cn", "s", "complaint", "high", "phone", "b", request_id="rid-1")
    assert [request.headers["X-Request-Id"] for request in recorder.requests] == ["rid-1", "rid-1"]


async def test_a_write_without_its_key_is_never_retried() -> None:
    connector, recorder = sales(lambda request: httpx.Response(500))
    async with connector:
        with pytest.raises(UpstreamUnavailable):
            await connector.update_account("A1", {"title": "x"}, version=1, idempotency_key="")
    assert len(recorder.requests) == 1


@pytest.mark.parametrize(
    "failure", [httpx.Response(500), httpx.Response(503), httpx.ConnectError, httpx.ReadTimeout]
)
async def test_put_owner_is_never_retried(failure: httpx.Response | type[Exception]) -> None:
    connector, recorder = sales(sequence(failure, ACCOUNT), max_attempts=5)
    async with connector:
        with pytest.raises(UpstreamUnavailable):
            await connector.set_owner("A1", "u-7", version=3)
    assert len(recorder.requests) == 1
    assert recorder.last.method == "PUT"


# --- the circuit breaker ---------------------------------------------------------------------


def state_of(connector: Connector) -> BreakerState:
    return connector.breaker.state


def breaker_for(connector: Connector, clock: FakeClock, failures: int = 3, cooldown: float = 10) -> list[str]:
    changes: list[str] = []
    connector.breaker = CircuitBreaker(
        connector.system,
        failures=failures,
        cooldown=cooldown,
        clock=clock,
        on_change=lambda system, state: changes.append(f"{system.value}:{state.value}"),
    )
    return changes


async def test_breaker_opens_fails_fast_half_opens_and_closes() -> None:
    healthy = False

    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.02)
        return ACCOUNT if healthy else httpx.Response(500)

    observed = Observed()
    clock = FakeClock()
    connector, recorder = sales(handler, max_attempts=1, observer=observed)
    changes = breaker_for(connector, clock)
    async with connector:
        for _ in range(3):
            with pytest.raises(UpstreamUnavailable) as caught:
                await connector.account("A1")
            assert caught.value.kind == "error"
        assert connector.breaker.state is BreakerState.OPEN
        assert changes == ["sales:open"]

        # Open: fail fast, nothing reaches the system.
        sent = len(recorder.requests)
        for _ in range(10):
            with pytest.raises(UpstreamUnavailable) as caught:
                await connector.accounts(["A1"])
            assert caught.value.kind == "circuit_open"
        assert len(recorder.requests) == sent
        assert connector.breaker.rejected == 10
        assert observed.calls[-1] == (System.SALES, "accounts", "circuit_open", 0)

        # Still open just before the cool-down ends.
        clock.now += 9.9
        with pytest.raises(UpstreamUnavailable):
            await connector.account("A1")
        assert len(recorder.requests) == sent

        # Half-open: exactly one probe among many concurrent calls.
        clock.now += 0.1
        assert state_of(connector) is BreakerState.HALF_OPEN
        healthy = True
        results = await asyncio.gather(*(connector.account("A1") for _ in range(20)), return_exceptions=True)
        assert len(recorder.requests) == sent + 1
        assert sum(1 for r in results if not isinstance(r, Exception)) == 1
        assert all(r.kind == "circuit_open" for r in results if isinstance(r, UpstreamUnavailable))

        # The probe succeeded: closed, and calls go through again.
        assert state_of(connector) is BreakerState.CLOSED
        await connector.account("A1")
        assert changes == ["sales:open", "sales:half_open", "sales:closed"]
        assert connector.status()["breaker"] == {
            "state": "closed",
            "consecutive_failures": 0,
            "times_opened": 1,
            "rejected": 30,
        }


async def test_a_failed_probe_opens_the_breaker_again_for_a_full_cool_down() -> None:
    clock = FakeClock()
    connector, recorder = sales(lambda request: httpx.Response(502), max_attempts=3)
    changes = breaker_for(connector, clock, failures=2)
    async with connector:
        for _ in range(2):
            with pytest.raises(UpstreamUnavailable):
                await connector.account("A1")
        sent = len(recorder.requests)
        assert sent == 6  # each call spent its attempts; the breaker counts calls
        clock.now += 10
        with pytest.raises(UpstreamUnavailable) as caught:
            await connector.account("A1")
        assert caught.value.kind == "error"  # the probe itself went out (with its retries)
        assert len(recorder.requests) == sent + 3
        assert connector.breaker.state is BreakerState.OPEN
        clock.now += 5
        with pytest.raises(UpstreamUnavailable) as caught:
            await connector.account("A1")
        assert caught.value.kind == "circuit_open"
    assert changes == ["sales:open", "sales:half_open", "sales:open"]
    assert connector.breaker.times_opened == 2


async def test_the_callers_mistakes_do_not_open_the_breaker() -> None:
    clock = FakeClock()
    connector, _ = sales(lambda request: httpx.Response(404, json={"error": {"code": "not_found"}}))
    breaker_for(connector, clock, failures=2)
    async with connector:
        for _ in range(10):
            with pytest.raises(UpstreamNotFound):
                await connector.account("A404")
    assert connector.breaker.state is BreakerState.CLOSED


async def test_a_success_resets_the_failure_count() -> None:
    clock = FakeClock()
    answers = [httpx.Response(500), httpx.Response(500), ACCOUNT] * 3
    connector, _ = sales(lambda request: answers.pop(0), max_attempts=1)
    breaker_for(connector, clock, failures=3)
    async with connector:
        for _ in range(3):
            for _ in range(2):
                with pytest.raises(UpstreamUnavailable):
                    await connector.account("A1")
            await connector.account("A1")
    assert connector.breaker.state is BreakerState.CLOSED


async def test_hangs_open_the_breaker_but_deadline_cut_timeouts_do_not() -> None:
    clock = FakeClock()
    connector, _ = sales(hang, timeout=0.05, max_attempts=1)
    breaker_for(connector, clock, failures=2)
    async with connector:
        for _ in range(3):  # cut short by a nearly spent request deadline: no verdict
            with deadline_scope(0.02), pytest.raises(UpstreamUnavailable):
                await connector.account("A1")
        assert connector.breaker.state is BreakerState.CLOSED
        for _ in range(2):  # the system let a full per-call timeout pass
            with pytest.raises(UpstreamUnavailable):
                await connector.account("A1")
        assert state_of(connector) is BreakerState.OPEN


async def test_a_cancelled_probe_lets_the_next_call_probe() -> None:
    clock = FakeClock()
    gate = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        await gate.wait()
        return ACCOUNT

    connector, recorder = sales(handler, max_attempts=1)
    breaker_for(connector, clock, failures=1)
    connector.breaker.failure()
    clock.now += 10
    async with connector:
        probe = asyncio.ensure_future(connector.account("A1"))
        await asyncio.sleep(0.01)
        assert len(recorder.requests) == 1
        probe.cancel()
        with pytest.raises(asyncio.CancelledError):
            await probe
        gate.set()
        await connector.account("A1")
    assert connector.breaker.state is BreakerState.CLOSED


async def test_retries_stop_when_the_breaker_opens_meanwhile() -> None:
    clock = FakeClock()

    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.01)
        return httpx.Response(500)

    connector, recorder = sales(handler, max_attempts=5, backoff_base=0.05, backoff_cap=0.05)
    breaker_for(connector, clock, failures=1)
    async with connector:
        reading = asyncio.ensure_future(connector.account("A1"))  # up to 5 attempts
        with pytest.raises(UpstreamUnavailable):
            await connector.set_owner("A2", None, version=None)  # one attempt: opens the breaker
        with pytest.raises(UpstreamUnavailable) as caught:
            await reading
    assert caught.value.kind == "error"
    assert connector.breaker.state is BreakerState.OPEN
    assert len(recorder.requests) <= 3  # the read stopped at its next retry


def test_breaker_checks_its_arguments() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(System.SALES, failures=0)
    with pytest.raises(ValueError):
        CircuitBreaker(System.SALES, cooldown=-1)


# --- protecting the systems ------------------------------------------------------------------


class Peak:
    """A slow system that measures how many calls it has at once."""

    def __init__(self, answer: httpx.Response) -> None:
        self.answer = answer
        self.now = 0
        self.peak = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            await asyncio.sleep(0.005)
        finally:
            self.now -= 1
        return self.answer


@pytest.mark.parametrize("bound", [1, 3, 8])
async def test_in_flight_never_exceeds_the_bound_under_50_concurrent_calls(bound: int) -> None:
    system = Peak(ACCOUNT)
    connector, recorder = sales(system, max_in_flight=bound)
    async with connector:
        await asyncio.gather(*(connector.account(f"A{n}") for n in range(50)))
        assert connector.in_flight == 0
    assert system.peak == bound
    assert len(recorder.requests) == 50


async def test_every_system_is_bounded_separately() -> None:
    support_system = Peak(httpx.Response(200, json={"requesters": []}))
    contracts_system = Peak(httpx.Response(200, json=[raw_contract()]))
    support_connector, _ = support(support_system, max_in_flight=5)
    contracts_connector, _ = contracts(contracts_system)
    async with support_connector, contracts_connector:
        await asyncio.gather(
            *(support_connector.requesters([f"u{n}@x.cn"]) for n in range(50)),
            *(contracts_connector.contracts(f"9131011500000{n:05d}") for n in range(50)),
        )
    assert support_system.peak == 5
    assert contracts_system.peak == 4  # the register's own limit is the default


async def test_waiting_for_a_slot_never_passes_the_deadline() -> None:
    observed = Observed()
    connector, recorder = sales(hang, timeout=30, max_in_flight=1, observer=observed)
    async with connector:
        started = time.monotonic()
        with deadline_scope(0.2):
            results = await asyncio.gather(
                *(connector.account(f"A{n}") for n in range(5)), return_exceptions=True
            )
        elapsed = time.monotonic() - started
    assert elapsed < 0.2 + EPSILON
    assert all(isinstance(r, UpstreamUnavailable) and r.kind == "timeout" for r in results)
    assert len(recorder.requests) == 1
    assert sorted(outcome for _, _, outcome, _ in observed.calls) == ["queue_timeout"] * 4 + ["timeout"]


async def test_rate_bound_spaces_calls_and_refuses_what_cannot_fit() -> None:
    observed = Observed()
    connector, recorder = sales(lambda request: ACCOUNT, max_rate=20, observer=observed)
    async with connector:
        started = time.monotonic()
        await asyncio.gather(*(connector.account("A1") for _ in range(5)))
        assert time.monotonic() - started >= 0.19  # 5 calls at 20/s: 4 gaps of 50 ms
        with deadline_scope(0.01), pytest.raises(UpstreamUnavailable) as caught:
            await connector.account("A1")  # the next token is ~50 ms away: more than is left
    assert caught.value.kind == "timeout"
    assert observed.calls[-1][2] == "throttled"
    assert len(recorder.requests) == 5


def test_rate_limiter_books_slots_and_refuses_long_waits() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, burst=2, clock=clock)
    assert limiter.reserve() == 0.0
    assert limiter.reserve() == 0.0  # the burst
    assert limiter.reserve() == pytest.approx(0.1)
    assert limiter.reserve(max_wait=0.1) is None  # would wait 0.2: refused, nothing booked
    assert limiter.reserve(max_wait=0.25) == pytest.approx(0.2)
    clock.now += 10
    assert limiter.reserve() == 0.0


def test_constructor_checks() -> None:
    for options in ({"max_in_flight": 0}, {"max_attempts": 0}, {"timeout": 0}, {"max_retry_wait": -1}):
        with pytest.raises(ValueError):
            SalesConnector("http://s", "k", **options)  # type: ignore[arg-type]


async def test_pool_is_bounded_like_the_in_flight_limit() -> None:
    connector = SalesConnector("http://s", "k", max_in_flight=7)
    assert isinstance(connector._transport, PooledTransport)
    assert connector._transport.connections == 7
    await connector.aclose()
    register = ContractsConnector("http://s", "u", "p", max_connections=20)
    assert isinstance(register._transport, PooledTransport)
    assert register._transport.connections == 20
    assert register.max_in_flight == 4
    await register.aclose()


# --- the observer ----------------------------------------------------------------------------


async def test_observer_sees_every_attempt_with_fixed_names_only() -> None:
    observed = Observed()
    answers = [httpx.Response(503), httpx.Response(200, json={"requesters": []})]
    answers.append(httpx.Response(200, json={"summaries": []}))
    connector, _ = support(lambda request: answers.pop(0), observer=observed)
    async with connector:
        await connector.requesters(["Wang.Fang@ChengChuan.cn"])
        await connector.satisfaction(["wang.fang@chengchuan.cn"])
    assert observed.calls[:2] == [
        (System.SUPPORT, "requesters", "503", 1),
        (System.SUPPORT, "requesters", "200", 2),
    ]
    assert observed.calls[2][:2] == (System.SUPPORT, "satisfaction")
    assert "chengchuan" not in repr(observed.calls).lower()


async def test_every_endpoint_has_its_resource_name() -> None:
    observed = Observed()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404)

    sales_connector, _ = sales(handler, observer=observed)
    support_connector, _ = support(handler, observer=observed)
    contracts_connector, _ = contracts(handler, observer=observed)
    now = datetime(2025, 1, 1, tzinfo=UTC)
    calls = [
        sales_connector.accounts(["A1"]),
        sales_connector.list_accounts(),
        sales_connector.account("A1"),
        sales_connector.update_account("A1", {}, version=None, idempotency_key="k"),
        sales_connector.set_owner("A1", None, version=None),
        sales_connector.orders(["A1"]),
        sales_connector.payments(["A1"]),
        sales_connector.opportunities(["A1"]),
        sales_connector.activities(["A1"]),
        sales_connector.create_activity("A1", "call", now, "s", None, "u", idempotency_key="k"),
        sales_connector.users(["u-1"]),
        support_connector.tickets(["a@x.cn"]),
        support_connector.ticket(1),
        support_connector.requesters(["a@x.cn"]),
        support_connector.satisfaction(["a@x.cn"]),
        support_connector.create_ticket("a@x.cn", "s", "c", "p", "ch", "b", request_id="r"),
        contracts_connector.contracts("T1"),
        contracts_connector.contract("HT-1"),
        contracts_connector.updated_since(now.date()),
    ]
    async with sales_connector, support_connector, contracts_connector:
        for call in calls:
            with pytest.raises(UpstreamNotFound):
                await call
    assert [(system.value, resource) for system, resource, _, _ in observed.calls] == [
        ("sales", "accounts"),
        ("sales", "accounts.list"),
        ("sales", "account"),
        ("sales", "account.update"),
        ("sales", "account.owner"),
        ("sales", "orders"),
        ("sales", "payments"),
        ("sales", "opportunities"),
        ("sales", "activities"),
        ("sales", "activities.create"),
        ("sales", "users"),
        ("support", "tickets.search"),
        ("support", "ticket"),
        ("support", "requesters"),
        ("support", "satisfaction"),
        ("support", "tickets.create"),
        ("contracts", "contracts"),
        ("contracts", "contract"),
        ("contracts", "contracts.updated_since"),
    ]


async def test_a_broken_observer_never_breaks_a_call() -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("observer bug")

    connector, _ = sales(lambda request: ACCOUNT, observer=broken)
    async with connector:
        assert (await connector.account("A100234")).account_no == "A100234"


async def test_health_is_one_bounded_attempt() -> None:
    connector, recorder = sales(hang, timeout=30)
    async with connector:
        started = time.monotonic()
        assert await connector.health(timeout=0.1) is False
        assert time.monotonic() - started < 0.1 + EPSILON
    assert len(recorder.requests) == 1
