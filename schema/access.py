"""Access requests (ask for a field the policy masks or denies; an approver grants it for a while),
access review (the grants in force, revoking one) and the audit log, for the roles the policy lets."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, cast

import strawberry

from connectors import models
from connectors.errors import UpstreamNotFound
from features.store import (
    AccessRequest as StoredRequest,
)
from features.store import (
    AccessRequestError,
    AccessRequests,
    AuditContext,
    AuditFilter,
    GrantFilter,
    InvalidCursor,
)
from features.store import (
    AccessRequestStatus as Stored,
)
from policies.guard import Guard

from .context import RequestContext
from .customer import Customer
from .datum import write_values as _values
from .enums import Region
from .errors import BadUserInput, Conflict, Forbidden, GraphError, NotFound
from .ids import customer_key, encode_id
from .query import PageInfo

_CODES: dict[str, type[GraphError]] = {
    "FORBIDDEN": Forbidden,
    "NOT_FOUND": NotFound,
    "BAD_USER_INPUT": BadUserInput,
    "CONFLICT": Conflict,
}
_MAX_TTL_HOURS = 24 * 7


def _context(info: strawberry.Info) -> RequestContext:
    return cast(RequestContext, info.context)


def _store(context: RequestContext) -> AccessRequests:
    if context.access is None:
        raise GraphError("Access requests are not available.")
    return context.access


def _audit_context(context: RequestContext, operation: str) -> Any:
    return AuditContext(request_id=context.request_id, operation_name=operation)


async def _call(coroutine: Any) -> Any:
    """Run a store call; its refusals become the graph's error codes (already audited by the store)."""
    try:
        return await coroutine
    except AccessRequestError as exc:
        raise _CODES.get(exc.code, GraphError)(exc.message) from None
    except InvalidCursor:
        raise BadUserInput("'after' is not a cursor from this list.") from None


async def _account(context: RequestContext, account_no: str) -> models.Account:
    try:
        return await context.loaders.upstreams.sales.account(account_no)
    except UpstreamNotFound:
        raise NotFound("No such customer.") from None


@strawberry.enum
class AccessRequestStatus(Enum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    REVOKED = "revoked"


@strawberry.type(description="A request to see fields of one customer that the policy masks or denies.")
class AccessRequest:
    id: strawberry.ID
    customer_id: strawberry.ID
    account_no: str
    fields: list[str]
    reason: str
    status: AccessRequestStatus
    requester_id: str
    created_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    expires_at: datetime | None = strawberry.field(description="When an approved grant ends.")
    revoked_by: str | None = strawberry.field(default=None, description="Who ended the grant early.")
    revoked_at: datetime | None = None
    revoke_reason: str | None = None

    @classmethod
    def of(cls, stored: StoredRequest) -> AccessRequest:
        return cls(
            id=strawberry.ID(stored.id),
            customer_id=strawberry.ID(encode_id("Customer", stored.account_no)),
            account_no=stored.account_no,
            fields=list(stored.fields),
            reason=stored.reason,
            status=AccessRequestStatus(stored.status.value),
            requester_id=stored.requester_sub,
            created_at=stored.created_at,
            decided_by=stored.decided_by,
            decided_at=stored.decided_at,
            expires_at=stored.expires_at,
            revoked_by=stored.revoked_by,
            revoked_at=stored.revoked_at,
            revoke_reason=stored.revoke_reason,
        )


@strawberry.type(description="An access grant in force: fields of one customer opened to one user.")
class ActiveGrant:
    id: strawberry.ID = strawberry.field(description="The grant's id (its access request's id).")
    user_id: str = strawberry.field(description="Who holds the grant.")
    customer_id: strawberry.ID
    account_no: str
    customer: Customer | None = strawberry.field(
        description="The customer, through the caller's own read policy (null if it does not see it)."
    )
    region: str = strawberry.field(description="The customer's region when access was requested.")
    fields: list[str]
    reason: str = strawberry.field(description="Why the user asked.")
    granted_by: str | None
    granted_at: datetime | None
    expires_at: datetime | None


@strawberry.type
class ActiveGrantEdge:
    cursor: str
    node: ActiveGrant


@strawberry.type
class ActiveGrantConnection:
    edges: list[ActiveGrantEdge]
    page_info: PageInfo

    @strawberry.field(description="The edges' nodes, for callers that do not need cursors.")
    def nodes(self) -> list[ActiveGrant]:
        return [edge.node for edge in self.edges]


@strawberry.input(description="Narrows `activeGrants`. Filters combine with AND.")
class ActiveGrantFilter:
    user_id: str | None = None
    customer_id: strawberry.ID | None = None
    field: str | None = strawberry.field(default=None, description='A graph field name, e.g. "phone".')
    region: Region | None = strawberry.field(
        default=None, description="The customer's region when access was requested."
    )


@strawberry.type
class AccessRequestConnection:
    nodes: list[AccessRequest]
    has_next_page: bool
    end_cursor: str | None


@strawberry.input
class RequestAccessInput:
    customer_id: strawberry.ID
    fields: list[str] = strawberry.field(description='Graph field names, e.g. ["phone", "payments"].')
    reason: str


@strawberry.input
class DecideAccessRequestInput:
    id: strawberry.ID
    approve: bool
    ttl_hours: int | None = strawberry.field(default=24, description="How long the grant lasts (≤ 168).")


@strawberry.type
class AccessRequestPayload:
    access_request: AccessRequest


@strawberry.type(description="One record of the audit trail.")
class AuditRecord:
    id: int
    at: datetime
    request_id: str
    user_id: str
    roles: list[str]
    operation_name: str | None
    operation_type: str
    kind: str
    customer_ids: list[str]
    fields: strawberry.scalars.JSON
    grant_id: str | None
    before: strawberry.scalars.JSON | None
    after: strawberry.scalars.JSON | None
    detail: strawberry.scalars.JSON | None
    redacted: list[str] = strawberry.field(
        description="The values removed by an erasure or by retention (paths like before.email): the "
        "record keeps its facts, its hash still verifies."
    )
    hash: str


@strawberry.type
class AuditRecordConnection:
    nodes: list[AuditRecord]
    has_next_page: bool
    end_cursor: str | None


@strawberry.input
class AuditLogFilter:
    user_id: str | None = None
    customer_id: strawberry.ID | None = None
    kinds: list[str] | None = None
    operation_name: str | None = None
    request_id: str | None = None
    grant_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@strawberry.type
class AccessQuery:
    @strawberry.field(description="Your requests (mine: true) or those you may decide (mine: false).")
    async def access_requests(
        self,
        info: strawberry.Info,
        mine: bool = True,
        status: AccessRequestStatus | None = None,
        first: int = 20,
        after: str | None = None,
    ) -> AccessRequestConnection:
        context = _context(info)
        guard = context.require_guard()
        if not 1 <= first <= context.max_first:
            raise BadUserInput(f"'first' must be between 1 and {context.max_first}.")
        page = await _call(
            _store(context).list(
                guard.principal,
                mine=mine,
                status=Stored(status.value) if status else None,
                first=first,
                after=after,
                context=_audit_context(context, "accessRequests"),
            )
        )
        return AccessRequestConnection(
            nodes=[AccessRequest.of(r) for r in page.requests],
            has_next_page=page.has_next_page,
            end_cursor=page.end_cursor,
        )

    @strawberry.field(
        description="The access grants in force, newest first: a sales_manager's on customers of its "
        "region, a data_steward's all (the policy's writes.reviewAccessGrants)."
    )
    async def active_grants(
        self,
        info: strawberry.Info,
        filter: ActiveGrantFilter | None = None,
        first: int = 20,
        after: str | None = None,
    ) -> ActiveGrantConnection:
        context = _context(info)
        guard = context.require_guard()
        if not 1 <= first <= context.max_first:
            raise BadUserInput(f"'first' must be between 1 and {context.max_first}.")
        f = filter or ActiveGrantFilter()
        query = GrantFilter(
            user_sub=f.user_id,
            account_no=customer_key(f.customer_id) if f.customer_id is not None else None,
            field=f.field,
            region=f.region.value if f.region is not None else None,
        )
        page = await _call(
            _store(context).in_force(
                guard.principal,
                query,
                first=first,
                after=after,
                context=_audit_context(context, "activeGrants"),
            )
        )
        # each customer through the caller's own read policy (and its own grants), like everywhere
        wanted = sorted({g.account_no for g in page.requests})
        customers: dict[str, Customer] = {}
        if wanted:
            found = [a for a in await context.loaders.account.load_many(wanted) if a is not None]
            await context.load_grants([a.account_no for a in found])
            for account in found:
                view = guard.view(account)
                if view.visible:
                    customers[account.account_no] = Customer.from_account(account, view)
        edges = [
            ActiveGrantEdge(
                cursor=g.cursor,
                node=ActiveGrant(
                    id=strawberry.ID(g.id),
                    user_id=g.requester_sub,
                    customer_id=strawberry.ID(encode_id("Customer", g.account_no)),
                    account_no=g.account_no,
                    customer=customers.get(g.account_no),
                    region=g.account_region,
                    fields=list(g.fields),
                    reason=g.reason,
                    granted_by=g.decided_by,
                    granted_at=g.decided_at,
                    expires_at=g.expires_at,
                ),
            )
            for g in page.requests
        ]
        return ActiveGrantConnection(
            edges=edges,
            page_info=PageInfo(
                has_next_page=page.has_next_page,
                has_previous_page=after is not None,
                start_cursor=edges[0].cursor if edges else None,
                end_cursor=page.end_cursor,
            ),
        )

    @strawberry.field(description="The audit trail, newest first (auditors and data stewards).")
    async def audit_log(
        self,
        info: strawberry.Info,
        filter: AuditLogFilter | None = None,
        first: int = 50,
        after: str | None = None,
    ) -> AuditRecordConnection:
        context = _context(info)
        guard = context.require_guard()
        decision = guard.can_write("readAuditLog")
        if not decision.allowed:
            raise Forbidden(f"Not allowed: {decision.rule}.")
        if context.audit_log is None:
            raise GraphError("The audit log is not available.")
        if not 1 <= first <= 500:
            raise BadUserInput("'first' must be between 1 and 500.")
        f = filter or AuditLogFilter()
        query = AuditFilter(
            user_sub=f.user_id,
            customer_id=customer_key(f.customer_id) if f.customer_id else None,
            kinds=f.kinds,
            operation_name=f.operation_name,
            request_id=f.request_id,
            grant_id=f.grant_id,
            since=f.since,
            until=f.until,
        )
        log = context.audit_log
        try:
            page = await log.query(query, first=first, after=after)
        except InvalidCursor:
            raise BadUserInput("'after' is not a cursor from this list.") from None
        shown = await _as_the_reader_may_see(context, guard, page.records)
        return AuditRecordConnection(
            nodes=[
                AuditRecord(
                    id=r.id,
                    at=r.at,
                    request_id=r.request_id,
                    user_id=r.user_sub,
                    roles=list(r.roles),
                    operation_name=r.operation_name,
                    operation_type=r.operation_type,
                    kind=r.kind,
                    customer_ids=list(r.customer_ids),
                    fields=cast(strawberry.scalars.JSON, dict(r.fields)),
                    grant_id=r.grant_id,
                    before=before,
                    after=after,
                    detail=cast(strawberry.scalars.JSON, detail),
                    redacted=list(r.redacted),
                    hash=r.hash,
                )
                for r, (before, after, detail) in zip(page.records, shown, strict=True)
            ],
            has_next_page=page.has_next_page,
            end_cursor=page.end_cursor,
        )


async def _as_the_reader_may_see(
    context: RequestContext, guard: Guard, records: Sequence[Any]
) -> list[tuple[Any, Any, dict[str, Any] | None]]:
    """Each record's before / after / detail with every value as the reader's policy shows that datum
    on that customer (policy.md, the same datum): a role denied ``phone`` never reads a phone here.
    A key that carries no known customer field is left out (deny by default); a search term shows
    only to a reader who sees contact names and e-mails in clear everywhere."""
    wanted = sorted({r.customer_ids[0] for r in records if (r.before or r.after) and r.customer_ids})
    found = await asyncio.gather(*(_maybe(context.loaders.account.get(no)) for no in wanted))
    accounts = dict(zip(wanted, found, strict=True))
    clear_search = guard.clear_everywhere("email") and guard.clear_everywhere("contactName")
    shown: list[tuple[Any, Any, dict[str, Any] | None]] = []
    for record in records:
        account = accounts.get(record.customer_ids[0]) if record.customer_ids else None
        operation = str((record.detail or {}).get("operation", ""))
        detail = dict(record.detail) if record.detail is not None else None
        if detail is not None and "search" in detail and not clear_search:
            detail["search"] = "****"
        shown.append(
            (
                _values(guard, account, operation, record.before),
                _values(guard, account, operation, record.after),
                detail,
            )
        )
    return shown


async def _maybe(found: Any) -> models.Account | None:
    """The account, or None when it is gone or its system failed (the strictest decision then)."""
    try:
        account = await found if isinstance(found, asyncio.Future) else found
    except Exception:
        return None
    return account if isinstance(account, models.Account) else None


@strawberry.type
class AccessMutation:
    @strawberry.mutation(description="Ask for fields of one customer that the policy masks or denies you.")
    async def request_access(self, info: strawberry.Info, input: RequestAccessInput) -> AccessRequestPayload:
        context = _context(info)
        guard = context.require_guard()
        account = await _account(context, customer_key(input.customer_id))
        stored = await _call(
            _store(context).request(
                guard.principal,
                account,
                input.fields,
                input.reason,
                context=_audit_context(context, "requestAccess"),
            )
        )
        return AccessRequestPayload(access_request=AccessRequest.of(stored))

    @strawberry.mutation(description="Approve (for ttlHours) or deny a request; never your own.")
    async def decide_access_request(
        self, info: strawberry.Info, input: DecideAccessRequestInput
    ) -> AccessRequestPayload:
        context = _context(info)
        guard = context.require_guard()
        store = _store(context)
        hours = input.ttl_hours if input.ttl_hours is not None else 24
        if input.approve and not 1 <= hours <= _MAX_TTL_HOURS:
            raise BadUserInput(f"'ttlHours' must be between 1 and {_MAX_TTL_HOURS}.")
        existing = await _call(store.get(str(input.id)))
        if existing is None:
            raise NotFound("No such access request.")
        account = await _account(context, existing.account_no)
        stored = await _call(
            store.decide(
                guard.principal,
                str(input.id),
                input.approve,
                timedelta(hours=hours) if input.approve else None,
                account,
                context=_audit_context(context, "decideAccessRequest"),
            )
        )
        return AccessRequestPayload(access_request=AccessRequest.of(stored))

    @strawberry.mutation(
        description="End an access grant now, with a reason (the approvers of its customer: "
        "writes.revokeAccessGrant). Effective at once on every gateway instance; audited."
    )
    async def revoke_access_grant(
        self, info: strawberry.Info, id: strawberry.ID, reason: str
    ) -> AccessRequestPayload:
        context = _context(info)
        guard = context.require_guard()
        store = _store(context)
        existing = await _call(store.get(str(id)))
        if existing is None:
            raise NotFound("No such access grant.")
        account = await _account(context, existing.account_no)
        stored = await _call(
            store.revoke(
                guard.principal,
                str(id),
                reason,
                account,
                context=_audit_context(context, "revokeAccessGrant"),
            )
        )
        return AccessRequestPayload(access_request=AccessRequest.of(stored))
