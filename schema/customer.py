"""The Customer: the sales master record, joined live with support and the contract register."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, cast

import strawberry

from connectors import models
from connectors.errors import UpstreamError
from connectors.normalize import round2
from features.cursors import InvalidCursor
from features.identity import match
from policies.engine import CustomerView

from .enums import ContractStatus, CustomerKind, CustomerStatus, Region, TicketStatus
from .errors import BadUserInput
from .history import HistoryConnection, HistoryFilter, HistoryPageInfo, Reader, sources_of
from .ids import encode_id
from .loaders import Resolved, then, then_all
from .records import Activity, Contract, Opportunity, Order, Payment, SalesUser, Satisfaction, Ticket

if TYPE_CHECKING:
    from .context import RequestContext

DORMANT_AFTER = timedelta(days=365)


def _context(info: strawberry.Info) -> RequestContext:
    return cast("RequestContext", info.context)


def _first(context: RequestContext, first: int | None) -> int:
    if first is None:
        return 20
    if first < 0 or first > context.max_first:
        raise BadUserInput(f"'first' must be between 0 and {context.max_first}.")
    return first


@strawberry.interface(description="An object with a global id (Relay).")
class Node:
    id: strawberry.ID


_NOTHING_RATED = models.Satisfaction(email="", rated=0, average=None, last_rated_at=None)


@strawberry.type(description="A customer: the sales account, with its support and contract history.")
class Customer(Node):
    account_no: str
    kind: CustomerKind
    name: str
    region: Region
    status: CustomerStatus
    in_pool: bool
    created_at: datetime
    account: strawberry.Private[models.Account]
    view: strawberry.Private[CustomerView]
    contact: strawberry.Private[asyncio.Future[datetime | None] | None] = None

    @classmethod
    def from_account(cls, account: models.Account, view: CustomerView) -> Customer:
        return cls(
            id=strawberry.ID(encode_id("Customer", account.account_no)),
            account_no=account.account_no,
            kind=cast(CustomerKind, account.kind),
            name=account.name,
            region=cast(Region, account.region),
            status=cast(CustomerStatus, account.status),
            in_pool=account.owner_id is None,
            created_at=account.created_at,
            account=account,
            view=view,
        )

    def _scalar(self, info: strawberry.Info, name: str, value: str | None) -> str | None:
        return _context(info).require_guard().scalar(self.account_no, self.view, name, value)

    def _relation(self, context: RequestContext, name: str) -> None:
        context.require_guard().relation(self.account_no, self.view, name)

    # --- contact data (policy-controlled) ------------------------------------------------------

    @strawberry.field
    def contact_name(self, info: strawberry.Info) -> str | None:
        return self._scalar(info, "contactName", self.account.contact_name)

    @strawberry.field
    def title(self, info: strawberry.Info) -> str | None:
        return self._scalar(info, "title", self.account.title)

    @strawberry.field(description="Lower-cased.")
    def email(self, info: strawberry.Info) -> str | None:
        return self._scalar(info, "email", self.account.email)

    @strawberry.field(description="E.164, e.g. +8613812345678.")
    def phone(self, info: strawberry.Info) -> str | None:
        return self._scalar(info, "phone", self.account.phone)

    @strawberry.field
    def address(self, info: strawberry.Info) -> str | None:
        return self._scalar(info, "address", self.account.address)

    @strawberry.field(description="Unified social credit code; null for a person.")
    def tax_id(self, info: strawberry.Info) -> str | None:
        return self._scalar(info, "taxId", self.account.tax_id)

    # --- record keeping (policy-controlled: not identity fields) --------------------------------

    @strawberry.field(description="When the sales record last changed.")
    def updated_at(self, info: strawberry.Info) -> datetime | None:
        self._relation(_context(info), "updatedAt")
        return self.account.updated_at

    @strawberry.field(description="Increments on every change; send it with a write.")
    def version(self, info: strawberry.Info) -> int | None:
        self._relation(_context(info), "version")
        return self.account.version

    # --- sales ---------------------------------------------------------------------------------

    @strawberry.field(
        description="The sales rep who owns the customer; null = in the public pool.",
        graphql_type=SalesUser | None,
    )
    def owner(self, info: strawberry.Info) -> Resolved[models.SalesUser | None]:
        owner_id = self.account.owner_id
        if owner_id is None:
            return None
        return _context(info).loaders.user.get(owner_id)

    @strawberry.field(description="Newest first (sales system).", graphql_type=list[Order] | None)
    def orders(self, info: strawberry.Info, first: int | None = 20) -> Resolved[list[models.Order]]:
        context = _context(info)
        limit = _first(context, first)
        self._relation(context, "orders")
        return then(context.loaders.orders.get(self.account_no), lambda orders: list(orders[:limit]))

    @strawberry.field(
        description="Newest first (sales system, finance data).", graphql_type=list[Payment] | None
    )
    def payments(self, info: strawberry.Info, first: int | None = 20) -> Resolved[list[models.Payment]]:
        context = _context(info)
        limit = _first(context, first)
        self._relation(context, "payments")
        return then(context.loaders.payments.get(self.account_no), lambda payments: list(payments[:limit]))

    @strawberry.field(description="Sales system.", graphql_type=list[Opportunity] | None)
    def opportunities(self, info: strawberry.Info) -> Resolved[Sequence[models.Opportunity]]:
        context = _context(info)
        self._relation(context, "opportunities")
        return context.loaders.opportunities.get(self.account_no)

    @strawberry.field(
        description="The communication history, newest first (sales system).",
        graphql_type=list[Activity] | None,
    )
    def activities(self, info: strawberry.Info, first: int | None = 20) -> Resolved[list[models.Activity]]:
        context = _context(info)
        limit = _first(context, first)
        self._relation(context, "activities")
        return then(context.loaders.activities.get(self.account_no), lambda found: list(found[:limit]))

    # --- support -------------------------------------------------------------------------------

    @strawberry.field(
        description="Tickets by the customer's e-mail, newest first (support system).",
        graphql_type=list[Ticket] | None,
    )
    def tickets(
        self, info: strawberry.Info, first: int | None = 20, status: list[TicketStatus] | None = None
    ) -> Resolved[list[models.Ticket]]:
        context = _context(info)
        limit = _first(context, first)
        self._relation(context, "tickets")
        emails = support_emails(context, self.account)
        if not emails:
            return []
        wanted = {s.value for s in status} if status else None

        def pick(found: list[Sequence[models.Ticket]]) -> list[models.Ticket]:
            tickets = merge_tickets(found)
            if wanted is not None:
                tickets = [t for t in tickets if t.status in wanted]
            return list(tickets[:limit])

        return then_all([context.loaders.tickets.get(email) for email in emails], pick)

    @strawberry.field(
        description="Rated tickets and their average (support system).", graphql_type=Satisfaction | None
    )
    def satisfaction(self, info: strawberry.Info) -> Resolved[models.Satisfaction | None]:
        context = _context(info)
        self._relation(context, "satisfaction")
        emails = support_emails(context, self.account)
        if not emails:  # no e-mail, so no ticket the helpdesk could file under it: nothing rated
            return _NOTHING_RATED
        return then_all([context.loaders.satisfaction.get(email) for email in emails], merge_satisfaction)

    @strawberry.field(
        description="The e-mails support knows the customer by: its current e-mail, e-mails it had before "
        "(changed through the gateway or seen changing in the sales system) and e-mails a data steward "
        "linked. `tickets`, `satisfaction`, `lastContactAt` and `dormant` use all of them. Each e-mail "
        "follows the `email` decision.",
        graphql_type=list["SupportIdentity"] | None,
    )
    def support_identities(self, info: strawberry.Info) -> list[SupportIdentity]:
        context = _context(info)
        self._relation(context, "supportIdentities")
        guard = context.require_guard()
        account = self.account
        found: list[SupportIdentity] = []
        if account.email:
            found.append(
                SupportIdentity(
                    email=guard.scalar(account.account_no, self.view, "SupportIdentity.email", account.email),
                    origin=SupportIdentityOrigin.CURRENT,
                )
            )
        identity = context.identity
        if identity is not None:
            for email, origin in identity.extra_origins(account.account_no):
                if email != account.email:
                    shown = guard.scalar(account.account_no, self.view, "SupportIdentity.email", email)
                    found.append(SupportIdentity(email=shown, origin=SupportIdentityOrigin(origin)))
        return found

    @strawberry.field(
        description="Other accounts that are probably the same customer, strongest first: only customers "
        "the caller sees, scored only on what it sees in clear on both (a masked e-mail is no evidence). "
        "Score 0.5–1; 0.8 and above: probably the same. A pair marked not duplicates is left out.",
        graphql_type=list["PossibleDuplicate"] | None,
    )
    async def possible_duplicates(
        self, info: strawberry.Info, first: int | None = 5
    ) -> list[PossibleDuplicate]:
        context = _context(info)
        limit = _first(context, first)
        self._relation(context, "possibleDuplicates")
        if context.identity is None or limit == 0:
            return []
        return (await duplicates_of(context, self.account, self.view))[:limit]

    @strawberry.field(
        description="One timeline, newest first: writes made through the gateway (who, when, before/after), "
        "the systems' change events, pool events (claims, releases with reasons, recycles, reassignments, "
        "reviews, warnings) and access grants used on it. Values as you may see them; entries about what "
        "you may not see are left out. Kept a year at least (events_retention_days).",
        graphql_type=HistoryConnection | None,
    )
    async def history(
        self,
        info: strawberry.Info,
        first: int | None = 20,
        after: str | None = None,
        filter: HistoryFilter | None = None,
    ) -> HistoryConnection:
        context = _context(info)
        limit = _first(context, first)
        self._relation(context, "history")
        if context.history is None:
            return HistoryConnection(
                edges=[], page_info=HistoryPageInfo(has_next_page=False, end_cursor=None)
            )
        reader = Reader(context, self.account, self.view)
        wanted = filter or HistoryFilter()
        try:
            page = await context.history.page(
                self.account_no,
                emails=support_emails(context, self.account),
                tax_id=self.account.tax_id,
                first=limit,
                after=after,
                sources=reader.sources(sources_of(wanted)),
                since=wanted.since,
                until=wanted.until,
                keep=reader.keep,
            )
        except InvalidCursor:
            raise BadUserInput("'after' is not a cursor from this customer's history.") from None
        return HistoryConnection(
            edges=[reader.edge(entry) for entry in page.entries],
            page_info=HistoryPageInfo(has_next_page=page.has_next_page, end_cursor=page.end_cursor),
        )

    # --- contracts -----------------------------------------------------------------------------

    @strawberry.field(
        description="Contracts with the customer's tax id, newest first (contract register).",
        graphql_type=list[Contract] | None,
    )
    def contracts(
        self, info: strawberry.Info, status: list[ContractStatus] | None = None
    ) -> Resolved[list[models.Contract]]:
        context = _context(info)
        self._relation(context, "contracts")
        tax_id = self.account.tax_id
        if tax_id is None:
            return []
        wanted = {s.value for s in status} if status else None
        view, guard = self.view, context.require_guard()

        def pick(found: Sequence[models.Contract]) -> list[models.Contract]:
            contracts = guard.keep(view, "contracts", found)
            if wanted is not None:
                contracts = [c for c in contracts if c.status in wanted]
            return contracts

        return then(context.loaders.contracts.get(tax_id), pick)

    # --- derived across the three systems ------------------------------------------------------

    @strawberry.field(
        description="Newest of: activity, ticket created/updated, non-confidential contract signed.",
        graphql_type=datetime | None,
    )
    def last_contact_at(self, info: strawberry.Info) -> Resolved[datetime | None]:
        contact = self._last_contact(_context(info))
        return contact.result() if _settled(contact) else contact

    @strawberry.field(
        description="When the customer goes back to the public pool unless its owner logs an activity "
        "first (its owner's last activity, or when it got the customer, + 90 days; never within 14 days "
        "of getting it — the pool settings). Null in the pool.",
        graphql_type=datetime | None,
    )
    def recycle_at(self, info: strawberry.Info) -> Resolved[datetime | None]:
        context = _context(info)
        self._relation(context, "recycleAt")
        pool = context.pool
        if pool is None or self.account.owner_id is None:
            return None
        account, now = self.account, context.now
        return then(
            context.loaders.activities.get(self.account_no),
            lambda activities: pool.recycle_at(account, activities, now),
        )

    @strawberry.field(
        description="No contact in the last 365 days. Null, with UPSTREAM_UNAVAILABLE, when a system "
        "that could hold a recent contact failed and the others hold none: never a guess.",
        graphql_type=bool | None,
    )
    def dormant(self, info: strawberry.Info) -> Resolved[bool]:
        context = _context(info)
        contact = self._last_contact(context)
        if _settled(contact):
            return _is_dormant(contact.result(), context.now)
        return self._dormant_later(context, contact)

    async def _dormant_later(self, context: RequestContext, contact: asyncio.Future[datetime | None]) -> bool:
        try:
            last = await contact
        except UpstreamError:
            # A recent contact in the systems that answered decides it (not dormant, whatever the
            # failed one holds); otherwise the failed system could hold the one recent contact.
            last = await self._last_contact_from_available(context)
            if _is_dormant(last, context.now):
                raise
        return _is_dormant(last, context.now)

    def _last_contact(self, context: RequestContext) -> asyncio.Future[datetime | None]:
        """One computation per customer, shared by ``lastContactAt`` and ``dormant``: done at once
        when everything it needs is cached, else a task that loads what is missing."""
        if self.contact is None:
            loaders, account = context.loaders, self.account
            emails = support_emails(context, account)
            tickets = [loaders.tickets.get(email) for email in emails]
            parts = (
                loaders.activities.get(account.account_no),
                loaders.contracts.get(account.tax_id) if account.tax_id else (),
                *tickets,
            )
            if any(isinstance(part, asyncio.Future) for part in parts):
                self.contact = asyncio.ensure_future(self._compute_last_contact(context, emails, strict=True))
            else:
                activities, contracts, *found = cast(tuple[Sequence[object], ...], parts)
                known: asyncio.Future[datetime | None] = asyncio.get_running_loop().create_future()
                known.set_result(last_contact(activities, [t for part in found for t in part], contracts))
                self.contact = known
        return self.contact

    async def _last_contact_from_available(self, context: RequestContext) -> datetime | None:
        return await self._compute_last_contact(context, support_emails(context, self.account), strict=False)

    async def _compute_last_contact(
        self, context: RequestContext, emails: Sequence[str], *, strict: bool
    ) -> datetime | None:
        loaders, account = context.loaders, self.account
        results = await asyncio.gather(
            loaders.activities.load(account.account_no),
            loaders.contracts.load(account.tax_id) if account.tax_id else _empty(),
            *(loaders.tickets.load(email) for email in emails),
            return_exceptions=True,
        )
        if strict:
            for result in results:
                if isinstance(result, BaseException):
                    raise result
        activities, contracts, *tickets = (r if not isinstance(r, BaseException) else () for r in results)
        return last_contact(activities, [t for part in tickets for t in part], contracts)


@strawberry.enum(description="Where an e-mail support knows a customer by comes from.")
class SupportIdentityOrigin(Enum):
    CURRENT = "current"
    PREVIOUS = "previous"
    LINKED = "linked"


@strawberry.type(description="An e-mail the helpdesk may have filed the customer's tickets under.")
class SupportIdentity:
    email: str | None
    origin: SupportIdentityOrigin


@strawberry.enum(description="Why two accounts are probably the same customer.")
class DuplicateReason(Enum):
    SAME_TAX_ID = "same_tax_id"
    SAME_EMAIL = "same_email"
    SAME_PHONE = "same_phone"
    SAME_NAME = "same_name"
    SIMILAR_CONTACT = "similar_contact"


@strawberry.type(description="Another account that is probably the same customer.")
class PossibleDuplicate:
    customer: Customer
    score: float = strawberry.field(description="0.5–1; 0.8 and above: probably the same customer.")
    reasons: list[DuplicateReason] = strawberry.field(description="Strongest first.")


def visible_evidence(view: CustomerView, other: CustomerView) -> Callable[[str], bool]:
    """Evidence the caller may be shown about a pair: a field it sees in clear on both customers."""
    return lambda name: view[name].allowed and other[name].allowed


async def duplicates_of(
    context: RequestContext, account: models.Account, view: CustomerView
) -> list[PossibleDuplicate]:
    """The caller's view of the customer's duplicates: candidates sharing a blocking key, kept when the
    caller sees them, scored on the evidence it sees in clear on both (nothing else may move a score)."""
    identity, guard = context.identity, context.require_guard()
    assert identity is not None
    profile = match.Profile.of(account)
    others = await identity.candidates(profile)
    if not others:
        return []
    await context.load_grants(others)
    loaded = await context.loaders.account.load_many(others)
    seen = [(a, guard.view(a)) for a in loaded if a is not None]
    seen = [(a, v) for a, v in seen if v.visible]
    # A name several legal entities bear identifies none: decided only on tax ids seen in clear everywhere.
    ambiguous = False
    if guard.clear_everywhere("taxId"):
        same_name = [profile, *(p for p in (match.Profile.of(a) for a, _ in seen) if p.name == profile.name)]
        ambiguous = match.ambiguous_by_tax(same_name)
    found: list[PossibleDuplicate] = []
    for other, other_view in seen:
        result = match.compare(
            profile, match.Profile.of(other), visible_evidence(view, other_view), ambiguous_name=ambiguous
        )
        if result is not None and result.score >= match.POSSIBLE:
            found.append(
                PossibleDuplicate(
                    customer=Customer.from_account(other, other_view),
                    score=result.score,
                    reasons=[DuplicateReason(r.value) for r in result.reasons],
                )
            )
    found.sort(key=lambda d: (-d.score, d.customer.account_no))
    return found


def _settled(future: asyncio.Future[datetime | None]) -> bool:
    """Done with a value (then read it now; otherwise graphql-core awaits it, errors included)."""
    return future.done() and not future.cancelled() and future.exception() is None


def _is_dormant(last: datetime | None, now: datetime) -> bool:
    return last is None or now - last > DORMANT_AFTER


async def _empty() -> Sequence[object]:
    return ()


def last_contact(
    activities: Sequence[object], tickets: Sequence[object], contracts: Sequence[object]
) -> datetime | None:
    """The newest contact; confidential contracts never count (they would reveal themselves)."""
    newest: datetime | None = None
    for activity in cast(Sequence[models.Activity], activities):
        if newest is None or activity.occurred_at > newest:
            newest = activity.occurred_at
    for ticket in cast(Sequence[models.Ticket], tickets):
        moment = max(ticket.created_at, ticket.updated_at)
        if newest is None or moment > newest:
            newest = moment
    for contract in cast(Sequence[models.Contract], contracts):
        if contract.confidential or contract.signed_on is None:
            continue
        signed = datetime.combine(contract.signed_on, time(0), tzinfo=UTC)
        if newest is None or signed > newest:
            newest = signed
    return newest


# --- support identities: the e-mails support knows a customer by ------------------------------------


def support_emails(context: RequestContext, account: models.Account) -> tuple[str, ...]:
    """The customer's current e-mail, then its previous and linked ones (features/identity): tickets,
    satisfaction and the last contact follow all of them; their tickets follow this customer's view."""
    extra = context.identity.extra_emails(account.account_no) if context.identity is not None else ()
    if not extra:
        return (account.email,) if account.email else ()
    if context.guard is not None:
        context.guard.also_known_as(account.account_no, extra)
    current = (account.email,) if account.email else ()
    return current + tuple(email for email in extra if email != account.email)


def merge_tickets(found: Sequence[Sequence[models.Ticket]]) -> Sequence[models.Ticket]:
    """Tickets filed under several e-mails, newest first."""
    if len(found) == 1:
        return found[0]
    return sorted((t for part in found for t in part), key=lambda t: (t.created_at, t.id), reverse=True)


def merge_satisfaction(found: Sequence[models.Satisfaction | None]) -> models.Satisfaction | None:
    """One summary over several e-mails: rated tickets added up, the average weighted by them."""
    summaries = [s for s in found if s is not None]
    if len(found) == 1 or not summaries:
        return found[0] if found else None
    rated = sum(s.rated for s in summaries)
    total = sum((s.average * s.rated for s in summaries if s.average is not None), Decimal(0))
    lasts = [s.last_rated_at for s in summaries if s.last_rated_at is not None]
    return models.Satisfaction(
        email=summaries[0].email,
        rated=rated,
        average=round2(str(total / rated)) if rated else None,
        last_rated_at=max(lasts) if lasts else None,
    )
