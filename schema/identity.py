"""Who is who, for data stewards: duplicate pairs across the register, helpdesk requesters on no sales
account, records with missing contact data; and the steward's links and not-duplicate marks.

The lists need the policy's ``reviewIdentities``; the writes ``linkIdentity`` / ``markNotDuplicate``. Every
customer in an answer passes the guard like anywhere else (rows, field decisions, audit)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from enum import Enum
from typing import cast

import strawberry

from connectors import models
from connectors.errors import UpstreamError
from connectors.normalize import normalize_email, normalize_phone
from features.cursors import InvalidCursor
from features.identity import match
from features.identity.service import Identity
from features.identity.store import Missing, missing_of

from .context import RequestContext, WriteRecord
from .customer import Customer, DuplicateReason, visible_evidence
from .enums import Region
from .errors import BadUserInput, Forbidden, NotFound
from .ids import customer_key
from .mutations import _authorize, _target, answer_with_policy, clean_text

MAX_PAGE = 100
_EMAIL_MAX = 254


def _context(info: strawberry.Info) -> RequestContext:
    return cast(RequestContext, info.context)


def _identity(context: RequestContext) -> Identity:
    if context.identity is None:
        raise Forbidden("Identity matching is not available on this gateway.")
    return context.identity


def _review(context: RequestContext) -> None:
    """The steward lists: the policy's ``reviewIdentities``, refused (and audited) otherwise."""
    guard = context.require_guard()
    decision = guard.can_write("reviewIdentities")
    if not decision.allowed:
        context.record(WriteRecord("reviewIdentities", "", denied=True, rule=decision.rule))
        raise Forbidden(f"Not allowed: {decision.rule}.")


def _page_size(first: int | None) -> int:
    size = 20 if first is None else first
    if not 0 <= size <= MAX_PAGE:
        raise BadUserInput(f"'first' must be between 0 and {MAX_PAGE}.")
    return size


def _email(value: str) -> str:
    email = normalize_email(value)
    local, at, domain = email.partition("@")
    if not at or not local or "." not in domain or len(email) > _EMAIL_MAX or any(c.isspace() for c in email):
        raise BadUserInput("'email' is not an e-mail address.")
    return email


@strawberry.enum(description="A contact field a customer record may lack.")
class MissingField(Enum):
    EMAIL = "email"
    PHONE = "phone"
    TAX_ID = "tax_id"
    ADDRESS = "address"


_MISSING = {
    MissingField.EMAIL: Missing.EMAIL,
    MissingField.PHONE: Missing.PHONE,
    MissingField.TAX_ID: Missing.TAX_ID,
    MissingField.ADDRESS: Missing.ADDRESS,
}


@strawberry.input(description="Narrows `duplicateCandidates`.")
class DuplicateFilter:
    region: Region | None = None
    min_score: float | None = strawberry.field(default=None, description="Default 0.8 (probable).")
    reason: DuplicateReason | None = None


@strawberry.input(description="Narrows `incompleteCustomers`: records lacking every field listed.")
class IncompleteFilter:
    missing: list[MissingField]


@strawberry.type(description="Two accounts that are probably one customer.")
class DuplicatePair:
    first: Customer
    second: Customer
    score: float
    reasons: list[DuplicateReason]
    found_at: datetime = strawberry.field(description="When a scan or a change event last compared them.")


@strawberry.type
class DuplicatePairEdge:
    cursor: str
    node: DuplicatePair


@strawberry.type
class IdentityPageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class DuplicatePairConnection:
    edges: list[DuplicatePairEdge]
    page_info: IdentityPageInfo


@strawberry.type(description="A helpdesk requester whose e-mail is on no sales account, with a best guess.")
class UnmatchedRequester:
    email: str
    display_name: str | None
    best_guess: Customer | None = strawberry.field(
        description="The account most like the requester (its phone; its name as a person or contact)."
    )
    score: float | None


@strawberry.type
class UnmatchedRequesterEdge:
    cursor: str
    node: UnmatchedRequester


@strawberry.type
class UnmatchedRequesterConnection:
    edges: list[UnmatchedRequesterEdge]
    page_info: IdentityPageInfo


@strawberry.type
class IncompleteCustomer:
    customer: Customer
    missing: list[MissingField]


@strawberry.type
class IncompleteCustomerEdge:
    cursor: str
    node: IncompleteCustomer


@strawberry.type
class IncompleteCustomerConnection:
    edges: list[IncompleteCustomerEdge]
    page_info: IdentityPageInfo


def _missing_fields(flags: int) -> list[MissingField]:
    return [field for field, flag in _MISSING.items() if flags & flag]


async def _seen_accounts(context: RequestContext, account_nos: list[str]) -> dict[str, Customer]:
    """The customers the caller sees, by number, decided through the guard."""
    guard = context.require_guard()
    await context.load_grants(account_nos)
    loaded = await context.loaders.account.load_many(account_nos)
    found: dict[str, Customer] = {}
    for account in loaded:
        if account is None:
            continue
        view = guard.view(account)
        if view.visible:
            found[account.account_no] = Customer.from_account(account, view)
    return found


@strawberry.type
class IdentityQuery:
    @strawberry.field(
        description="Pairs of accounts that are probably one customer, across the whole register, strongest "
        "first (data stewards: `reviewIdentities`). From the last `customer-graph identity scan` and change "
        "events since; each pair is scored again on the accounts as they are now. Pairs marked not "
        "duplicates are left out."
    )
    async def duplicate_candidates(
        self,
        info: strawberry.Info,
        filter: DuplicateFilter | None = None,
        first: int | None = 20,
        after: str | None = None,
    ) -> DuplicatePairConnection:
        context = _context(info)
        _review(context)
        identity = _identity(context)
        size = _page_size(first)
        wanted = filter or DuplicateFilter()
        min_score = match.PROBABLE if wanted.min_score is None else wanted.min_score
        if not 0.0 <= min_score <= 1.0:
            raise BadUserInput("'minScore' must be between 0 and 1.")
        reason = match.Reason(wanted.reason.value) if wanted.reason is not None else None
        try:
            pairs, end, more = await identity.store.pairs_page(
                min_score=min_score,
                region=wanted.region.value if wanted.region is not None else None,
                reason=reason,
                after=after,
                first=size,
            )
        except InvalidCursor:
            raise BadUserInput("'after' is not a cursor of this list.") from None
        customers = await _seen_accounts(context, sorted({no for p in pairs for no in (p.a, p.b)}))
        edges: list[DuplicatePairEdge] = []
        for stored in pairs:
            a, b = customers.get(stored.a), customers.get(stored.b)
            if a is None or b is None:
                continue
            now = match.compare(
                match.Profile.of(a.account),
                match.Profile.of(b.account),
                visible_evidence(a.view, b.view),
            )
            if now is None:
                continue
            edges.append(
                DuplicatePairEdge(
                    cursor=end or "",
                    node=DuplicatePair(
                        first=a,
                        second=b,
                        score=now.score,
                        reasons=[DuplicateReason(r.value) for r in now.reasons],
                        found_at=stored.found_at,
                    ),
                )
            )
        return DuplicatePairConnection(
            edges=edges, page_info=IdentityPageInfo(has_next_page=more, end_cursor=end)
        )

    @strawberry.field(
        description="Helpdesk requesters whose e-mail is no sales account's (current, previous or linked), "
        "with a best guess (data stewards). The helpdesk cannot list its requesters: these are the ones "
        "its change events named."
    )
    async def unmatched_requesters(
        self, info: strawberry.Info, first: int | None = 20, after: str | None = None
    ) -> UnmatchedRequesterConnection:
        context = _context(info)
        _review(context)
        identity = _identity(context)
        size = _page_size(first)
        try:
            emails, end, more = await identity.store.unmatched_requesters(after=after, first=size)
        except InvalidCursor:
            raise BadUserInput("'after' is not a cursor of this list.") from None
        support = context.loaders.upstreams.support
        try:
            requesters = await support.requesters(emails) if emails else {}
        except UpstreamError:
            requesters = {}
        edges = []
        for email in emails:
            requester = requesters.get(email)
            guess, score = await _best_guess(context, identity, email, requester)
            edges.append(
                UnmatchedRequesterEdge(
                    cursor=end or "",
                    node=UnmatchedRequester(
                        email=email,
                        display_name=requester.display_name if requester is not None else None,
                        best_guess=guess,
                        score=score,
                    ),
                )
            )
        return UnmatchedRequesterConnection(
            edges=edges, page_info=IdentityPageInfo(has_next_page=more, end_cursor=end)
        )

    @strawberry.field(
        description="Customer records lacking every contact field listed, by account number (data "
        "stewards): the review of incomplete contact information. From the identity index (scan and "
        "change events); a person has no tax id, so TAX_ID lists companies only."
    )
    async def incomplete_customers(
        self,
        info: strawberry.Info,
        filter: IncompleteFilter,
        first: int | None = 20,
        after: str | None = None,
    ) -> IncompleteCustomerConnection:
        context = _context(info)
        _review(context)
        identity = _identity(context)
        size = _page_size(first)
        if not filter.missing:
            raise BadUserInput("'missing' must name at least one field.")
        mask = 0
        for field in filter.missing:
            mask |= _MISSING[field]
        try:
            rows, end, more = await identity.store.incomplete_page(mask=mask, after=after, first=size)
        except InvalidCursor:
            raise BadUserInput("'after' is not a cursor of this list.") from None
        customers = await _seen_accounts(context, [no for no, _ in rows])
        edges = []
        for account_no, _ in rows:
            customer = customers.get(account_no)
            if customer is None:
                continue
            flags = int(missing_of(customer.account))  # as the record is now, not as last scanned
            if flags & mask != mask:
                continue
            edges.append(
                IncompleteCustomerEdge(
                    cursor=end or "",
                    node=IncompleteCustomer(customer=customer, missing=_missing_fields(flags)),
                )
            )
        return IncompleteCustomerConnection(
            edges=edges, page_info=IdentityPageInfo(has_next_page=more, end_cursor=end)
        )


async def _best_guess(
    context: RequestContext, identity: Identity, email: str, requester: models.Requester | None
) -> tuple[Customer | None, float | None]:
    """The account most like a requester: the same phone (blocking key), the same name as a person or
    as a company's contact (the sales search by name)."""
    if requester is None:
        return None, None
    phone = normalize_phone(requester.phone) if requester.phone else ""
    probe = match.Profile(
        account_no=f"requester:{email}",
        kind="person",
        region="",
        name=match.text(requester.display_name or ""),
        contact="",
        email=match.email(email),
        phone=match.phone(phone),
        tax_id="",
    )
    others = set(await identity.candidates(probe))
    name = (requester.display_name or "").strip()
    if name:
        try:
            page = await context.loaders.upstreams.sales.list_accounts(q=name, per_page=20)
            others.update(a.account_no for a in page.accounts)
        except UpstreamError:
            pass  # the phone alone, then
    best: tuple[float, Customer] | None = None
    for customer in (await _seen_accounts(context, sorted(others))).values():
        account = match.Profile.of(customer.account)
        person = account.name if account.kind == "person" else account.contact
        as_person = match.Profile(
            account.account_no, "person", "", person, "", account.email, account.phone, ""
        )
        result = match.compare(probe, as_person, visible_evidence(customer.view, customer.view))
        if result is not None and (
            best is None or (result.score, customer.account_no) > (best[0], best[1].account_no)
        ):
            best = (result.score, customer)
    if best is None:
        return None, None
    return best[1], best[0]


@strawberry.type
class IdentityPayload:
    customer: Customer | None


@strawberry.type
class IdentityMutation:
    @strawberry.mutation(
        description="Link an e-mail to a customer as one support knows it by (data stewards: "
        "`linkIdentity`): its tickets, satisfaction and last contact count for the customer at once."
    )
    async def link_identity(
        self, info: strawberry.Info, customer_id: strawberry.ID, email: str, note: str | None = None
    ) -> IdentityPayload:
        context = _context(info)
        identity = _identity(context)
        address = _email(email)
        note = clean_text("note", note) or None
        account = await _target(context, customer_id)
        _authorize(context, "linkIdentity", account)
        if address == account.email:
            raise BadUserInput("That is the customer's current e-mail already.")
        await context.begin_write("linkIdentity", account.account_no)
        await identity.link(account.account_no, address, actor=context.require_principal().sub, note=note)
        context.evict(account.account_no, email=address)
        context.record(WriteRecord("linkIdentity", account.account_no, before=None, after={"email": address}))
        return IdentityPayload(customer=answer_with_policy(context, account))

    @strawberry.mutation(
        description="Unlink an e-mail a data steward linked, or a previous e-mail that was never the "
        "customer's (`linkIdentity`)."
    )
    async def unlink_identity(
        self, info: strawberry.Info, customer_id: strawberry.ID, email: str, reason: str
    ) -> IdentityPayload:
        context = _context(info)
        identity = _identity(context)
        address = _email(email)
        why = cast(str, clean_text("reason", reason, required=True))
        account = await _target(context, customer_id)
        _authorize(context, "linkIdentity", account)
        await context.begin_write("unlinkIdentity", account.account_no)
        removed = await identity.unlink(
            account.account_no, address, actor=context.require_principal().sub, reason=why
        )
        if not removed:
            raise NotFound("The customer has no such linked or previous e-mail.")
        context.evict(account.account_no, email=address)
        context.record(
            WriteRecord(
                "unlinkIdentity", account.account_no, before={"email": address}, after={"reason": why}
            )
        )
        return IdentityPayload(customer=answer_with_policy(context, account))

    @strawberry.mutation(
        description="Two customers that look alike are different customers (data stewards: "
        "`markNotDuplicate`): neither is offered as the other's duplicate again."
    )
    async def mark_not_duplicate(
        self, info: strawberry.Info, customer_id: strawberry.ID, other_id: strawberry.ID, reason: str
    ) -> IdentityPayload:
        context = _context(info)
        identity = _identity(context)
        why = cast(str, clean_text("reason", reason, required=True))
        if customer_key(customer_id) == customer_key(other_id):
            raise BadUserInput("A customer is always the same as itself.")
        account, other = await asyncio.gather(_target(context, customer_id), _target(context, other_id))
        _authorize(context, "markNotDuplicate", account)
        _authorize(context, "markNotDuplicate", other)
        await context.begin_write("markNotDuplicate", account.account_no)
        await identity.mark_distinct(
            account.account_no, other.account_no, actor=context.require_principal().sub, reason=why
        )
        context.record(
            WriteRecord(
                "markNotDuplicate",
                account.account_no,
                after={"other": other.account_no, "reason": why},
            )
        )
        return IdentityPayload(customer=answer_with_policy(context, account))
