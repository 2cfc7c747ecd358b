"""Live updates over ``WS /graphql`` (graphql-transport-ws): ``customerChanged`` and ``myCustomersChanged``.

The gateway hears of changes (``gateway/events``: webhooks, the register's poll), evicts its cache and
hands each change to a ``LiveFeed``; a subscription reads the feed and passes every event through the
subscriber's read policy before anything leaves:

- **rows**: the customer is loaded fresh (the cache was just evicted) and decided with a new ``Guard``
  under the policy in force; a customer outside the subscriber's rows is never mentioned. So a sales
  rep hears of its own customers and of the pool, never of another rep's customer.
- **what changed**: the kind of change is itself data. An event about orders, payments, activities,
  tickets, satisfaction or contracts reaches only subscribers that may see that field on that
  customer (``allow`` or ``mask``); a confidential contract's change reaches only those who may know
  that confidential contracts exist (legal, executive).
- **the customer**: resolved like ``Query.customer``, with the event's own loaders and guard, so masks,
  denials (``FORBIDDEN``) and access grants apply field by field.

``myCustomersChanged`` is every customer in the subscriber's rows: for a sales_rep its own customers
and the pool, for a sales_manager its region, for the roles that see every customer every customer.
Delivery is at least once (``eventId`` repeats on a redelivery); a subscriber that falls behind loses
the oldest events and gets one ``MISSED`` change (``customer: null``) to say so, as it does when the
gateway could not check an event against the policy (the sales system was down): refetch then.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, Protocol

import strawberry
from graphql import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.types import StreamExecutionResult

from connectors.errors import UpstreamError

from .context import RequestContext
from .customer import Customer
from .errors import (
    INTERNAL_MESSAGE,
    BadUserInput,
    GraphError,
    NotFound,
    Unauthenticated,
    format_error,
    path_pattern,
)
from .ids import customer_key

log = logging.getLogger("customer_graph.live")


MISSED_TYPE = "gateway.missed"
RECYCLE_WARNING_TYPE = "pool.recycle_warning"


@strawberry.enum(description="What changed. Each value names the departmental event it comes from.")
class ChangeKind(Enum):
    ACCOUNT_UPDATED = "account.updated"
    OWNER_CHANGED = "account.owner_changed"
    ORDER_CREATED = "order.created"
    ORDER_UPDATED = "order.updated"
    PAYMENT_CREATED = "payment.created"
    ACTIVITY_CREATED = "activity.created"
    TICKET_CREATED = "ticket.created"
    TICKET_UPDATED = "ticket.updated"
    TICKET_RATED = "ticket.rated"
    CONTRACT_CHANGED = "contract.changed"
    RECYCLE_WARNING = strawberry.enum_value(
        RECYCLE_WARNING_TYPE,
        description="The gateway's public pool will take the customer from its owner soon (no activity).",
    )
    MISSED = strawberry.enum_value(
        MISSED_TYPE,
        description="Changes were left out (the subscriber fell behind, or a system could not be asked "
        "to check one against the policy): refetch what you show. `customer` is null.",
    )


# The customer field whose decision says whether a subscriber may hear of a change of this kind.
# Kinds not listed (the account itself, its owner) are identity: every subscriber that sees the row.
KIND_FIELD: Mapping[ChangeKind, str] = {
    ChangeKind.ORDER_CREATED: "orders",
    ChangeKind.ORDER_UPDATED: "orders",
    ChangeKind.PAYMENT_CREATED: "payments",
    ChangeKind.ACTIVITY_CREATED: "activities",
    ChangeKind.TICKET_CREATED: "tickets",
    ChangeKind.TICKET_UPDATED: "tickets",
    ChangeKind.TICKET_RATED: "satisfaction",
    ChangeKind.CONTRACT_CHANGED: "contracts",
}
KNOWN_TYPES = frozenset(str(kind.value) for kind in ChangeKind) - {MISSED_TYPE}


class Change(Protocol):
    """One change to one customer, as the feed hands it over (``gateway.events.ChangeEvent``)."""

    @property
    def event_id(self) -> str: ...
    @property
    def system(self) -> str: ...  # sales | support | contracts | pool | gateway (MISSED)
    @property
    def type(self) -> str: ...  # a ChangeKind value
    @property
    def account_no(self) -> str | None: ...
    @property
    def at(self) -> datetime: ...
    @property
    def confidential(self) -> bool: ...  # a confidential contract's change


class LiveFeed(Protocol):
    """The gateway side of live updates (``gateway.events.LiveUpdates``)."""

    def subscribe(
        self, accounts: frozenset[str] | None
    ) -> contextlib.AbstractAsyncContextManager[AsyncIterator[Change]]:
        """Changes from now on, of these customers (None: all), in order; MISSED when some were dropped."""
        ...

    def refresh(self, context: RequestContext) -> None:
        """New loaders, a new guard under the policy in force, and ``now``, for the next event."""
        ...


@dataclass(slots=True)
class LiveContext(RequestContext):
    """The context of a WebSocket connection; each operation gets a copy (``for_operation``), and the
    feed refreshes its loaders and guard before every event, so no two events share a decision."""

    feed: LiveFeed | None = None
    connection_params: dict[str, Any] | None = None  # the connection_init payload
    expires_at: float | None = None  # the token's ``exp`` (epoch seconds)

    def for_operation(self) -> LiveContext:
        return dataclasses.replace(self, writes=[], extensions={})

    def expired(self) -> bool:
        return self.expires_at is not None and time.time() >= self.expires_at

    def require_feed(self) -> LiveFeed:
        if self.feed is None:
            raise BadUserInput("Subscriptions are served over WebSocket (graphql-transport-ws) only.")
        return self.feed


@strawberry.type(description="A change to a customer in one of the systems, as the subscriber may see it.")
class CustomerChange:
    event_id: strawberry.ID = strawberry.field(
        description="The system's event id. Delivery is at least once: a repeated id is the same change."
    )
    kind: ChangeKind
    system: str = strawberry.field(
        description="sales, support, contracts, or pool (the gateway's public pool); gateway for MISSED."
    )
    at: datetime = strawberry.field(
        description="When the system says it happened (the register: when the gateway noticed)."
    )
    customer: Customer | None = strawberry.field(
        description="The customer after the change, under the subscriber's policy; null for MISSED."
    )


def _live(info: strawberry.Info) -> LiveContext:
    context = info.context
    if not isinstance(context, LiveContext):
        raise BadUserInput("Subscriptions are served over WebSocket (graphql-transport-ws) only.")
    return context


def _missed(context: RequestContext, change: Change | None = None) -> CustomerChange:
    return CustomerChange(
        event_id=strawberry.ID(change.event_id if change is not None else "missed"),
        kind=ChangeKind.MISSED,
        system="gateway",
        at=context.now,
        customer=None,
    )


async def _decide(context: LiveContext, change: Change) -> CustomerChange | None:
    """The change as this subscriber may see it, or None when it may not hear of it at all."""
    if change.type == MISSED_TYPE:
        return _missed(context, change)
    if change.type not in KNOWN_TYPES or change.account_no is None:
        return None  # a kind no field decision covers: fail closed
    kind = ChangeKind(change.type)
    guard = context.require_guard()
    try:
        account = await context.loaders.account.load(change.account_no)
        if account is None:
            return None
        await context.load_grants([account.account_no])
    except Exception as exc:  # the rows cannot be checked now: say only that something was missed
        if not isinstance(exc, UpstreamError):
            log.exception("a change could not be checked against the policy")
        return _missed(context)
    view = guard.view(account)
    if not view.visible:
        return None
    field = KIND_FIELD.get(kind)
    if field is not None and view[field].denied:
        return None
    if change.confidential and "confidential" in view.hidden.get("contracts", ()):
        return None
    return CustomerChange(
        event_id=strawberry.ID(change.event_id),
        kind=kind,
        system=change.system,
        at=change.at,
        customer=Customer.from_account(account, view),
    )


async def _changes(
    context: LiveContext, accounts: frozenset[str] | None
) -> AsyncGenerator[CustomerChange, None]:
    feed = context.require_feed()
    async with feed.subscribe(accounts) as changes:
        async for change in changes:
            if context.expired():
                raise Unauthenticated("The token has expired; subscribe again with a new one.")
            feed.refresh(context)
            decided = await _decide(context, change)
            if decided is not None:
                yield decided


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="Changes to one customer in any system, from now on. NOT_FOUND when the customer is "
        "unknown or outside the caller's rows; a change that takes it out of them is not announced."
    )
    async def customer_changed(
        self, info: strawberry.Info, id: strawberry.ID
    ) -> AsyncGenerator[CustomerChange, None]:
        context = _live(info)
        context.require_guard()  # UNAUTHENTICATED without a valid token
        account_no = customer_key(id)
        context.require_feed().refresh(context)
        guard = context.require_guard()
        account = await context.loaders.account.load(account_no)
        if account is not None:
            await context.load_grants([account_no])
        if account is None or not guard.view(account).visible:
            raise NotFound("No customer with this id.")
        return _changes(context, frozenset({account_no}))

    @strawberry.subscription(
        description="Changes to every customer in the caller's rows: a sales rep's own customers and the "
        "pool, a sales manager's region, every customer for the roles that see all."
    )
    async def my_customers_changed(self, info: strawberry.Info) -> AsyncGenerator[CustomerChange, None]:
        context = _live(info)
        context.require_guard()
        context.require_feed()
        return _changes(context, None)


class AuditStream(SchemaExtension):
    """Each subscription event is audited like an HTTP answer, before it is sent: what it served,
    what was denied. When the audit store fails, the event goes out without data (fail closed)."""

    async def on_stream_result(self, result: StreamExecutionResult) -> AsyncIterator[None]:
        context = self.execution_context.context
        recorder = getattr(context, "audit_recorder", None)
        if isinstance(context, RequestContext) and recorder is not None and context.guard is not None:
            recorded = await recorder(context)
            context.guard.served.clear()
            context.guard.hidden_rows.clear()
            context.writes.clear()
            if not recorded:
                result.data = None  # type: ignore[union-attr]
                result.errors = [  # type: ignore[union-attr]
                    GraphQLError(INTERNAL_MESSAGE, original_error=GraphError(INTERNAL_MESSAGE))
                ]
        yield None


class StreamErrors(SchemaExtension):
    """Errors of streamed results (WebSocket) in the documented shape: ``extensions.code``, safe
    messages, one FORBIDDEN per field path pattern — as ``formatted_errors`` does for HTTP."""

    def on_stream_result(self, result: StreamExecutionResult) -> Iterator[None]:
        errors = getattr(result, "errors", None)
        if errors:
            result.errors = shaped_errors(errors)  # type: ignore[union-attr]
        yield None


def shaped_errors(errors: list[GraphQLError]) -> list[GraphQLError]:
    out: list[GraphQLError] = []
    forbidden: set[tuple[str, ...]] = set()
    for error in errors:
        formatted = format_error(error)
        extensions = formatted["extensions"]
        if extensions["code"] == "FORBIDDEN":
            pattern = path_pattern(error.path)
            if pattern in forbidden:
                continue
            forbidden.add(pattern)
        out.append(
            GraphQLError(
                formatted["message"],
                nodes=error.nodes,
                source=error.source,
                positions=error.positions,
                path=error.path,
                extensions=extensions,
            )
        )
    return out
