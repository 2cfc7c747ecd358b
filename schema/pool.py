"""The public pool in the graph: ``publicPool``, ``poolHistory``, ``claimCustomer``, ``releaseCustomer``
and ``recycleDormant`` (the rules: ``features/pool/rules.py``; the sweep: ``features/pool/sweep.py``).

Writes follow ``schema/mutations.py``: the customer is read fresh from the sales system, the policy's
write rule decides (``claimCustomer``, ``releaseCustomer``, ``assignOwner`` per customer for
``recycleDormant``), the owner changes with ``If-Match`` of the version read (two reps racing: one
wins, the other gets ``CONFLICT``), the caches are evicted, the write is recorded, and the answer goes
through the read policy. Pool rules refuse with ``FORBIDDEN`` and ``extensions.reason``
(``OWNED_LIMIT``, ``COOLDOWN``); the policy refuses with ``FORBIDDEN`` and ``reason: POLICY``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from datetime import datetime
from enum import Enum
from typing import Annotated, Protocol, cast

import strawberry

from connectors import models
from connectors.errors import UpstreamConflict, UpstreamError, UpstreamInvalid, UpstreamNotFound
from features.pool import rules
from features.pool.rules import (
    HistoryPage,
    PoolEventKind,
    PoolRecord,
    PoolRules,
    RecycleCause,
    Review,
    ReviewState,
)
from features.pool.store import MAX_PAGE as MAX_HISTORY_PAGE
from features.pool.store import history_cursor
from features.store.db import StoreUnavailable

from .context import RequestContext, WriteRecord
from .customer import Customer
from .dormancy import dormant_flags, extra_emails_of
from .enums import CustomerStatus, Region
from .errors import BadUserInput, Conflict, Forbidden, GraphError, NotFound
from .ids import customer_key
from .mutations import answer_with_policy, clean_text, refused_values
from .paging import MAX_PER_PAGE, decode_cursor, fetch_page
from .query import CustomerFilter, PageInfo, row_streams

log = logging.getLogger(__name__)

DORMANT_SCAN_PAGES = 5  # recycleDormant: accounts scanned per call = 5 × 200 (then endCursor)
WRITES_IN_FLIGHT = 8


class PoolPort(Protocol):
    """What the schema needs of the pool (``features.pool.PoolService`` fits)."""

    rules: PoolRules

    def recycle_at(
        self, account: models.Account, activities: Sequence[models.Activity], now: datetime
    ) -> datetime | None: ...

    def claiming(self, sub: str) -> AbstractAsyncContextManager[None]: ...

    async def last_loss(self, owner_id: str, account_no: str, since: datetime) -> datetime | None: ...

    async def record(self, records: Sequence[PoolRecord]) -> None: ...

    async def entries(self, pool_since: Mapping[str, datetime | None]) -> dict[str, PoolRecord]: ...

    async def history(self, account_no: str, first: int, after: str | None) -> HistoryPage: ...

    async def review_states(self, account_nos: Sequence[str]) -> dict[str, Review]: ...

    async def open_review(
        self,
        *,
        account_no: str,
        region: str,
        cause: str,
        note: str | None,
        previous_owner: str | None,
        actor: str,
        at: datetime,
    ) -> int | None: ...

    async def cancel_review(self, review_id: int | None) -> None: ...

    async def review_queue(
        self, *, region: str | None, first: int, after: str | None
    ) -> tuple[list[Review], str | None, bool]: ...

    async def decide_review(
        self, review: Review, state: ReviewState, record: PoolRecord, *, note: str | None
    ) -> bool: ...


# --- enums and types ----------------------------------------------------------------------------


@strawberry.enum(description="Why a sales rep gives a customer back to the pool.")
class ReleaseReason(Enum):
    NO_DEMAND = "no_demand"
    UNREACHABLE = "unreachable"
    DUPLICATE = "duplicate"
    WRONG_REGION = "wrong_region"
    CAPACITY = "capacity"
    OTHER = "other"


@strawberry.enum(description="How a customer entered the pool.")
class PoolEntryReason(Enum):
    RELEASED = "released"  # its owner released it (releaseCustomer)
    RECYCLED_INACTIVE = "recycled_inactive"  # its owner logged no activity (the sweep)
    RECYCLED_DORMANT = "recycled_dormant"  # no contact for 365 days (recycleDormant)
    UNKNOWN = "unknown"  # otherwise: assignOwner, the sales system itself, before the gateway's history


@strawberry.enum(description="What happened in a customer's pool history.")
class PoolHistoryKind(Enum):
    CLAIM = "claim"
    RELEASE = "release"
    RECYCLE = "recycle"
    WARNING = "warning"  # its owner was told it will be recycled (recycleAt)
    REASSIGN = "reassign"  # a manager or steward gave it to another owner (or to the pool)
    REVIEW = "review"  # a reviewer decided it after it entered the pool


@strawberry.enum(description="Where a customer that entered the pool stands in its review.")
class PoolReviewState(Enum):
    PENDING = "pending"  # waiting for a reviewer: not claimable
    APPROVED = "approved"  # claimable
    RETURNED = "returned"  # sent back to an owner
    CLEANUP = "cleanup"  # marked for data cleanup: not claimable


@strawberry.enum(description="A reviewer's decision on a customer that entered the pool.")
class PoolReviewDecision(Enum):
    APPROVE = "approved"
    RETURN = "returned"
    CLEANUP = "cleanup"


@strawberry.type(
    description="The review a customer waits for after entering the pool (pool_review settings)."
)
class PoolReview:
    state: PoolReviewState
    cause: str = strawberry.field(
        description="Why it entered: the release reason, recycle cause or reassign."
    )
    note: str | None = strawberry.field(description="The release's note (for its author and reviewers).")
    previous_owner: strawberry.ID | None
    entered_at: datetime
    entered_by: str
    decided_by: str | None
    decided_at: datetime | None
    decision_note: str | None

    @classmethod
    def of(cls, review: Review, *, sees_notes: bool) -> PoolReview:
        return cls(
            state=PoolReviewState(review.state.value),
            cause=review.cause,
            note=review.note if sees_notes else None,
            previous_owner=strawberry.ID(review.previous_owner) if review.previous_owner else None,
            entered_at=review.entered_at,
            entered_by=review.entered_by,
            decided_by=review.decided_by,
            decided_at=review.decided_at,
            decision_note=review.decision_note if sees_notes else None,
        )


@strawberry.type(description="A customer waiting for review, with its background (reviewers).")
class PoolReviewItem:
    customer: Customer = strawberry.field(
        description="The customer: its lastContactAt, tickets(status: [NEW, OPEN, PENDING]), contracts and "
        "possibleDuplicates as the reviewer may see them."
    )
    review: PoolReview


@strawberry.type
class PoolReviewEdge:
    cursor: str
    node: PoolReviewItem


@strawberry.type
class PoolReviewConnection:
    edges: list[PoolReviewEdge]
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class DecidePoolReviewPayload:
    customer: Customer | None
    review: PoolReview | None


@strawberry.enum(description="Why a customer was recycled to the pool.")
class RecycleReason(Enum):
    INACTIVE = "inactive"
    DORMANT = "dormant"


@strawberry.type(description="A customer in the public pool, as the caller may see it.")
class PoolEntry:
    customer: Customer
    pool_since: datetime | None = strawberry.field(description="When it last entered the pool.")
    days_in_pool: int | None = strawberry.field(description="Whole days since poolSince.")
    reason: PoolEntryReason = strawberry.field(description="How it entered the pool.")
    release_reason: ReleaseReason | None = strawberry.field(description="When released: the reason given.")
    review: PoolReview | None = strawberry.field(
        default=None, description="Its review since it entered the pool; null: none (claimable)."
    )


@strawberry.type
class PoolEdge:
    cursor: str
    node: PoolEntry


@strawberry.type
class PoolConnection:
    edges: list[PoolEdge]
    page_info: PageInfo
    total_count: int | None = strawberry.field(
        description="Pool customers matching the filter; null when the gateway had to filter itself."
    )

    @strawberry.field
    def nodes(self) -> list[PoolEntry]:
        return [edge.node for edge in self.edges]


@strawberry.input(description="Narrows `publicPool`. Filters combine with AND.")
class PoolFilter:
    region: Region | None = None
    status: CustomerStatus | None = None
    search: str | None = strawberry.field(
        default=None, description="Substring of the name (or of a contact field the caller sees in clear)."
    )


@strawberry.type(description="One event of a customer's pool history (the gateway's database).")
class PoolHistoryEntry:
    kind: PoolHistoryKind
    at: datetime
    owner_id: strawberry.ID | None = strawberry.field(
        description="The rep concerned: who claimed, released, lost it or was warned."
    )
    actor: str = strawberry.field(description="Who acted: a user id, or system:pool-sweep.")
    release_reason: ReleaseReason | None
    recycle_reason: RecycleReason | None
    recycle_at: datetime | None = strawberry.field(description="A warning: the recycle time it announced.")
    note: str | None = strawberry.field(
        description="A release's note: shown to its author and to whoever may assign the customer's owner "
        "(writes.assignOwner); null for everyone else."
    )
    assigned_to: strawberry.ID | None = strawberry.field(
        default=None, description="A reassignment or a review's return: the new owner."
    )
    duplicate_of: Customer | None = strawberry.field(
        default=None,
        description="A release with reason DUPLICATE: the customer it duplicates (null if the caller does "
        "not see it).",
    )


@strawberry.type
class PoolHistoryEdge:
    cursor: str
    node: PoolHistoryEntry


@strawberry.type
class PoolHistoryConnection:
    edges: list[PoolHistoryEdge]
    page_info: PageInfo


@strawberry.type
class ClaimCustomerPayload:
    customer: Customer | None


@strawberry.type
class ReleaseCustomerPayload:
    customer: Customer | None


@strawberry.type(description="What one recycleDormant call did; continue with `after: endCursor`.")
class RecycleDormantPayload:
    recycled: list[Customer] = strawberry.field(description="The customers now back in the pool.")
    recycled_count: int
    conflict_count: int = strawberry.field(description="Changed meanwhile: left alone (call again).")
    denied_count: int = strawberry.field(
        description="Dormant, but the policy lets the caller not assign them."
    )
    scanned_count: int = strawberry.field(description="Customers of the region looked at by this call.")
    has_more: bool
    end_cursor: str | None


# --- helpers ------------------------------------------------------------------------------------


def _context(info: strawberry.Info) -> RequestContext:
    return cast(RequestContext, info.context)


def _pool(context: RequestContext) -> PoolPort:
    if context.pool is None:
        raise GraphError("The public pool is not available in this gateway.")
    return context.pool


def _first(context: RequestContext, first: int | None) -> int:
    first = 20 if first is None else first
    if first < 0 or first > context.max_first:
        raise BadUserInput(f"'first' must be between 0 and {context.max_first}.")
    return first


async def _fresh(context: RequestContext, account_no: str) -> models.Account:
    try:
        return await context.loaders.upstreams.sales.account(account_no)
    except UpstreamNotFound:
        raise NotFound("No such customer.") from None


def _deny(context: RequestContext, operation: str, account_no: str, rule: str) -> Forbidden:
    context.record(WriteRecord(operation, account_no, denied=True, rule=rule))
    return Forbidden(f"Not allowed: {rule}.", reason="POLICY")


@dataclass(frozen=True, slots=True)
class _Probe:
    """A customer that stands for "an owned customer in this region" in a policy question."""

    owner_id: str | None
    region: str


def _encode_offset(offset: int) -> str:
    return base64.urlsafe_b64encode(f"d:{offset}".encode()).decode()


def _decode_offset(cursor: str) -> int:
    try:
        kind, _, body = base64.urlsafe_b64decode(cursor.encode()).decode().partition(":")
        offset = int(body)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadUserInput("'after' is not a cursor from recycleDormant.") from None
    if kind != "d" or offset < 0:
        raise BadUserInput("'after' is not a cursor from recycleDormant.")
    return offset


def _entry_reason(record: PoolRecord | None) -> tuple[PoolEntryReason, ReleaseReason | None]:
    if record is None:
        return PoolEntryReason.UNKNOWN, None
    if record.kind is PoolEventKind.RELEASE:
        try:
            return PoolEntryReason.RELEASED, ReleaseReason(record.reason)
        except ValueError:
            return PoolEntryReason.RELEASED, None
    if record.reason == RecycleCause.DORMANT.value:
        return PoolEntryReason.RECYCLED_DORMANT, None
    return PoolEntryReason.RECYCLED_INACTIVE, None


async def _open_review(
    context: RequestContext, pool: PoolPort, account: models.Account, cause: str, note: str | None
) -> int | None:
    """The review a customer will wait for in the pool, written before it is sent there: if the database
    cannot take it, nothing is sent (no customer reaches the pool unreviewed)."""
    try:
        return await pool.open_review(
            account_no=account.account_no,
            region=account.region,
            cause=cause,
            note=note,
            previous_owner=account.owner_id,
            actor=context.require_principal().sub,
            at=context.now,
        )
    except StoreUnavailable:
        raise GraphError(
            "The pool's database is unavailable, so nothing was changed. Try again later."
        ) from None


async def _record_history(context: RequestContext, pool: PoolPort, records: Sequence[PoolRecord]) -> None:
    """The owner change is done (the sales system is the truth); a history that cannot be stored is
    logged, never turned into an error for a write that happened."""
    if not records:
        return
    try:
        await pool.record(records)
    except Exception:
        log.exception(
            "pool history not recorded", extra={"count": len(records), "request_id": context.request_id}
        )


# --- queries ------------------------------------------------------------------------------------


@strawberry.type
class PoolQuery:
    @strawberry.field(
        description="The public pool as the caller sees it (a sales rep: contacts masked per the policy), "
        "in account-number order, with how long and why each customer is there."
    )
    async def public_pool(
        self,
        info: strawberry.Info,
        filter: PoolFilter | None = None,
        first: int | None = 20,
        after: str | None = None,
    ) -> PoolConnection:
        context = _context(info)
        guard = context.require_guard()
        first = _first(context, first)
        wanted = filter or PoolFilter()
        streams, disjoint = row_streams(
            guard,
            CustomerFilter(region=wanted.region, status=wanted.status, in_pool=True, search=wanted.search),
        )
        offsets = decode_cursor(after, len(streams)) if after else [0] * len(streams)
        page = await fetch_page(context.loaders, streams, offsets, first, disjoint=disjoint)
        accounts = [a for a in page.accounts if a.owner_id is None]
        await context.load_grants([a.account_no for a in accounts])
        entries = (
            await context.pool.entries({a.account_no: a.pool_since for a in accounts})
            if context.pool is not None
            else {}
        )
        reviews = (
            await context.pool.review_states([a.account_no for a in accounts])
            if context.pool is not None and accounts
            else {}
        )
        edges: list[PoolEdge] = []
        for account, cursor in zip(page.accounts, page.cursors, strict=True):
            view = guard.view(account)
            if account.owner_id is not None or not view.visible:
                continue
            context.loaders.account.prime(account.account_no, account)
            reason, release_reason = _entry_reason(entries.get(account.account_no))
            since = account.pool_since
            node = PoolEntry(
                customer=Customer.from_account(account, view),
                pool_since=since,
                days_in_pool=(context.now - since).days if since is not None else None,
                reason=reason,
                release_reason=release_reason,
                review=(
                    PoolReview.of(r, sees_notes=guard.can_write("reviewPoolEntry", account).allowed)
                    if (r := reviews.get(account.account_no)) is not None
                    else None
                ),
            )
            edges.append(PoolEdge(cursor=cursor, node=node))
        return PoolConnection(
            edges=edges,
            page_info=PageInfo.of(page, [edge.cursor for edge in edges], after=after, streams=len(streams)),
            total_count=page.total,
        )

    @strawberry.field(
        description="A customer's pool history, newest first (claims, releases, recycles, warnings)."
    )
    async def pool_history(
        self,
        info: strawberry.Info,
        customer_id: strawberry.ID,
        first: int | None = 20,
        after: str | None = None,
    ) -> PoolHistoryConnection:
        context = _context(info)
        guard = context.require_guard()
        pool = _pool(context)
        first = _first(context, first)
        if first > MAX_HISTORY_PAGE:
            raise BadUserInput(f"'first' must be between 0 and {MAX_HISTORY_PAGE}.")
        account_no = customer_key(customer_id)
        account = await context.loaders.account.load(account_no)
        if account is None or not guard.view(account).visible:
            raise NotFound("No such customer.")
        try:
            page = await pool.history(account_no, first, after)
        except ValueError:  # InvalidCursor
            raise BadUserInput("'after' is not a cursor from poolHistory.") from None
        sees_notes = guard.can_write("assignOwner", account).allowed
        originals = sorted({r.duplicate_of for r in page.records if r.duplicate_of})
        duplicates: dict[str, Customer] = {}
        if originals:
            for other in await context.loaders.account.load_many(originals):
                if other is not None and (other_view := guard.view(other)).visible:
                    duplicates[other.account_no] = Customer.from_account(other, other_view)
        edges = []
        for record in page.records:
            release_reason = recycle_reason = None
            if record.kind is PoolEventKind.RELEASE and record.reason is not None:
                release_reason = ReleaseReason(record.reason)
            if record.kind is PoolEventKind.RECYCLE and record.reason is not None:
                recycle_reason = RecycleReason(record.reason)
            node = PoolHistoryEntry(
                kind=PoolHistoryKind(record.kind.value),
                at=record.at,
                owner_id=strawberry.ID(record.owner_id) if record.owner_id is not None else None,
                actor=record.actor,
                release_reason=release_reason,
                recycle_reason=recycle_reason,
                recycle_at=record.sales_stamp if record.kind is PoolEventKind.WARNING else None,
                note=record.note if sees_notes or record.actor == guard.principal.sub else None,
                duplicate_of=duplicates.get(record.duplicate_of) if record.duplicate_of else None,
                assigned_to=strawberry.ID(record.assigned_to) if record.assigned_to else None,
            )
            edges.append(PoolHistoryEdge(cursor=history_cursor(record), node=node))
        return PoolHistoryConnection(
            edges=edges,
            page_info=PageInfo(
                has_next_page=page.has_next_page,
                has_previous_page=after is not None,
                start_cursor=edges[0].cursor if edges else None,
                end_cursor=page.end_cursor,
            ),
        )

    # --- mutations ----------------------------------------------------------------------------------

    @strawberry.field(
        description="Customers of a region waiting for review after entering the pool, oldest first, with "
        "their background (reviewers: sales_manager of the region, data_steward — `reviewPoolEntry`)."
    )
    async def pool_review_queue(
        self, info: strawberry.Info, region: Region, first: int | None = 20, after: str | None = None
    ) -> PoolReviewConnection:
        context = _context(info)
        guard = context.require_guard()
        pool = _pool(context)
        first = _first(context, first)
        decision = guard.can_write("reviewPoolEntry", _Probe(owner_id=None, region=region.value))
        if not decision.allowed:
            raise _deny(context, "reviewPoolEntry", "", decision.rule)
        try:
            reviews, end, more = await pool.review_queue(region=region.value, first=first, after=after)
        except ValueError:  # InvalidCursor
            raise BadUserInput("'after' is not a cursor from poolReviewQueue.") from None
        numbers = [r.account_no for r in reviews]
        await context.load_grants(numbers)
        accounts = dict(zip(numbers, await context.loaders.account.load_many(numbers), strict=True))
        edges = []
        for review in reviews:
            account = accounts.get(review.account_no)
            if account is None or account.owner_id is not None:  # gone, or the send never happened
                continue
            view = guard.view(account)
            if not view.visible:
                continue
            edges.append(
                PoolReviewEdge(
                    cursor=end or "",
                    node=PoolReviewItem(
                        customer=Customer.from_account(account, view),
                        review=PoolReview.of(review, sees_notes=True),
                    ),
                )
            )
        return PoolReviewConnection(edges=edges, has_next_page=more, end_cursor=end)


@strawberry.type
class PoolMutation:
    @strawberry.mutation(
        description="Take a customer from the public pool (sales_rep). Refused (FORBIDDEN, "
        "extensions.reason) at the ownership limit (OWNED_LIMIT) or within the cooldown after releasing "
        "or losing it (COOLDOWN); CONFLICT when another rep claimed it first."
    )
    async def claim_customer(self, info: strawberry.Info, id: strawberry.ID) -> ClaimCustomerPayload | None:
        context = _context(info)
        guard = context.require_guard()
        pool = _pool(context)
        sub = guard.principal.sub
        account_no = customer_key(id)
        sales = context.loaders.upstreams.sales
        account = await _fresh(context, account_no)
        if account.owner_id == sub:
            return ClaimCustomerPayload(customer=answer_with_policy(context, account))  # already the caller's
        # The claim is about the customer as a pool customer: may the caller claim such a one at all?
        as_pool = replace(account, owner_id=None, owner_since=None)
        decision = guard.can_write("claimCustomer", as_pool)
        if not decision.allowed:
            raise _deny(context, "claimCustomer", account_no, decision.rule)
        if account.owner_id is not None:
            if guard.view(account).visible or rules.recently_claimed(account, context.now):
                raise Conflict("Another rep claimed this customer first.", reason="ALREADY_CLAIMED")
            raise NotFound("No such customer.")  # someone else's for long: outside the caller's rows
        if not guard.view(account).visible:
            raise NotFound("No such customer.")
        review = (await pool.review_states([account_no])).get(account_no)
        if review is not None and review.blocks_claims:
            code = "UNDER_REVIEW" if review.state is ReviewState.PENDING else "CLEANUP"
            context.record(
                WriteRecord("claimCustomer", account_no, denied=True, rule=f"pool.review ({code})")
            )
            raise Forbidden(
                "This customer entered the pool recently and waits for a review before it can be claimed."
                if code == "UNDER_REVIEW"
                else "This customer is marked for data cleanup and cannot be claimed.",
                reason=code,
            )
        async with pool.claiming(sub):
            owned = (await sales.list_accounts(owner_id=sub, per_page=1)).total
            since = rules.cooldown_start(pool.rules, context.now)
            last_loss = await pool.last_loss(sub, account_no, since)
            refusal = rules.claim_refusal(owned=owned, last_loss=last_loss, rules=pool.rules, now=context.now)
            if refusal is not None:
                context.record(WriteRecord("claimCustomer", account_no, denied=True, rule=refusal.rule))
                raise Forbidden(refusal.message, reason=refusal.code, **refusal.details)
            await context.begin_write("claimCustomer", account_no)
            try:
                updated = await sales.set_owner(account_no, sub, version=account.version)
            except UpstreamConflict:
                # lost the race, unless it was the caller's own claim sent twice
                current = await _after_lost_race(context, account_no, sub)
                return ClaimCustomerPayload(customer=answer_with_policy(context, current))
            except UpstreamInvalid as exc:
                raise refused_values(exc) from None
        context.evict(account_no)
        context.record(
            WriteRecord("claimCustomer", account_no, before={"owner_id": None}, after={"owner_id": sub})
        )
        record = PoolRecord(
            kind=PoolEventKind.CLAIM,
            account_no=account_no,
            actor=sub,
            at=context.now,
            owner_id=sub,
            sales_stamp=updated.owner_since,
            request_id=context.request_id,
        )
        await _record_history(context, pool, [record])
        return ClaimCustomerPayload(customer=answer_with_policy(context, updated))

    @strawberry.mutation(
        description="Give an own customer back to the public pool (sales_rep), with a reason from the fixed "
        "list and a note (required for OTHER; at most 500 characters)."
    )
    async def release_customer(
        self,
        info: strawberry.Info,
        id: strawberry.ID,
        reason: ReleaseReason,
        note: str | None = None,
        duplicate_of: Annotated[
            strawberry.ID | None,
            strawberry.argument(
                description="With reason DUPLICATE (and only then): the customer it duplicates."
            ),
        ] = None,
    ) -> ReleaseCustomerPayload | None:
        context = _context(info)
        guard = context.require_guard()
        pool = _pool(context)
        note = clean_text("note", note) or None
        problem = rules.release_problem(rules.ReleaseReason(reason.value), note)
        if problem is not None:
            raise BadUserInput(problem)
        if (reason is ReleaseReason.DUPLICATE) != (duplicate_of is not None):
            raise BadUserInput(
                "A release with reason DUPLICATE names the duplicate in 'duplicateOf' (only then)."
            )
        account_no = customer_key(id)
        original: str | None = None
        if duplicate_of is not None:
            original = customer_key(duplicate_of)
            if original == account_no:
                raise BadUserInput("A customer is not a duplicate of itself.")
            other = await _fresh(context, original)
            if not guard.view(other).visible:
                raise NotFound("No such customer (duplicateOf).")
        account = await _fresh(context, account_no)
        if not guard.view(account).visible:
            raise NotFound("No such customer.")
        decision = guard.can_write("releaseCustomer", account)
        if not decision.allowed:
            raise _deny(context, "releaseCustomer", account_no, decision.rule)
        await context.begin_write("releaseCustomer", account_no)
        review = await _open_review(context, pool, account, reason.value, note)
        try:
            updated = await context.loaders.upstreams.sales.set_owner(
                account_no, None, version=account.version
            )
        except UpstreamConflict:
            await pool.cancel_review(review)
            raise Conflict(
                "The customer changed meanwhile; read it again and retry.", reason="CHANGED"
            ) from None
        except UpstreamInvalid as exc:
            await pool.cancel_review(review)
            raise refused_values(exc) from None
        except BaseException:
            await pool.cancel_review(review)
            raise
        context.evict(account_no)
        context.record(
            WriteRecord(
                "releaseCustomer",
                account_no,
                before={"owner_id": account.owner_id},
                after={
                    "owner_id": None,
                    "reason": reason.value,
                    **({"duplicate_of": original} if original else {}),
                },
            )
        )
        record = PoolRecord(
            kind=PoolEventKind.RELEASE,
            account_no=account_no,
            actor=guard.principal.sub,
            at=context.now,
            owner_id=account.owner_id,
            reason=reason.value,
            note=note,
            sales_stamp=updated.pool_since,
            request_id=context.request_id,
            duplicate_of=original,
            region=account.region,
        )
        await _record_history(context, pool, [record])
        return ReleaseCustomerPayload(customer=answer_with_policy(context, updated))

    @strawberry.mutation(
        description="Send the region's dormant customers (no contact in 365 days) back to the pool: a bulk "
        "assignOwner to the pool, checked per customer (sales_manager in its region, data_steward). "
        "Scans up to 1,000 customers of the region per call; continue with `after: endCursor`."
    )
    async def recycle_dormant(
        self, info: strawberry.Info, region: Region, after: str | None = None
    ) -> RecycleDormantPayload:
        context = _context(info)
        guard = context.require_guard()
        pool = _pool(context)
        principal = guard.principal
        probe = _Probe(owner_id=principal.sub + "~other", region=region.value)
        decision = guard.can_write("assignOwner", probe)
        if not decision.allowed:
            raise _deny(context, "recycleDormant", "", decision.rule)
        sales = context.loaders.upstreams.sales
        offset = _decode_offset(after) if after else 0
        position, total, scanned = offset, offset + 1, 0
        candidates: list[models.Account] = []
        denied = 0
        for _ in range(DORMANT_SCAN_PAGES):
            if position >= total:
                break
            page = await sales.list_accounts(
                page=position // MAX_PER_PAGE + 1, per_page=MAX_PER_PAGE, region=region.value
            )
            total = page.total
            start = (page.page - 1) * MAX_PER_PAGE
            rest = [a for i, a in enumerate(page.accounts, start) if i >= position]
            if not rest:
                position = total
                break
            position = start + len(page.accounts)
            scanned += len(rest)
            owned = [a for a in rest if a.owner_id is not None]
            flags = (
                await dormant_flags(context.loaders, owned, context.now, extra_emails_of(context))
                if owned
                else []
            )
            for account, dormant in zip(owned, flags, strict=True):
                if not dormant:
                    continue
                verdict = guard.can_write("assignOwner", account)
                if not verdict.allowed:
                    denied += 1
                    context.record(
                        WriteRecord("recycleDormant", account.account_no, denied=True, rule=verdict.rule)
                    )
                    continue
                candidates.append(account)
        recycled, conflicts = await _recycle_all(context, candidates)
        records = [
            PoolRecord(
                kind=PoolEventKind.RECYCLE,
                account_no=account.account_no,
                actor=principal.sub,
                at=context.now,
                owner_id=before.owner_id,
                reason=RecycleCause.DORMANT.value,
                sales_stamp=account.pool_since,
                request_id=context.request_id,
                region=account.region,
            )
            for before, account in recycled
        ]
        await _record_history(context, pool, records)
        has_more = position < total
        customers = [
            Customer.from_account(account, view)
            for _, account in recycled
            if (view := guard.view(account)).visible
        ]
        return RecycleDormantPayload(
            recycled=customers,
            recycled_count=len(recycled),
            conflict_count=conflicts,
            denied_count=denied,
            scanned_count=scanned,
            has_more=has_more,
            end_cursor=_encode_offset(position) if has_more else None,
        )

    @strawberry.mutation(
        description="Decide a customer waiting for review after entering the pool (reviewPoolEntry): "
        "APPROVE makes it claimable, RETURN gives it back to an owner (ownerId, default its previous "
        "owner), CLEANUP marks it for data cleanup (not claimable). Audited; CONFLICT when decided meanwhile."
    )
    async def decide_pool_review(
        self,
        info: strawberry.Info,
        customer_id: strawberry.ID,
        decision: PoolReviewDecision,
        note: str | None = None,
        owner_id: strawberry.ID | None = None,
    ) -> DecidePoolReviewPayload:
        context = _context(info)
        guard = context.require_guard()
        pool = _pool(context)
        note = clean_text("note", note) or None
        account_no = customer_key(customer_id)
        account = await _fresh(context, account_no)
        if not guard.view(account).visible:
            raise NotFound("No such customer.")
        verdict = guard.can_write("reviewPoolEntry", account)
        if not verdict.allowed:
            raise _deny(context, "reviewPoolEntry", account_no, verdict.rule)
        review = (await pool.review_states([account_no])).get(account_no)
        if review is None or review.state is not ReviewState.PENDING or account.owner_id is not None:
            raise Conflict("This customer is not waiting for a review.", reason="NOT_PENDING")
        if owner_id is not None and decision is not PoolReviewDecision.RETURN:
            raise BadUserInput("'ownerId' goes with decision RETURN only.")
        state = ReviewState(decision.value)
        await context.begin_write("reviewPoolEntry", account_no)
        new_owner: str | None = None
        updated = account
        if decision is PoolReviewDecision.RETURN:
            new_owner = str(owner_id) if owner_id is not None else review.previous_owner
            if new_owner is None or await context.loaders.user.load(new_owner) is None:
                raise BadUserInput("Give 'ownerId': a sales user to return the customer to.")
            try:
                updated = await context.loaders.upstreams.sales.set_owner(
                    account_no, new_owner, version=account.version
                )
            except UpstreamConflict:
                raise Conflict(
                    "The customer changed meanwhile; read it again and retry.", reason="CHANGED"
                ) from None
            context.evict(account_no)
        record = PoolRecord(
            kind=PoolEventKind.REVIEW,
            account_no=account_no,
            actor=guard.principal.sub,
            at=context.now,
            reason=state.value,
            note=note,
            assigned_to=new_owner,
            request_id=context.request_id,
            region=account.region,
        )
        if not await pool.decide_review(review, state, record, note=note):
            raise Conflict("Another reviewer decided this customer meanwhile.", reason="NOT_PENDING")
        context.record(
            WriteRecord(
                "reviewPoolEntry",
                account_no,
                before={"review": ReviewState.PENDING.value},
                after={"review": state.value, **({"owner_id": new_owner} if new_owner else {})},
            )
        )
        decided = (await pool.review_states([account_no])).get(account_no)
        return DecidePoolReviewPayload(
            customer=answer_with_policy(context, updated),
            review=PoolReview.of(decided, sees_notes=True) if decided is not None else None,
        )


async def _after_lost_race(context: RequestContext, account_no: str, sub: str) -> models.Account:
    """``If-Match`` failed: the customer changed since it was read. Say why."""
    current = await _fresh(context, account_no)
    if current.owner_id == sub:
        return current  # the caller's own claim, sent twice
    if current.owner_id is not None:
        raise Conflict("Another rep claimed this customer first.", reason="ALREADY_CLAIMED")
    raise Conflict("The customer changed while being claimed; try again.", reason="CHANGED")


async def _recycle_all(
    context: RequestContext, accounts: list[models.Account]
) -> tuple[list[tuple[models.Account, models.Account]], int]:
    """Each account back to the pool with ``If-Match``; (before, after) pairs and the conflict count."""
    sales = context.loaders.upstreams.sales
    gate = asyncio.Semaphore(WRITES_IN_FLIGHT)
    conflicts = 0

    async def one(account: models.Account) -> tuple[models.Account, models.Account] | None:
        nonlocal conflicts
        async with gate:
            await context.begin_write("recycleDormant", account.account_no)
            review = await _open_review(context, _pool(context), account, RecycleCause.DORMANT.value, None)
            try:
                updated = await sales.set_owner(account.account_no, None, version=account.version)
            except (UpstreamConflict, UpstreamNotFound):
                conflicts += 1
                await _pool(context).cancel_review(review)
                return None
            except UpstreamError:
                conflicts += 1
                log.warning("recycleDormant: an owner change failed upstream")
                await _pool(context).cancel_review(review)
                return None
        context.evict(account.account_no)
        context.record(
            WriteRecord(
                "recycleDormant",
                account.account_no,
                before={"owner_id": account.owner_id},
                after={"owner_id": None},
            )
        )
        return account, updated

    done = await asyncio.gather(*(one(a) for a in accounts))
    return [pair for pair in done if pair is not None], conflicts
