"""Access requests and the grants they become (docs/policy.md, Access requests).

A caller asks for fields the policy masks or denies it, for one customer, with a reason
(``request``). An approver (``writes.decideAccessRequest``: a sales_manager in the customer's region, a
data_steward — never on its own request) approves for at most ``access_requests.max_ttl`` or refuses
(``decide``). While an approved request lasts it is a *grant*: those fields of that customer resolve to
``allow`` for the requester only. The grant's id is the request's id; the gateway records every use of
it (``AuditEntry(kind="grant_use", grant_id=...)``).

``active_grants`` is on the hot path of every read: one indexed query for all of a user's live grants,
cached in-process for ``cache_ttl`` seconds (decide() invalidates this process's entry; another
process sees a new grant at most ``cache_ttl`` late; expiry is always exact, checked per call). Most
users hold no grant at all, so one query per ``cache_ttl`` for the whole process first reads *who*
holds a live grant: a user not among them needs no query of their own (with 64 distinct callers each
one cost a query every ``cache_ttl`` seconds, ~0.74 ms of CPU each: a third of the CPU a cold answer
grew by under load, bench S3). That set may only be too large (a grant approved here adds its
requester at once; a revoked or expired one just costs that user's own query), never too small for
longer than ``cache_ttl``.

**Revocation is effective at once, in every process** (``revoke``: an approver of the customer ends a
grant early, with a reason). A cached grant is never applied on trust: when a lookup would apply
grants from the cache (not fetched by this very call), it first asks the database which of those grant
ids are no longer approved — one primary-key query (``id IN (…)``), made only when the caller holds a
live grant on a customer being answered (a user without grants costs nothing). So a grant revoked
through one instance stops on every other instance sharing the database at its next request, with or
without Redis; the revoking process also drops its own cache entry.

``in_force`` lists the grants in force for a reviewer (``writes.reviewAccessGrants``: the customers in
its scope, by the customer's region when requested, like the decision queue); ``all_in_force`` lists
every one (the ``policy table --grants`` report).

With an ``AuditLog``, requests and decisions are recorded in the same transaction as the write
(``access_request``, ``access_decision``), and refused decisions (FORBIDDEN) as ``denial`` before the
error is raised — the schema must not record those again. Errors are ``AccessRequestError`` with a
GraphQL code and a message safe to show; store failures ``StoreUnavailable`` (→ ``INTERNAL``).
"""

from __future__ import annotations

import asyncio
import builtins
import time
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal, NoReturn, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from features.cursors import InvalidCursor, decode_cursor, encode_cursor
from policies import Policy, PolicyHolder, Principal
from policies.catalogue import FIELDS

from .audit import AuditEntry, AuditLog, AuditTransaction
from .db import STORE_ERRORS, Database, StoreUnavailable
from .models import access_requests

ErrorCode = Literal["FORBIDDEN", "NOT_FOUND", "BAD_USER_INPUT", "CONFLICT"]
PolicySource = Policy | PolicyHolder | Callable[[], Policy]

MAX_REASON = 500
MAX_FIELDS = 20
MAX_PAGE = 100
_CURSOR_KIND = "access"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class AccessRequestError(Exception):
    """A refused access-request operation. ``code``: the GraphQL error code; ``str(error)``: a message
    that names fields and rules, never values. ``audited``: the refusal is already in the audit log."""

    def __init__(self, code: ErrorCode, message: str, *, audited: bool = False) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message
        self.audited = audited


class AccessRequestStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"  # and the grant is live
    DENIED = "denied"
    EXPIRED = "expired"  # approved, and the grant has ended
    REVOKED = "revoked"  # approved, then ended early by an approver (revoke())


class AccountRef(Protocol):
    """What the store reads of a customer (``connectors.models.Account`` fits)."""

    @property
    def account_no(self) -> str: ...

    @property
    def owner_id(self) -> str | None: ...

    @property
    def region(self) -> str: ...


@dataclass(frozen=True, slots=True)
class AuditContext:
    """The GraphQL request an operation belongs to, for its audit records."""

    request_id: str
    operation_name: str | None = None
    operation_type: str = "mutation"


@dataclass(frozen=True, slots=True)
class AccessRequest:
    id: str  # also the grant's id once approved
    requester_sub: str
    requester_roles: tuple[str, ...]
    account_no: str
    account_region: str  # when requested
    fields: tuple[str, ...]
    reason: str
    status: AccessRequestStatus  # as of when it was read
    created_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    expires_at: datetime | None  # approved: when the grant ends
    revoked_by: str | None = None
    revoked_at: datetime | None = None
    revoke_reason: str | None = None

    @property
    def grant_id(self) -> str | None:
        granted = (AccessRequestStatus.APPROVED, AccessRequestStatus.EXPIRED, AccessRequestStatus.REVOKED)
        return self.id if self.status in granted else None

    @property
    def cursor(self) -> str:
        micros = (self.created_at - _EPOCH) // timedelta(microseconds=1)
        return encode_cursor(_CURSOR_KIND, str(micros), self.id)


@dataclass(frozen=True, slots=True)
class AccessRequestPage:
    requests: builtins.list[AccessRequest]  # newest first
    has_next_page: bool
    end_cursor: str | None


@dataclass(frozen=True, slots=True)
class GrantFilter:
    """Narrows ``in_force``; conditions combine with AND. ``region``: the customer's when requested."""

    user_sub: str | None = None
    account_no: str | None = None
    field: str | None = None
    region: str | None = None


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _clean_reason(reason: str) -> str:
    """A reason as stored; BAD_USER_INPUT when missing, too long or with control characters."""
    text = reason.strip()
    if not text:
        raise _fail("BAD_USER_INPUT", "reason: say why")
    if len(text) > MAX_REASON:
        raise _fail("BAD_USER_INPUT", f"reason: at most {MAX_REASON} characters")
    if any(ord(c) < 32 and c not in "\n\t" for c in text):
        raise _fail("BAD_USER_INPUT", "reason: control characters are not allowed")
    return text


def _fail(code: ErrorCode, message: str) -> AccessRequestError:
    return AccessRequestError(code, message)


class AccessRequests:
    """The access-request store. ``policy``: a ``Policy``, a ``PolicyHolder`` (its current policy is
    used on every call) or a callable returning one. ``audit``: record requests, decisions and
    refusals (recommended; the gateway passes its ``AuditLog``). ``clock``: the time (tests)."""

    def __init__(
        self,
        database: Database,
        policy: PolicySource,
        *,
        audit: AuditLog | None = None,
        cache_ttl: float = 2.0,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.db = database
        self._policy_source = policy
        self.audit = audit
        self.cache_ttl = cache_ttl
        self.clock = clock
        # requester sub -> (fetched at (monotonic), its live grants: (grant id, account, fields, expires))
        self._cache: dict[str, tuple[float, list[tuple[str, str, tuple[str, ...], datetime]]]] = {}
        self._generation = 0  # bumped by every invalidation: a query that straddles one is not cached
        # who holds a live grant: (fetched at (monotonic), requester subs), and the query reading it
        self._holders: tuple[float, set[str]] | None = None
        self._holders_query: asyncio.Future[set[str]] | None = None
        self.holder_queries = 0  # database queries for who holds a grant (tests, metrics)
        self.grant_queries = 0  # database queries made by active_grants (tests, metrics)
        self.revocation_checks = 0  # cached grants re-checked against the database before use

    def _policy(self) -> Policy:
        source = self._policy_source
        if isinstance(source, Policy):
            return source
        if isinstance(source, PolicyHolder):
            return source.policy
        return source()

    # --- requesting -----------------------------------------------------------------------------

    async def request(
        self,
        principal: Principal,
        account: AccountRef,
        fields: Sequence[str],
        reason: str,
        *,
        context: AuditContext | None = None,
    ) -> AccessRequest:
        """Ask for ``fields`` of ``account`` (a customer the caller sees, fetched by the schema).

        BAD_USER_INPUT: no fields, too many, an unknown one, one the caller already gets as it is, a
        missing or overlong reason. NOT_FOUND: the customer is outside the caller's rows. CONFLICT:
        a pending request of the caller's already asks for one of the fields of this customer."""
        policy = self._policy()
        names: list[str] = []
        for name in fields:
            name = name.strip()
            if name and name not in names:
                names.append(name)
        if not names:
            raise _fail("BAD_USER_INPUT", "fields: name at least one field to request")
        if len(names) > MAX_FIELDS:
            raise _fail("BAD_USER_INPUT", f"fields: at most {MAX_FIELDS} fields per request")
        view = policy.view(principal, account)
        if not view.visible:
            raise _fail("NOT_FOUND", "No such customer.")  # the same words as for an unknown customer
        for name in names:
            if name not in FIELDS:
                raise _fail("BAD_USER_INPUT", f"fields: unknown field {name[:64]!r}")
            if not policy.requestable(principal, account, name):
                raise _fail(
                    "BAD_USER_INPUT", f"fields: {name} is not masked or denied to you on this customer"
                )
        text = reason.strip()
        if not text:
            raise _fail("BAD_USER_INPUT", "reason: say why you need access")
        if len(text) > MAX_REASON:
            raise _fail("BAD_USER_INPUT", f"reason: at most {MAX_REASON} characters")
        if any(ord(c) < 32 and c not in "\n\t" for c in text):
            raise _fail("BAD_USER_INPUT", "reason: control characters are not allowed")
        now = self.clock()
        row: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "requester_sub": principal.sub,
            "requester_roles": sorted(principal.roles),
            "account_no": account.account_no,
            "account_region": account.region,
            "account_owner": account.owner_id,
            "fields": names,
            "reason": text,
            "status": "pending",
            "created_at": now,
            "decided_by": None,
            "decided_at": None,
            "expires_at": None,
        }
        async with self._writing() as (conn, tx):
            pending = await conn.execute(
                sa.select(access_requests.c.fields).where(
                    access_requests.c.requester_sub == principal.sub,
                    access_requests.c.account_no == account.account_no,
                    access_requests.c.status == "pending",
                )
            )
            asked = {name for (taken,) in pending for name in taken}
            overlap = [name for name in names if name in asked]
            if overlap:
                raise _fail(
                    "CONFLICT",
                    f"you already have a pending request for {', '.join(overlap)} on this customer",
                )
            await conn.execute(access_requests.insert().values(**row))
            if tx is not None:
                tx.add(
                    self._entry(
                        "access_request",
                        principal,
                        context,
                        "requestAccess",
                        account.account_no,
                        fields={account.account_no: {n: view[n].effect.name.lower() for n in names}},
                        after={"status": "pending", "fields": names, "reason": text},
                        detail={"accessRequestId": row["id"]},
                    )
                )
        return _from_row(row, now)

    # --- deciding -------------------------------------------------------------------------------

    async def decide(
        self,
        approver: Principal,
        request_id: str,
        approve: bool,
        ttl: timedelta | None,
        account: AccountRef,
        *,
        context: AuditContext | None = None,
    ) -> AccessRequest:
        """Approve (for ``ttl``, at most the policy's ``access_requests.max_ttl``) or refuse a pending
        request. ``account``: the request's customer as it is now (``get()`` tells its account number).

        NOT_FOUND: no such request. FORBIDDEN: one's own request, or the policy does not let the
        approver decide for this customer (audited). CONFLICT: already decided. BAD_USER_INPUT: ``ttl``
        missing, not positive or too long; ``account`` is not the request's customer."""
        policy = self._policy()
        current = await self.get(request_id)
        if current is None:
            raise _fail("NOT_FOUND", "access request not found")
        if account.account_no != current.account_no:
            raise _fail("BAD_USER_INPUT", "the customer given is not the request's customer")
        if approver.sub == current.requester_sub:
            await self._refuse(
                approver,
                context,
                "decideAccessRequest",
                current.account_no,
                "you cannot decide your own access request",
                {"accessRequestId": current.id},
            )
        verdict = policy.can_write(approver, "decideAccessRequest", account, requester=current.requester_sub)
        if not verdict.allowed:
            await self._refuse(
                approver,
                context,
                "decideAccessRequest",
                current.account_no,
                f"Not allowed: {verdict.rule}.",  # the rule, never the policy file's path
                {"accessRequestId": current.id},
            )
        if current.status is not AccessRequestStatus.PENDING:
            raise _fail("CONFLICT", f"this access request is already {current.status.value}")
        expires_at: datetime | None = None
        now = self.clock()
        if approve:
            limit = policy.access_request_max_ttl
            if ttl is None or ttl <= timedelta(0):
                raise _fail("BAD_USER_INPUT", "ttl: an approval needs a positive duration")
            if ttl > limit:
                raise _fail("BAD_USER_INPUT", f"ttl: at most {_duration(limit)}")
            expires_at = now + ttl
        status = "approved" if approve else "denied"
        async with self._writing() as (conn, tx):
            updated = await conn.execute(
                access_requests.update()
                .where(access_requests.c.id == request_id, access_requests.c.status == "pending")
                .values(status=status, decided_by=approver.sub, decided_at=now, expires_at=expires_at)
            )
            if updated.rowcount != 1:
                raise _fail("CONFLICT", "this access request has just been decided by someone else")
            if tx is not None:
                after: dict[str, Any] = {"status": status, "requester": current.requester_sub}
                if approve:
                    assert ttl is not None and expires_at is not None
                    after |= {"fields": list(current.fields), "expiresAt": expires_at}
                tx.add(
                    self._entry(
                        "access_decision",
                        approver,
                        context,
                        "decideAccessRequest",
                        current.account_no,
                        before={"status": "pending"},
                        after=after,
                        grant_id=request_id if approve else None,
                        detail={"accessRequestId": request_id}
                        | ({"ttlSeconds": int(ttl.total_seconds())} if approve and ttl else {}),
                    )
                )
        self.invalidate(current.requester_sub)
        decided = AccessRequest(
            id=current.id,
            requester_sub=current.requester_sub,
            requester_roles=current.requester_roles,
            account_no=current.account_no,
            account_region=current.account_region,
            fields=current.fields,
            reason=current.reason,
            status=AccessRequestStatus(status),
            created_at=current.created_at,
            decided_by=approver.sub,
            decided_at=now,
            expires_at=expires_at,
        )
        return decided

    # --- revoking -------------------------------------------------------------------------------

    async def revoke(
        self,
        revoker: Principal,
        grant_id: str,
        reason: str,
        account: AccountRef,
        *,
        context: AuditContext | None = None,
    ) -> AccessRequest:
        """End a live grant now, with a reason. ``account``: the grant's customer as it is now.

        NOT_FOUND: no such grant. BAD_USER_INPUT: ``account`` is not the grant's customer; a missing,
        overlong or control-character reason. FORBIDDEN: the policy's ``revokeAccessGrant`` rule does not
        let the revoker act on this customer (audited). CONFLICT: not a live grant (pending, denied,
        expired, already revoked). The revocation and its ``access_revocation`` record commit in one
        transaction; this process forgets the requester's cached grants, and every process re-checks a
        cached grant before applying it (``active_grants``), so the grant stops at once everywhere."""
        policy = self._policy()
        current = await self.get(grant_id)
        if current is None:
            raise _fail("NOT_FOUND", "access grant not found")
        if account.account_no != current.account_no:
            raise _fail("BAD_USER_INPUT", "the customer given is not the grant's customer")
        verdict = policy.can_write(revoker, "revokeAccessGrant", account)
        if not verdict.allowed:
            await self._refuse(
                revoker,
                context,
                "revokeAccessGrant",
                current.account_no,
                f"Not allowed: {verdict.rule}.",
                {"accessRequestId": current.id},
            )
        if current.status is not AccessRequestStatus.APPROVED:
            what = {
                AccessRequestStatus.PENDING: "is a pending request, not a grant",
                AccessRequestStatus.DENIED: "was denied, so it is not a grant",
                AccessRequestStatus.EXPIRED: "has already ended",
                AccessRequestStatus.REVOKED: "is already revoked",
            }[current.status]
            raise _fail("CONFLICT", f"this access grant {what}")
        text = _clean_reason(reason)
        now = self.clock()
        async with self._writing() as (conn, tx):
            c = access_requests.c
            updated = await conn.execute(
                access_requests.update()
                .where(c.id == current.id, c.status == "approved", c.expires_at > now)
                .values(status="revoked", revoked_by=revoker.sub, revoked_at=now, revoke_reason=text)
            )
            if updated.rowcount != 1:
                raise _fail("CONFLICT", "this access grant has just ended or been revoked")
            if tx is not None:
                tx.add(
                    self._entry(
                        "access_revocation",
                        revoker,
                        context,
                        "revokeAccessGrant",
                        current.account_no,
                        before={"status": "approved", "expiresAt": current.expires_at},
                        after={"status": "revoked", "reason": text, "requester": current.requester_sub},
                        grant_id=current.id,
                        detail={
                            "accessRequestId": current.id,
                            "fields": list(current.fields),
                            "requester": current.requester_sub,
                        },
                    )
                )
        self.invalidate(current.requester_sub)
        return AccessRequest(
            id=current.id,
            requester_sub=current.requester_sub,
            requester_roles=current.requester_roles,
            account_no=current.account_no,
            account_region=current.account_region,
            fields=current.fields,
            reason=current.reason,
            status=AccessRequestStatus.REVOKED,
            created_at=current.created_at,
            decided_by=current.decided_by,
            decided_at=current.decided_at,
            expires_at=current.expires_at,
            revoked_by=revoker.sub,
            revoked_at=now,
            revoke_reason=text,
        )

    async def _refuse(
        self,
        principal: Principal,
        context: AuditContext | None,
        operation: str,
        account_no: str | None,
        message: str,
        detail: Mapping[str, Any] | None = None,
    ) -> NoReturn:
        """Record the denial (when auditing) and raise FORBIDDEN."""
        audited = False
        if self.audit is not None:
            await self.audit.record(
                [
                    self._entry(
                        "denial",
                        principal,
                        context,
                        operation,
                        account_no,
                        detail={**(detail or {}), "code": "FORBIDDEN", "rule": message},
                    )
                ]
            )
            audited = True
        raise AccessRequestError("FORBIDDEN", message, audited=audited)

    # --- reading --------------------------------------------------------------------------------

    async def get(self, request_id: str) -> AccessRequest | None:
        """The request with this id, whoever asks (the schema decides who may see it)."""
        try:
            parsed = uuid.UUID(request_id)
        except ValueError:
            return None
        now = self.clock()
        async with self._reading() as conn:
            row = (
                (await conn.execute(sa.select(access_requests).where(access_requests.c.id == str(parsed))))
                .mappings()
                .one_or_none()
            )
        return _from_row(row, now) if row is not None else None

    async def list(
        self,
        principal: Principal,
        *,
        mine: bool,
        status: AccessRequestStatus | None = None,
        first: int = 20,
        after: str | None = None,
        account_no: str | None = None,
        context: AuditContext | None = None,
    ) -> AccessRequestPage:
        """``mine=True``: the caller's own requests. ``mine=False``: the requests the caller may decide
        (by the policy's ``decideAccessRequest`` rule and the customer's region/owner when requested;
        never its own) — FORBIDDEN (audited) when it may decide none. Newest first."""
        if not 1 <= first <= MAX_PAGE:
            raise _fail("BAD_USER_INPUT", f"first: between 1 and {MAX_PAGE}")
        now = self.clock()
        c = access_requests.c
        conditions: list[sa.ColumnElement[bool]] = []
        if mine:
            conditions.append(c.requester_sub == principal.sub)
        else:
            scope = decidable_condition(self._policy(), principal)
            if scope is None:
                await self._refuse(
                    principal, context, "accessRequests", None, "you may not decide access requests"
                )
            conditions += [scope, c.requester_sub != principal.sub]
        if status is AccessRequestStatus.PENDING:
            conditions.append(c.status == "pending")
        elif status is AccessRequestStatus.DENIED:
            conditions.append(c.status == "denied")
        elif status is AccessRequestStatus.APPROVED:
            conditions += [c.status == "approved", c.expires_at > now]
        elif status is AccessRequestStatus.EXPIRED:
            conditions += [c.status == "approved", c.expires_at <= now]
        elif status is AccessRequestStatus.REVOKED:
            conditions.append(c.status == "revoked")
        if account_no is not None:
            conditions.append(c.account_no == account_no)
        if after is not None:
            conditions.append(_after(after))
        return await self._page(conditions, first, now)

    # --- grants in force (review) ---------------------------------------------------------------

    async def in_force(
        self,
        principal: Principal,
        filter: GrantFilter | None = None,
        *,
        first: int = 20,
        after: str | None = None,
        context: AuditContext | None = None,
    ) -> AccessRequestPage:
        """The live grants on the customers the policy's ``reviewAccessGrants`` rule lets ``principal``
        review (by the customer's region when requested, like the decision queue), newest first.

        FORBIDDEN (audited): it may review none. BAD_USER_INPUT: ``first`` out of range, an unknown
        field, an empty filter value. ``InvalidCursor``: ``after`` is not a cursor of this list."""
        if not 1 <= first <= MAX_PAGE:
            raise _fail("BAD_USER_INPUT", f"first: between 1 and {MAX_PAGE}")
        f = filter or GrantFilter()
        for label, value in (
            ("userId", f.user_sub),
            ("customerId", f.account_no),
            ("field", f.field),
            ("region", f.region),
        ):
            if value is not None and not value.strip():
                raise _fail("BAD_USER_INPUT", f"filter.{label}: must not be empty")
        if f.field is not None and f.field not in FIELDS:
            raise _fail("BAD_USER_INPUT", f"filter.field: unknown field {f.field[:64]!r}")
        scope = scope_condition(self._policy(), principal, "reviewAccessGrants")
        if scope is None:
            await self._refuse(principal, context, "activeGrants", None, "you may not review access grants")
        now = self.clock()
        c = access_requests.c
        conditions: list[sa.ColumnElement[bool]] = [scope, c.status == "approved", c.expires_at > now]
        if f.user_sub is not None:
            conditions.append(c.requester_sub == f.user_sub)
        if f.account_no is not None:
            conditions.append(c.account_no == f.account_no)
        if f.region is not None:
            conditions.append(c.account_region == f.region)
        if f.field is not None:  # a catalogue name (letters and dots): matched as a JSON string
            conditions.append(sa.cast(c.fields, sa.Text).contains(f'"{f.field}"', autoescape=True))
        if after is not None:
            conditions.append(_after(after))
        return await self._page(conditions, first, now)

    async def _page(
        self, conditions: builtins.list[sa.ColumnElement[bool]], first: int, now: datetime
    ) -> AccessRequestPage:
        """The requests meeting ``conditions``, newest first, ``first`` of them and whether more follow."""
        c = access_requests.c
        stmt = (
            sa.select(access_requests)
            .where(*conditions)
            .order_by(c.created_at.desc(), c.id.desc())
            .limit(first + 1)
        )
        async with self._reading() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        found = [_from_row(row, now) for row in rows[:first]]
        return AccessRequestPage(
            requests=found,
            has_next_page=len(rows) > first,
            end_cursor=found[-1].cursor if found else None,
        )

    async def all_in_force(self, now: datetime | None = None) -> builtins.list[AccessRequest]:
        """Every grant in force (the operators' report), by customer, then user, then end."""
        return await grants_in_force(self.db, now if now is not None else self.clock())

    # --- grants (hot path) ----------------------------------------------------------------------

    async def active_grants(
        self, principal_sub: str, account_nos: Collection[str], now: datetime | None = None
    ) -> dict[str, dict[str, str]]:
        """The caller's live grants on these customers: ``{account_no: {field: grant_id}}`` (only the
        customers that have some). When two grants open one field, the later-ending one is named."""
        if not account_nos:
            return {}
        now = now if now is not None else self.clock()
        grants, fresh = await self._grants_of(principal_sub, now)
        if not grants:
            return {}
        wanted = account_nos if isinstance(account_nos, set | frozenset | Mapping) else set(account_nos)
        live = [g for g in grants if g[1] in wanted and g[3] > now]
        if not live:
            return {}
        if not fresh:  # from the cache: never apply a grant that was revoked meanwhile (any process)
            revoked = await self._no_longer_approved(sorted({g[0] for g in live}))
            if revoked:
                self.invalidate(principal_sub)
                live = [g for g in live if g[0] not in revoked]
        result: dict[str, dict[str, str]] = {}
        ends: dict[tuple[str, str], datetime] = {}
        for grant_id, account_no, names, expires_at in live:
            per = result.setdefault(account_no, {})
            for name in names:
                key = (account_no, name)
                if key not in ends or expires_at > ends[key]:
                    ends[key] = expires_at
                    per[name] = grant_id
        return result

    async def _no_longer_approved(self, grant_ids: builtins.list[str]) -> set[str]:
        """Which of these grants are not approved any more (revoked): one primary-key query."""
        self.revocation_checks += 1
        c = access_requests.c
        async with self._reading() as conn:
            rows = await conn.execute(sa.select(c.id).where(c.id.in_(grant_ids), c.status != "approved"))
            return {str(i) for (i,) in rows}

    async def _grants_of(
        self, sub: str, now: datetime
    ) -> tuple[builtins.list[tuple[str, str, tuple[str, ...], datetime]], bool]:
        """The user's live grants, and whether they were read from the database by this call."""
        cached = self._cache.get(sub)
        if cached is not None and time.monotonic() - cached[0] < self.cache_ttl:
            return cached[1], False
        if self.cache_ttl > 0 and sub not in await self._grant_holders(now):
            return [], True
        generation = self._generation
        fetched_at = time.monotonic()
        c = access_requests.c
        async with self._reading() as conn:
            rows = (
                await conn.execute(
                    sa.select(c.id, c.account_no, c.fields, c.expires_at).where(
                        c.requester_sub == sub, c.status == "approved", c.expires_at > now
                    )
                )
            ).all()
        self.grant_queries += 1
        grants = [(str(i), str(a), tuple(f), e) for i, a, f, e in rows]
        if generation == self._generation and self.cache_ttl > 0:
            if len(self._cache) >= 10_000:
                self._cache.clear()
            self._cache[sub] = (fetched_at, grants)
        return grants, True

    async def _grant_holders(self, now: datetime) -> set[str]:
        """Who holds an approved grant that has not expired (a superset, see the module docstring):
        one query for every user, at most once per ``cache_ttl``; callers arriving while it runs
        wait for the same one."""
        held = self._holders
        if held is not None and time.monotonic() - held[0] < self.cache_ttl:
            return held[1]
        if self._holders_query is not None:
            return await asyncio.shield(self._holders_query)
        query = self._holders_query = asyncio.get_running_loop().create_future()
        try:
            generation = self._generation
            fetched_at = time.monotonic()
            c = access_requests.c
            async with self._reading() as conn:
                rows = await conn.execute(
                    sa.select(c.requester_sub).where(c.status == "approved", c.expires_at > now).distinct()
                )
                subs = {str(sub) for (sub,) in rows}
            self.holder_queries += 1
            if generation == self._generation:
                self._holders = (fetched_at, subs)
            query.set_result(subs)
            return subs
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                query.cancel()
            else:
                query.set_exception(exc)
                query.exception()  # retrieved here: the waiters (if any) get it too
            raise
        finally:
            self._holders_query = None

    def invalidate(self, sub: str | None = None) -> None:
        """Forget cached grants (of ``sub``, or everyone's)."""
        self._generation += 1
        if sub is None:
            self._cache.clear()
            self._holders = None
        else:
            self._cache.pop(sub, None)
            if self._holders is not None:
                self._holders[1].add(sub)  # may hold one now: look it up

    # --- helpers --------------------------------------------------------------------------------

    @asynccontextmanager
    async def _writing(self) -> AsyncIterator[tuple[AsyncConnection, AuditTransaction | None]]:
        if self.audit is not None:
            async with self.audit.transaction() as tx:
                yield tx.connection, tx
            return
        try:
            async with self.db.write_transaction() as conn:
                yield conn, None
        except STORE_ERRORS as exc:
            raise StoreUnavailable(f"the gateway database is unavailable ({type(exc).__name__})") from None

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.db.read() as conn:
                yield conn
        except STORE_ERRORS as exc:
            raise StoreUnavailable(f"the gateway database is unavailable ({type(exc).__name__})") from None

    @staticmethod
    def _entry(
        kind: Literal["access_request", "access_decision", "access_revocation", "denial"],
        principal: Principal,
        context: AuditContext | None,
        default_operation: str,
        account_no: str | None,
        *,
        fields: Mapping[str, Mapping[str, str]] | None = None,
        before: Any = None,
        after: Any = None,
        grant_id: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> AuditEntry:
        return AuditEntry(
            kind=kind,
            request_id=context.request_id if context is not None else "",
            user_sub=principal.sub,
            roles=principal.roles,
            operation_name=context.operation_name if context is not None else default_operation,
            operation_type=context.operation_type
            if context is not None
            else ("query" if default_operation in ("accessRequests", "activeGrants") else "mutation"),
            fields=fields or {},
            customer_ids=(account_no,) if account_no is not None else (),
            grant_id=grant_id,
            before=before,
            after=after,
            detail=detail,
        )


async def grants_in_force(database: Database, now: datetime) -> builtins.list[AccessRequest]:
    """Every grant in force at ``now``, by customer, then user, then end (no policy needed: the
    ``policy table --grants`` report). ``StoreUnavailable`` when the database cannot be read."""
    c = access_requests.c
    stmt = (
        sa.select(access_requests)
        .where(c.status == "approved", c.expires_at > now)
        .order_by(c.account_no, c.requester_sub, c.expires_at, c.id)
    )
    try:
        async with database.read() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
    except STORE_ERRORS as exc:
        raise StoreUnavailable(f"the gateway database is unavailable ({type(exc).__name__})") from None
    return [_from_row(row, now) for row in rows]


def decidable_condition(policy: Policy, principal: Principal) -> sa.ColumnElement[bool] | None:
    """SQL for "``principal`` may decide requests on this customer" by the policy's
    ``decideAccessRequest`` grants (each within its role's rows), on the customer as it was requested.
    None: the principal may decide none."""
    return scope_condition(policy, principal, "decideAccessRequest")


def scope_condition(policy: Policy, principal: Principal, operation: str) -> sa.ColumnElement[bool] | None:
    """SQL for "the policy's ``operation`` rule lets ``principal`` act on this request's customer" (each
    grant within its role's rows), on the customer as it was requested. None: on no customer."""
    rule = policy.spec.writes.get(operation)
    if rule is None:
        return None
    c = access_requests.c
    region = principal.region

    def atom(name: str) -> sa.ColumnElement[bool] | None:
        if name in ("all", "any"):
            return sa.true()
        if name == "own":
            return c.account_owner == principal.sub
        if name == "pool":
            return c.account_owner.is_(None)
        if name == "region":
            return c.account_region == region if region else None
        return None

    options: builtins.list[sa.ColumnElement[bool]] = []
    for grant in rule.grants:
        role = policy.spec.roles.get(grant.role)
        if role is None or grant.role not in principal.roles:
            continue
        rows = [a for a in (atom(r) for r in sorted(role.rows)) if a is not None]
        scope = atom(grant.scope)
        if not rows or scope is None:
            continue
        options.append(sa.and_(sa.or_(*rows), scope))
    return sa.or_(*options) if options else None


def _after(cursor: str) -> sa.ColumnElement[bool]:
    """Rows after this cursor in (created_at, id) descending order; ``InvalidCursor`` otherwise."""
    micros, last_id = decode_cursor(_CURSOR_KIND, cursor, 2)
    try:
        at = _EPOCH + timedelta(microseconds=int(micros))
    except (ValueError, OverflowError):
        raise InvalidCursor("invalid cursor") from None
    c = access_requests.c
    return sa.or_(c.created_at < at, sa.and_(c.created_at == at, c.id < last_id))


def _duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0 and seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds} seconds"


def _from_row(row: Mapping[Any, Any], now: datetime) -> AccessRequest:
    status = AccessRequestStatus(row["status"])
    expires_at: datetime | None = row["expires_at"]
    if status is AccessRequestStatus.APPROVED and expires_at is not None and expires_at <= now:
        status = AccessRequestStatus.EXPIRED
    return AccessRequest(
        id=row["id"],
        requester_sub=row["requester_sub"],
        requester_roles=tuple(row["requester_roles"]),
        account_no=row["account_no"],
        account_region=row["account_region"],
        fields=tuple(row["fields"]),
        reason=row["reason"],
        status=status,
        created_at=row["created_at"],
        decided_by=row["decided_by"],
        decided_at=row["decided_at"],
        expires_at=expires_at,
        revoked_by=row.get("revoked_by"),
        revoked_at=row.get("revoked_at"),
        revoke_reason=row.get("revoke_reason"),
    )
