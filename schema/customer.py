"""The Customer: the sales master record, joined live with support and the contract register."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING, cast

import strawberry

from connectors import models
from connectors.errors import UpstreamError
from policies.engine import CustomerView

from .enums import ContractStatus, CustomerKind, CustomerStatus, Region, TicketStatus
from .errors import BadUserInput
from .ids import encode_id
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


@strawberry.type(description="A customer: the sales account, with its support and contract history.")
class Customer(Node):
    account_no: str
    kind: CustomerKind
    name: str
    region: Region
    status: CustomerStatus
    in_pool: bool
    created_at: datetime
    updated_at: datetime
    version: int = strawberry.field(description="Increments on every change; send it with a write.")
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
            updated_at=account.updated_at,
            version=account.version,
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

    # --- sales ---------------------------------------------------------------------------------

    @strawberry.field(description="The sales rep who owns the customer; null = in the public pool.")
    async def owner(self, info: strawberry.Info) -> SalesUser | None:
        owner_id = self.account.owner_id
        if owner_id is None:
            return None
        return cast(SalesUser, await _context(info).loaders.user.load(owner_id))

    @strawberry.field(description="Newest first (sales system).")
    async def orders(self, info: strawberry.Info, first: int | None = 20) -> list[Order] | None:
        context = _context(info)
        limit = _first(context, first)
        self._relation(context, "orders")
        return cast(list[Order], list((await context.loaders.orders.load(self.account_no))[:limit]))

    @strawberry.field(description="Newest first (sales system, finance data).")
    async def payments(self, info: strawberry.Info, first: int | None = 20) -> list[Payment] | None:
        context = _context(info)
        limit = _first(context, first)
        self._relation(context, "payments")
        return cast(list[Payment], list((await context.loaders.payments.load(self.account_no))[:limit]))

    @strawberry.field(description="Sales system.")
    async def opportunities(self, info: strawberry.Info) -> list[Opportunity] | None:
        context = _context(info)
        self._relation(context, "opportunities")
        return cast(list[Opportunity], list(await context.loaders.opportunities.load(self.account_no)))

    @strawberry.field(description="The communication history, newest first (sales system).")
    async def activities(self, info: strawberry.Info, first: int | None = 20) -> list[Activity] | None:
        context = _context(info)
        limit = _first(context, first)
        self._relation(context, "activities")
        return cast(list[Activity], list((await context.loaders.activities.load(self.account_no))[:limit]))

    # --- support -------------------------------------------------------------------------------

    @strawberry.field(description="Tickets by the customer's e-mail, newest first (support system).")
    async def tickets(
        self, info: strawberry.Info, first: int | None = 20, status: list[TicketStatus] | None = None
    ) -> list[Ticket] | None:
        context = _context(info)
        limit = _first(context, first)
        self._relation(context, "tickets")
        email = self.account.email
        if email is None:
            return []
        tickets: Sequence[models.Ticket] = await context.loaders.tickets.load(email)
        if status:
            wanted = {s.value for s in status}
            tickets = [t for t in tickets if t.status in wanted]
        return cast(list[Ticket], list(tickets[:limit]))

    @strawberry.field(description="Rated tickets and their average (support system).")
    async def satisfaction(self, info: strawberry.Info) -> Satisfaction | None:
        context = _context(info)
        self._relation(context, "satisfaction")
        email = self.account.email
        if email is None:
            return None
        return cast(Satisfaction, await context.loaders.satisfaction.load(email))

    # --- contracts -----------------------------------------------------------------------------

    @strawberry.field(description="Contracts with the customer's tax id, newest first (contract register).")
    async def contracts(
        self, info: strawberry.Info, status: list[ContractStatus] | None = None
    ) -> list[Contract] | None:
        context = _context(info)
        self._relation(context, "contracts")
        tax_id = self.account.tax_id
        if tax_id is None:
            return []
        contracts = self.view.keep("contracts", await context.loaders.contracts.load(tax_id))
        if status:
            wanted = {s.value for s in status}
            contracts = [c for c in contracts if c.status in wanted]
        return cast(list[Contract], contracts)

    # --- derived across the three systems ------------------------------------------------------

    @strawberry.field(
        description="Newest of: activity, ticket created/updated, non-confidential contract signed."
    )
    async def last_contact_at(self, info: strawberry.Info) -> datetime | None:
        return await self._last_contact(_context(info))

    @strawberry.field(
        description="When the customer goes back to the public pool unless its owner logs an activity "
        "first (its owner's last activity, or when it got the customer, + 90 days; never within 14 days "
        "of getting it — the pool settings). Null in the pool."
    )
    async def recycle_at(self, info: strawberry.Info) -> datetime | None:
        context = _context(info)
        if context.pool is None or self.account.owner_id is None:
            return None
        activities = await context.loaders.activities.load(self.account_no)
        return context.pool.recycle_at(self.account, activities, context.now)

    @strawberry.field(description="No contact in the last 365 days.")
    async def dormant(self, info: strawberry.Info) -> bool:
        context = _context(info)
        try:
            last = await self._last_contact(context)
        except UpstreamError:
            last = await self._last_contact_from_available(context)
        return last is None or context.now - last > DORMANT_AFTER

    def _last_contact(self, context: RequestContext) -> asyncio.Future[datetime | None]:
        """One computation per customer, shared by ``lastContactAt`` and ``dormant``."""
        if self.contact is None:
            self.contact = asyncio.ensure_future(self._compute_last_contact(context, strict=True))
        return self.contact

    async def _last_contact_from_available(self, context: RequestContext) -> datetime | None:
        return await self._compute_last_contact(context, strict=False)

    async def _compute_last_contact(self, context: RequestContext, *, strict: bool) -> datetime | None:
        loaders, account = context.loaders, self.account
        results = await asyncio.gather(
            loaders.activities.load(account.account_no),
            loaders.tickets.load(account.email) if account.email else _empty(),
            loaders.contracts.load(account.tax_id) if account.tax_id else _empty(),
            return_exceptions=True,
        )
        if strict:
            for result in results:
                if isinstance(result, BaseException):
                    raise result
        return last_contact(*(r if not isinstance(r, BaseException) else () for r in results))


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
