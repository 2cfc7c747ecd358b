"""Access requests: request → decide → live grant → expiry; who may decide; listing; the grant cache."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from features.store import (
    AccessRequestError,
    AccessRequests,
    AccessRequestStatus,
    AuditContext,
    AuditFilter,
    AuditLog,
    Database,
    InvalidCursor,
)
from policies import DEFAULT_POLICY_PATH, Policy, Principal

from .conftest import account

REP = Principal.of("u-1021", ["sales_rep"], region="east")
OTHER_REP = Principal.of("u-2042", ["sales_rep"], region="east")
MANAGER_EAST = Principal.of("u-m-east", ["sales_manager"], region="east")
MANAGER_NORTH = Principal.of("u-m-north", ["sales_manager"], region="north")
STEWARD = Principal.of("u-ds", ["data_steward"])
FINANCE = Principal.of("u-fin", ["finance"])
A1 = account("A-1", owner=REP.sub, region="east")
A2 = account("A-2", owner=REP.sub, region="east")
NORTH = account("N-1", owner=None, region="north")
WEEK = timedelta(days=7)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Env:
    db: Database
    audit: AuditLog
    access: AccessRequests
    clock: Clock


@pytest.fixture(scope="module")
def policy() -> Policy:
    return Policy.from_file(DEFAULT_POLICY_PATH, "default.yaml")


@pytest.fixture
async def env(database: Database, policy: Policy) -> AsyncIterator[Env]:
    clock = Clock()
    audit = AuditLog(database)
    yield Env(database, audit, AccessRequests(database, policy, audit=audit, clock=clock), clock)


async def refused(code: str, coro: object) -> AccessRequestError:
    with pytest.raises(AccessRequestError) as caught:
        await coro  # type: ignore[misc]
    assert caught.value.code == code, caught.value.message
    return caught.value


async def test_request_decide_grant_expire(env: Env) -> None:
    ctx = AuditContext("req-1", "RequestAccess")
    made = await env.access.request(REP, A1, ["taxId", "payments"], "  Invoice dispute #4411 ", context=ctx)
    assert made.status is AccessRequestStatus.PENDING and made.grant_id is None
    assert made.fields == ("taxId", "payments") and made.reason == "Invoice dispute #4411"
    assert await env.access.active_grants(REP.sub, ["A-1"]) == {}

    env.clock.now += timedelta(minutes=5)
    decided = await env.access.decide(MANAGER_EAST, made.id, True, timedelta(days=1), A1)
    assert decided.status is AccessRequestStatus.APPROVED and decided.grant_id == made.id
    assert decided.decided_by == MANAGER_EAST.sub
    assert decided.expires_at == env.clock.now + timedelta(days=1)

    grants = await env.access.active_grants(REP.sub, ["A-1", "A-2", "A-404"])
    assert grants == {"A-1": {"taxId": made.id, "payments": made.id}}
    assert await env.access.active_grants(OTHER_REP.sub, ["A-1"]) == {}  # for the requester only
    assert await env.access.active_grants(REP.sub, []) == {}

    later = env.clock.now + timedelta(days=1)
    assert await env.access.active_grants(REP.sub, ["A-1"], now=later) == {}
    env.clock.now = later
    assert await env.access.active_grants(REP.sub, ["A-1"]) == {}
    fetched = await env.access.get(made.id)
    assert fetched is not None and fetched.status is AccessRequestStatus.EXPIRED
    assert fetched.grant_id == made.id


async def test_request_and_decision_are_audited(env: Env) -> None:
    made = await env.access.request(REP, A1, ["taxId"], "audit me", context=AuditContext("req-a", "Ask"))
    await env.access.decide(
        MANAGER_EAST, made.id, True, timedelta(hours=2), A1, context=AuditContext("req-b", "Decide")
    )
    records = (await env.audit.query(AuditFilter(customer_id="A-1"), first=10)).records
    decision, request = records
    assert (request.kind, request.request_id, request.operation_name) == ("access_request", "req-a", "Ask")
    assert request.user_sub == REP.sub and request.fields == {"A-1": {"taxId": "mask"}}
    assert request.after == {"status": "pending", "fields": ["taxId"], "reason": "audit me"}
    assert request.detail == {"accessRequestId": made.id}
    assert (decision.kind, decision.user_sub, decision.grant_id) == (
        "access_decision",
        MANAGER_EAST.sub,
        made.id,
    )
    assert decision.before == {"status": "pending"}
    assert decision.after is not None and decision.after["status"] == "approved"
    assert decision.detail == {"accessRequestId": made.id, "ttlSeconds": 7200}
    assert (await env.audit.verify()).ok


async def test_request_validation(env: Env) -> None:
    await refused("BAD_USER_INPUT", env.access.request(REP, A1, [], "why"))
    await refused("BAD_USER_INPUT", env.access.request(REP, A1, [" "], "why"))
    await refused("BAD_USER_INPUT", env.access.request(REP, A1, ["emial"], "why"))
    error = await refused("BAD_USER_INPUT", env.access.request(REP, A1, ["email"], "why"))  # already allowed
    assert "email" in error.message
    await refused("BAD_USER_INPUT", env.access.request(REP, A1, ["name"], "why"))  # identity field
    await refused("BAD_USER_INPUT", env.access.request(REP, A1, ["taxId"], "   "))
    await refused("BAD_USER_INPUT", env.access.request(REP, A1, ["taxId"], "x" * 501))
    await refused("BAD_USER_INPUT", env.access.request(REP, A1, ["taxId"], "a\x00b"))
    await refused("BAD_USER_INPUT", env.access.request(REP, A1, [f"f{i}" for i in range(21)], "why"))
    # a customer outside the caller's rows does not exist for it
    await refused("NOT_FOUND", env.access.request(OTHER_REP, A1, ["taxId"], "why"))
    assert (await env.access.list(REP, mine=True)).requests == []


async def test_duplicate_pending_request_conflicts(env: Env) -> None:
    await env.access.request(REP, A1, ["taxId"], "first")
    await refused("CONFLICT", env.access.request(REP, A1, ["payments", "taxId"], "again"))
    await env.access.request(REP, A1, ["payments"], "another field is fine")
    await env.access.request(REP, A2, ["taxId"], "another customer is fine")


async def test_no_self_approval(env: Env) -> None:
    made = await env.access.request(STEWARD, A1, ["payments"], "reconcile")
    error = await refused("FORBIDDEN", env.access.decide(STEWARD, made.id, True, timedelta(days=1), A1))
    assert error.audited
    mine = await env.access.request(MANAGER_EAST, A1, ["taxId"], "check")
    await refused("FORBIDDEN", env.access.decide(MANAGER_EAST, mine.id, True, timedelta(days=1), A1))
    denials = (await env.audit.query(AuditFilter(kinds={"denial"}), first=10)).records
    assert [d.user_sub for d in denials] == [MANAGER_EAST.sub, STEWARD.sub]
    assert denials[1].detail is not None and denials[1].detail["accessRequestId"] == made.id
    fetched = await env.access.get(made.id)
    assert fetched is not None and fetched.status is AccessRequestStatus.PENDING


async def test_who_may_decide(env: Env) -> None:
    made = await env.access.request(REP, A1, ["taxId"], "why")
    error = await refused("FORBIDDEN", env.access.decide(MANAGER_NORTH, made.id, True, timedelta(days=1), A1))
    assert "decideAccessRequest" in error.message
    await refused("FORBIDDEN", env.access.decide(FINANCE, made.id, True, timedelta(days=1), A1))
    await refused("FORBIDDEN", env.access.decide(OTHER_REP, made.id, False, None, A1))
    # the live customer counts: moved to the north region, the east manager may no longer decide
    moved = account("A-1", owner=REP.sub, region="north")
    await refused("FORBIDDEN", env.access.decide(MANAGER_EAST, made.id, True, timedelta(days=1), moved))
    decided = await env.access.decide(STEWARD, made.id, True, timedelta(days=1), A1)
    assert decided.status is AccessRequestStatus.APPROVED


async def test_ttl_rules(env: Env) -> None:
    made = await env.access.request(REP, A1, ["taxId"], "why")
    await refused(
        "BAD_USER_INPUT", env.access.decide(MANAGER_EAST, made.id, True, WEEK + timedelta(seconds=1), A1)
    )
    await refused("BAD_USER_INPUT", env.access.decide(MANAGER_EAST, made.id, True, timedelta(0), A1))
    await refused("BAD_USER_INPUT", env.access.decide(MANAGER_EAST, made.id, True, None, A1))
    decided = await env.access.decide(MANAGER_EAST, made.id, True, WEEK, A1)
    assert decided.expires_at == env.clock.now + WEEK


async def test_deciding_twice_and_unknown_requests(env: Env) -> None:
    made = await env.access.request(REP, A1, ["taxId"], "why")
    await env.access.decide(MANAGER_EAST, made.id, False, None, A1)
    error = await refused("CONFLICT", env.access.decide(STEWARD, made.id, True, timedelta(days=1), A1))
    assert "denied" in error.message
    assert await env.access.active_grants(REP.sub, ["A-1"]) == {}
    await refused("NOT_FOUND", env.access.decide(STEWARD, "no-such-id", True, timedelta(days=1), A1))
    await refused(
        "NOT_FOUND", env.access.decide(STEWARD, "00000000-0000-0000-0000-000000000000", True, WEEK, A1)
    )
    await refused("BAD_USER_INPUT", env.access.decide(STEWARD, made.id, True, WEEK, A2))


async def test_concurrent_decisions_one_wins(env: Env) -> None:
    made = await env.access.request(REP, A1, ["taxId"], "why")
    results = await asyncio.gather(
        env.access.decide(MANAGER_EAST, made.id, True, timedelta(days=1), A1),
        env.access.decide(STEWARD, made.id, False, None, A1),
        return_exceptions=True,
    )
    errors = [r for r in results if isinstance(r, AccessRequestError)]
    assert len(errors) == 1 and errors[0].code == "CONFLICT"
    decisions = await env.audit.query(AuditFilter(kinds={"access_decision"}), first=10)
    assert len(decisions.records) == 1


async def test_listing(env: Env) -> None:
    east = await env.access.request(REP, A1, ["taxId"], "one")
    env.clock.now += timedelta(seconds=1)
    east2 = await env.access.request(REP, A2, ["payments"], "two")
    env.clock.now += timedelta(seconds=1)
    north = await env.access.request(FINANCE, NORTH, ["opportunities"], "three")
    env.clock.now += timedelta(seconds=1)
    own = await env.access.request(MANAGER_EAST, A1, ["payments"], "four")

    async def ids(who: Principal, **kw: object) -> list[str]:
        return [r.id for r in (await env.access.list(who, **kw)).requests]  # type: ignore[arg-type]

    assert await ids(REP, mine=True) == [east2.id, east.id]
    assert await ids(MANAGER_EAST, mine=False) == [east2.id, east.id]  # not its own, not north
    assert await ids(MANAGER_NORTH, mine=False) == [north.id]
    assert await ids(STEWARD, mine=False) == [own.id, north.id, east2.id, east.id]
    assert await ids(STEWARD, mine=True) == []
    error = await refused(
        "FORBIDDEN", env.access.list(REP, mine=False, context=AuditContext("q", "Queue", "query"))
    )
    assert error.audited
    (denial,) = (await env.audit.query(AuditFilter(kinds={"denial"}, request_id="q"), first=5)).records
    assert (denial.user_sub, denial.operation_name, denial.customer_ids) == (REP.sub, "Queue", ())
    await refused("BAD_USER_INPUT", env.access.list(REP, mine=True, first=0))

    await env.access.decide(STEWARD, east.id, True, timedelta(hours=1), A1)
    await env.access.decide(STEWARD, north.id, False, None, NORTH)
    assert await ids(STEWARD, mine=False, status=AccessRequestStatus.PENDING) == [own.id, east2.id]
    assert await ids(STEWARD, mine=False, status=AccessRequestStatus.APPROVED) == [east.id]
    assert await ids(STEWARD, mine=False, status=AccessRequestStatus.DENIED) == [north.id]
    assert await ids(STEWARD, mine=False, status=AccessRequestStatus.EXPIRED) == []
    assert await ids(STEWARD, mine=False, account_no="A-1") == [own.id, east.id]
    env.clock.now += timedelta(hours=2)
    assert await ids(REP, mine=True, status=AccessRequestStatus.EXPIRED) == [east.id]

    seen: list[str] = []
    after = None
    while True:
        page = await env.access.list(STEWARD, mine=False, first=3, after=after)
        seen += [r.id for r in page.requests]
        if not page.has_next_page:
            break
        after = page.end_cursor
    assert seen == [own.id, north.id, east2.id, east.id]
    with pytest.raises(InvalidCursor):
        await env.access.list(STEWARD, mine=False, after="bogus")


async def test_grant_cache(env: Env) -> None:
    made = await env.access.request(REP, A1, ["taxId"], "why")
    assert await env.access.active_grants(REP.sub, ["A-1"]) == {}
    assert await env.access.active_grants(REP.sub, ["A-1", "A-2"]) == {}
    assert env.access.grant_queries == 1  # the empty answer is cached too
    await env.access.decide(MANAGER_EAST, made.id, True, timedelta(hours=1), A1)  # invalidates
    assert await env.access.active_grants(REP.sub, ["A-1"]) == {"A-1": {"taxId": made.id}}
    assert await env.access.active_grants(REP.sub, {"A-1"}) == {"A-1": {"taxId": made.id}}
    assert env.access.grant_queries == 2
    # expiry is exact even from the cache
    assert await env.access.active_grants(REP.sub, ["A-1"], now=env.clock.now + timedelta(hours=1)) == {}


async def test_overlapping_grants_name_the_later_ending(env: Env) -> None:
    first = await env.access.request(REP, A1, ["taxId"], "one")
    await env.access.decide(MANAGER_EAST, first.id, True, timedelta(days=3), A1)
    second = await env.access.request(REP, A1, ["taxId", "payments"], "two")
    await env.access.decide(MANAGER_EAST, second.id, True, timedelta(days=1), A1)
    grants = await env.access.active_grants(REP.sub, ["A-1"])
    assert grants == {"A-1": {"taxId": first.id, "payments": second.id}}


async def test_policy_holder_or_callable(database: Database, policy: Policy) -> None:
    access = AccessRequests(database, lambda: policy)
    made = await access.request(REP, A1, ["taxId"], "why")
    assert (await access.decide(STEWARD, made.id, True, WEEK, A1)).status is AccessRequestStatus.APPROVED


async def test_failed_audit_stores_no_request(env: Env) -> None:
    from sqlalchemy import event

    def fail_audit(conn, cursor, statement: str, *args) -> None:  # type: ignore[no-untyped-def]
        if "INSERT INTO audit_log" in statement:
            raise OSError(28, "No space left on device")

    event.listen(env.db.engine.sync_engine, "before_cursor_execute", fail_audit)
    try:
        from features.store import StoreUnavailable

        with pytest.raises(StoreUnavailable):
            await env.access.request(REP, A1, ["taxId"], "why")
    finally:
        event.remove(env.db.engine.sync_engine, "before_cursor_execute", fail_audit)
    assert (await env.access.list(REP, mine=True)).requests == []
