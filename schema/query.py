"""Root fields: ``customer``, ``customers``, ``node`` and ``viewer``."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from typing import Annotated, cast

import strawberry

from connectors.models import Account
from policies.guard import Guard

from .context import RequestContext
from .customer import Customer, Node
from .dormancy import dormancy_select
from .enums import CustomerStatus, Region
from .errors import BadUserInput
from .ids import account_key, customer_key, decode_id
from .loaders import let_loads_start
from .paging import Page, Predicate, Stream, decode_cursor, fetch_page
from .selection import selected_field_names

# A customer field → the loads it makes, as (loader, the account attribute that is its key).
_LOADS: dict[str, tuple[tuple[str, str], ...]] = {
    "owner": (("user", "owner_id"),),
    "orders": (("orders", "account_no"),),
    "payments": (("payments", "account_no"),),
    "opportunities": (("opportunities", "account_no"),),
    "activities": (("activities", "account_no"),),
    "tickets": (("tickets", "email"),),
    "satisfaction": (("satisfaction", "email"),),
    "contracts": (("contracts", "tax_id"),),
    "recycleAt": (("activities", "account_no"),),
    "lastContactAt": (("activities", "account_no"), ("tickets", "email"), ("contracts", "tax_id")),
    "dormant": (("activities", "account_no"), ("tickets", "email"), ("contracts", "tax_id")),
}
_POLICED = (
    "orders",
    "payments",
    "opportunities",
    "activities",
    "tickets",
    "satisfaction",
    "contracts",
    "recycleAt",
)


def start_loads(context: RequestContext, selected: set[str], accounts: Sequence[Account]) -> bool:
    """Start now every load the selected fields of these customers will make, so they run while the
    gateway still waits for the caller's access grants and builds the answer (a load's key — account
    number, e-mail, tax id, owner — is known as soon as the account is). Only what the customer's
    view serves without grants is started; a granted field loads when it resolves, as before.
    Returns whether any load is pending (a cache hit is not)."""
    wanted = selected.intersection(_LOADS)
    if not wanted:
        return False
    guard, loaders = context.require_guard(), context.loaders
    policed = [name for name in _POLICED if name in wanted]
    free = [name for name in wanted if name not in _POLICED]  # the resolvers load these for every row
    pending = False
    identity = context.identity
    for account in accounts:
        for name in (*free, *guard.served_without_grants(account, policed)):
            for loader, attribute in _LOADS[name]:
                key = getattr(account, attribute)
                if key and isinstance(getattr(loaders, loader).get(key), asyncio.Future):
                    pending = True
                if attribute == "email" and identity is not None:  # previous and linked e-mails too
                    for email in identity.extra_emails(account.account_no):
                        if isinstance(getattr(loaders, loader).get(email), asyncio.Future):
                            pending = True
    return pending


@strawberry.input(description="Narrows `customers`. Filters combine with AND.")
class CustomerFilter:
    region: Region | None = None
    status: CustomerStatus | None = None
    owner_id: strawberry.ID | None = None
    in_pool: bool | None = None
    search: str | None = strawberry.field(
        default=None, description="Substring of the name, contact name or e-mail (case-insensitive)."
    )
    dormant: bool | None = strawberry.field(
        default=None,
        description="No contact in 365 days across all systems (see `Customer.dormant`). The gateway "
        "decides it while scanning (totalCount null; at most 2,000 customers scanned per request).",
    )


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None

    @classmethod
    def of(cls, page: Page, cursors: list[str], *, after: str | None, streams: int) -> PageInfo:
        """For a page of the customer streams (``customers``, ``publicPool``): ``cursors`` of the edges
        served; with none, the end cursor still says where the scan stopped."""
        return cls(
            has_next_page=page.has_next,
            has_previous_page=after is not None,
            start_cursor=cursors[0] if cursors else None,
            end_cursor=cursors[-1] if cursors else (page.end_cursor if streams else None),
        )


@strawberry.type
class CustomerEdge:
    cursor: str
    node: Customer


@strawberry.type
class CustomerConnection:
    edges: list[CustomerEdge]
    page_info: PageInfo
    total_count: int | None = strawberry.field(
        description="Customers matching the filter. Null when the sales system cannot count them and the "
        "gateway filters while paging: `inPool: false` over a region or over every customer (the sales "
        'API cannot ask for "owned"), `dormant`, and a `search` where the caller sees contact names or '
        "e-mails masked (it matches only what the caller sees in clear). Page on with `endCursor`."
    )

    @strawberry.field(description="The edges' nodes, for callers that do not need cursors.")
    def nodes(self) -> list[Customer]:
        return [edge.node for edge in self.edges]


@strawberry.type(description="The caller, as its token says.")
class Viewer:
    id: strawberry.ID
    name: str | None
    roles: list[str]
    region: str | None


def _context(info: strawberry.Info) -> RequestContext:
    return cast(RequestContext, info.context)


async def _customer(info: strawberry.Info, account_no: str) -> Customer | None:
    context = _context(info)
    guard = context.require_guard()
    loaders = context.loaders
    found = loaders.account.get(account_no)
    selected = selected_field_names(info)
    # Loads keyed by the account number start with the account, not after it: for the fields the
    # caller may be served on some customer (and the derived ones, computed for every row it sees).
    for name in selected.intersection(_LOADS):
        if name not in _POLICED or guard.fetches(name):
            for loader, attribute in _LOADS[name]:
                if attribute == "account_no":
                    getattr(loaders, loader).get(account_no)  # a miss starts loading now
    account = await found if isinstance(found, asyncio.Future) else found
    if account is None:
        return None
    if start_loads(context, selected, [account]):  # by e-mail, tax id, owner: now known
        await let_loads_start()
    await context.load_grants([account_no])
    view = guard.view(account)
    return Customer.from_account(account, view) if view.visible else None


def row_streams(guard: Guard, filter: CustomerFilter | None) -> tuple[list[Stream], bool]:
    """The upstream list queries for the caller's rows and filter, and whether they are disjoint."""
    filter = filter or CustomerFilter()
    if filter.owner_id is not None and filter.in_pool:
        raise BadUserInput("'ownerId' and 'inPool: true' exclude each other.")
    search = (filter.search or "").strip() or None
    if search is not None and len(search) > MAX_SEARCH:
        # the sales system answers 500 to very long terms: refused here, it never reaches the system
        raise BadUserInput(f"'search' must be at most {MAX_SEARCH} characters.")
    base = Stream(
        region=filter.region.value if filter.region else None,
        status=filter.status.value if filter.status else None,
        owner_id=str(filter.owner_id) if filter.owner_id is not None else None,
        unowned=True if filter.in_pool else None,
    )
    owned_only = filter.in_pool is False and filter.owner_id is None
    if search is not None:
        guard.note_search(search, ("name", *_SEARCHED))
    rows = guard.rows
    streams: list[Stream] = []
    disjoint = True
    if rows.all:
        streams.append(base)
    else:
        for owner in sorted(rows.owner_in):
            if (base.owner_id in (None, owner)) and not base.unowned:
                streams.append(replace(base, owner_id=owner))
        if rows.include_pool and base.owner_id is None and filter.in_pool is not False:
            streams.append(replace(base, unowned=True))
        for region in sorted(rows.regions):
            if base.region in (None, region):
                streams.append(replace(base, region=region))
                disjoint = len(streams) == 1
    return [_narrowed(guard, stream, search, owned_only) for stream in streams], disjoint


MAX_SEARCH = 200  # characters of a search term

# What the sales system's ``q`` matches besides the name (which every role sees in clear).
_SEARCHED = ("contactName", "email")


def _narrowed(guard: Guard, stream: Stream, search: str | None, owned_only: bool) -> Stream:
    """The stream with the filter's conditions that the sales API cannot express for this caller.

    A search: the sales system matches ``q`` on name, contact name and e-mail. Where the caller sees
    those in clear on every customer of the stream, ``q`` goes upstream. Elsewhere the stream is read
    *without* ``q`` and matched here on what the caller sees in clear: a ``q`` upstream would make the
    offsets in the cursor, ``hasNextPage`` and the scan's length depend on matches in values the caller
    sees masked or not at all (probing with guesses would recover a masked e-mail)."""
    keep = _owned if owned_only and stream.owner_id is None else None  # an owner's stream is all owned
    if search is None:
        return replace(stream, keep=keep)
    clear = all(
        guard.clear_within(name, owner_id=stream.owner_id, unowned=bool(stream.unowned), region=stream.region)
        for name in _SEARCHED
    )
    if clear:
        return replace(stream, q=search, keep=keep)
    return replace(stream, keep=_both(_visible_match(guard, search), keep))


def _owned(account: Account) -> bool:
    return account.owner_id is not None


def _both(first: Predicate, second: Predicate | None) -> Predicate:
    if second is None:
        return first
    return lambda account: first(account) and second(account)


def _visible_match(guard: Guard, search: str) -> Predicate:
    """The sales system's ``q`` (a case-insensitive substring of name, contact name or e-mail), on
    what the caller sees in clear of each customer only."""
    needle = search.casefold()

    def keep(account: Account) -> bool:
        if needle in account.name.casefold():
            return True
        for name, value in (("contactName", account.contact_name), ("email", account.email)):
            if value and needle in value.casefold() and guard.sees_clear(account, name):
                return True
        return False

    return keep


@strawberry.type
class Query:
    @strawberry.field(
        description="A customer by its id, or by the sales system's account number (give exactly one); "
        "null when unknown or outside the caller's rows — the same rows and policy either way."
    )
    async def customer(
        self,
        info: strawberry.Info,
        id: strawberry.ID | None = None,
        account_no: Annotated[
            str | None, strawberry.argument(description="The account number the departments use: `A100001`.")
        ] = None,
    ) -> Customer | None:
        if (id is None) == (account_no is None):
            raise BadUserInput("Give exactly one of 'id' and 'accountNo'.")
        return await _customer(info, customer_key(id) if id is not None else account_key(account_no or ""))

    @strawberry.field(description="Customers, in account-number order (Relay connection).")
    async def customers(
        self,
        info: strawberry.Info,
        first: int | None = 20,
        after: str | None = None,
        filter: CustomerFilter | None = None,
    ) -> CustomerConnection:
        context = _context(info)
        guard = context.require_guard()
        first = 20 if first is None else first
        if first < 0 or first > context.max_first:
            raise BadUserInput(f"'first' must be between 0 and {context.max_first}.")
        streams, disjoint = row_streams(guard, filter)
        if filter is not None and filter.dormant is not None:
            streams = [replace(s, select=dormancy_select(context, filter.dormant)) for s in streams]
        offsets = decode_cursor(after, len(streams)) if after else [0] * len(streams)
        page = await fetch_page(context.loaders, streams, offsets, first, disjoint=disjoint)
        selected = selected_field_names(info, "edges", "node") | selected_field_names(info, "nodes")
        if start_loads(context, selected, page.accounts):
            await let_loads_start()
        await context.load_grants([account.account_no for account in page.accounts])
        edges = []
        for account, cursor in zip(page.accounts, page.cursors, strict=True):
            view = guard.view(account)
            if not view.visible:  # the streams follow the rows; this guards against a stale policy
                continue
            context.loaders.account.prime(account.account_no, account)
            edges.append(CustomerEdge(cursor=cursor, node=Customer.from_account(account, view)))
        return CustomerConnection(
            edges=edges,
            page_info=PageInfo.of(page, [edge.cursor for edge in edges], after=after, streams=len(streams)),
            total_count=page.total,
        )

    @strawberry.field(description="Any object by its global id; null when unknown or not visible.")
    async def node(self, info: strawberry.Info, id: strawberry.ID) -> Node | None:
        type_name, key = decode_id(id)
        if type_name != "Customer":
            raise BadUserInput(f"No object of type {type_name} can be fetched by id.")
        return await _customer(info, key)

    @strawberry.field(description="The caller.")
    def viewer(self, info: strawberry.Info) -> Viewer:
        principal = _context(info).require_principal()
        return Viewer(
            id=strawberry.ID(principal.sub),
            name=principal.name,
            roles=sorted(principal.roles),
            region=principal.region,
        )
