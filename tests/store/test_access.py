"""Access requests: request → decide → live grant → expiry; who may decide; listing; the grant cache.
Access review: grants in force for a reviewer, revocation (audited, refused to others), and a revoked
grant stops at once in another process sharing the database (its cache re-checks)."""

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
    GrantFilter,
    InvalidCursor,
)
from policies import DEFAULT_POLICY_PATH, Policy, Principal

from .conftest import Backend, account

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
    # nobody holds a grant: one query for everyone, none of REP's own; the answer is cached too
    assert (env.access.holder_queries, env.access.grant_queries) == (1, 0)
    await env.access.decide(MANAGER_EAST, made.id, True, timedelta(hours=1), A1)  # invalidates
    assert await env.access.active_grants(REP.sub, ["A-1"]) == {"A-1": {"taxId": made.id}}
    assert await env.access.active_grants(REP.sub, {"A-1"}) == {"A-1": {"taxId": made.id}}
    assert (env.access.holder_queries, env.access.grant_queries) == (1, 1)  # a holder here at once
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


# --- access review: grants in force, revocation ---------------------------------------------------

HOUR = timedelta(hours=1)
COLLEAGUE = Principal.of("u-m-east2", ["sales_manager"], region="east")  # sees A-1, taxId masked


async def grant(env: Env, who: Principal, customer: object, fields: list[str], ttl: timedelta = HOUR) -> str:
    made = await env.access.request(who, customer, fields, "review test")  # type: ignore[arg-type]
    await env.access.decide(STEWARD, made.id, True, ttl, customer)  # type: ignore[arg-type]
    env.clock.now += timedelta(seconds=1)
    return made.id


async def ids(env: Env, who: Principal, filter: GrantFilter | None = None, **kw: object) -> list[str]:
    page = await env.access.in_force(who, filter, **kw)  # type: ignore[arg-type]
    return [r.id for r in page.requests]


async def test_grants_in_force_by_reviewer_scope(env: Env) -> None:
    east1 = await grant(env, REP, A1, ["taxId", "payments"])
    east2 = await grant(env, COLLEAGUE, A1, ["taxId"])
    north = await grant(env, FINANCE, NORTH, ["opportunities"])
    ended = await grant(env, REP, A2, ["taxId"], ttl=timedelta(seconds=1))  # over by now
    pending = await env.access.request(REP, A2, ["payments"], "not decided")

    assert await ids(env, STEWARD) == [north, east2, east1]
    assert await ids(env, MANAGER_EAST) == [east2, east1]  # only its region
    assert await ids(env, MANAGER_NORTH) == [north]
    assert ended not in await ids(env, STEWARD) and pending.id not in await ids(env, STEWARD)

    assert await ids(env, STEWARD, GrantFilter(user_sub=REP.sub)) == [east1]
    assert await ids(env, STEWARD, GrantFilter(account_no="A-1")) == [east2, east1]
    assert await ids(env, STEWARD, GrantFilter(field="payments")) == [east1]
    assert await ids(env, STEWARD, GrantFilter(field="taxId", user_sub=COLLEAGUE.sub)) == [east2]
    assert await ids(env, STEWARD, GrantFilter(region="north")) == [north]
    assert await ids(env, MANAGER_EAST, GrantFilter(region="north")) == []  # a filter never widens

    # paging: newest first, cursors continue
    first = await env.access.in_force(STEWARD, first=2)
    assert [r.id for r in first.requests] == [north, east2] and first.has_next_page
    rest = await env.access.in_force(STEWARD, first=2, after=first.end_cursor)
    assert [r.id for r in rest.requests] == [east1] and not rest.has_next_page
    with pytest.raises(InvalidCursor):
        await env.access.in_force(STEWARD, after="bogus")


async def test_grants_in_force_refusals(env: Env) -> None:
    for who in (REP, FINANCE):
        error = await refused(
            "FORBIDDEN", env.access.in_force(who, context=AuditContext("rq", "Review", "query"))
        )
        assert error.audited
    denials = (await env.audit.query(AuditFilter(kinds={"denial"}, request_id="rq"), first=5)).records
    assert {d.user_sub for d in denials} == {REP.sub, FINANCE.sub}
    await refused("BAD_USER_INPUT", env.access.in_force(STEWARD, GrantFilter(field="emial")))
    await refused("BAD_USER_INPUT", env.access.in_force(STEWARD, GrantFilter(user_sub=" ")))
    await refused("BAD_USER_INPUT", env.access.in_force(STEWARD, first=0))
    await refused("BAD_USER_INPUT", env.access.in_force(STEWARD, first=101))


async def test_revoke_is_audited_and_stops_the_grant(env: Env) -> None:
    made = await grant(env, REP, A1, ["taxId"], ttl=timedelta(days=2))
    assert await env.access.active_grants(REP.sub, ["A-1"]) == {"A-1": {"taxId": made}}
    revoked = await env.access.revoke(
        MANAGER_EAST, made, "  left the account team ", A1, context=AuditContext("rv", "Revoke")
    )
    assert revoked.status is AccessRequestStatus.REVOKED and revoked.grant_id == made
    assert (revoked.revoked_by, revoked.revoke_reason) == (MANAGER_EAST.sub, "left the account team")
    assert await env.access.active_grants(REP.sub, ["A-1"]) == {}
    fetched = await env.access.get(made)
    assert fetched is not None and fetched.status is AccessRequestStatus.REVOKED
    assert fetched.revoked_at == env.clock.now and fetched.revoked_by == MANAGER_EAST.sub
    assert await ids(env, STEWARD) == []
    mine = await env.access.list(REP, mine=True, status=AccessRequestStatus.REVOKED)
    assert [r.id for r in mine.requests] == [made]

    (record,) = (await env.audit.query(AuditFilter(kinds={"access_revocation"}), first=5)).records
    assert (record.user_sub, record.request_id, record.operation_name) == (MANAGER_EAST.sub, "rv", "Revoke")
    assert record.grant_id == made and record.customer_ids == ("A-1",)
    assert record.before is not None and record.before["status"] == "approved"
    assert record.after == {"status": "revoked", "reason": "left the account team", "requester": REP.sub}
    assert (await env.audit.verify()).ok

    error = await refused("CONFLICT", env.access.revoke(STEWARD, made, "again", A1))
    assert "already revoked" in error.message


async def test_who_may_revoke(env: Env) -> None:
    made = await grant(env, REP, A1, ["taxId"])
    for who in (MANAGER_NORTH, FINANCE, OTHER_REP, REP):
        error = await refused("FORBIDDEN", env.access.revoke(who, made, "no", A1))
        assert error.audited and "revokeAccessGrant" in error.message
    moved = account("A-1", owner=REP.sub, region="north")  # the live customer counts
    await refused("FORBIDDEN", env.access.revoke(MANAGER_EAST, made, "moved", moved))
    assert await env.access.active_grants(REP.sub, ["A-1"]) == {"A-1": {"taxId": made}}
    denials = (await env.audit.query(AuditFilter(kinds={"denial"}), first=10)).records
    assert len(denials) == 5
    assert (await env.access.revoke(STEWARD, made, "done", A1)).status is AccessRequestStatus.REVOKED


async def test_revoke_bad_input_and_states(env: Env) -> None:
    made = await grant(env, REP, A1, ["taxId"])
    await refused("BAD_USER_INPUT", env.access.revoke(STEWARD, made, "  ", A1))
    await refused("BAD_USER_INPUT", env.access.revoke(STEWARD, made, "x" * 501, A1))
    await refused("BAD_USER_INPUT", env.access.revoke(STEWARD, made, "a\x00b", A1))
    await refused("BAD_USER_INPUT", env.access.revoke(STEWARD, made, "why", A2))  # not its customer
    await refused("NOT_FOUND", env.access.revoke(STEWARD, "nope", "why", A1))
    pending = await env.access.request(REP, A2, ["taxId"], "pending")
    error = await refused("CONFLICT", env.access.revoke(STEWARD, pending.id, "why", A2))
    assert "pending" in error.message
    env.clock.now += 2 * HOUR
    error = await refused("CONFLICT", env.access.revoke(STEWARD, made, "why", A1))
    assert "ended" in error.message
    assert (await env.audit.query(AuditFilter(kinds={"access_revocation"}), first=5)).records == []


@pytest.fixture
async def second_process(backend: Backend, env: Env) -> AsyncIterator[AccessRequests]:
    """Another gateway process: its own connection pool and grant cache, the same database."""
    db = backend.open()
    try:
        yield AccessRequests(db, env.access._policy(), audit=AuditLog(db), clock=env.clock, cache_ttl=3600)
    finally:
        await db.aclose()


async def test_revocation_reaches_another_process_at_its_next_lookup(
    env: Env, second_process: AccessRequests, database: Database
) -> None:
    made = await grant(env, REP, A1, ["taxId"], ttl=timedelta(days=1))
    other = second_process
    assert await other.active_grants(REP.sub, ["A-1"]) == {"A-1": {"taxId": made}}
    assert await other.active_grants(REP.sub, ["A-1"]) == {"A-1": {"taxId": made}}  # from its cache
    assert (other.grant_queries, other.revocation_checks) == (1, 1)
    # a customer without a grant costs the cached lookup nothing
    assert await other.active_grants(REP.sub, ["A-2"]) == {}
    assert other.revocation_checks == 1

    await env.access.revoke(STEWARD, made, "review", A1)  # through the first process
    assert await other.active_grants(REP.sub, ["A-1"]) == {}  # its cache (an hour) is not trusted
    assert other.revocation_checks == 2
    assert await other.active_grants(REP.sub, ["A-1"]) == {}
    assert other.grant_queries == 2  # the stale entry was dropped and read again


async def test_users_without_grants_cost_one_query_for_all_of_them_per_ttl(
    env: Env, backend: Backend
) -> None:
    db = backend.open()
    try:
        other = AccessRequests(db, env.access._policy(), audit=AuditLog(db), clock=env.clock, cache_ttl=0.2)
        for i in range(50):
            assert await other.active_grants(f"u-{i}", ["A-1"]) == {}
        assert (other.holder_queries, other.grant_queries) == (1, 0)
        made = await grant(env, REP, A1, ["taxId"], ttl=timedelta(days=1))  # through another process
        assert await other.active_grants(REP.sub, ["A-1"]) == {}  # not yet: at most cache_ttl late
        await asyncio.sleep(0.25)
        assert await other.active_grants(REP.sub, ["A-1"]) == {"A-1": {"taxId": made}}
        assert (other.holder_queries, other.grant_queries) == (2, 1)
        await asyncio.sleep(0.25)  # callers arriving together share one query
        answers = await asyncio.gather(*(other.active_grants(f"v-{i}", ["A-1"]) for i in range(20)))
        assert answers == [{}] * 20
        assert (other.holder_queries, other.grant_queries) == (3, 1)
    finally:
        await db.aclose()


async def test_all_in_force(env: Env) -> None:
    a = await grant(env, REP, A2, ["taxId"])
    b = await grant(env, FINANCE, NORTH, ["opportunities"])
    c = await grant(env, REP, A1, ["payments"])
    await env.access.revoke(STEWARD, c, "gone", A1)
    listed = await env.access.all_in_force()
    assert [r.id for r in listed] == [a, b]  # by customer: A-2, N-1
    assert all(r.status is AccessRequestStatus.APPROVED for r in listed)
