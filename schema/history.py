"""``Customer.history``: the customer's timeline (features/history.py) as the caller may see it.

Every value follows the reader's policy for that datum on that customer (the same-datum rule, as in
``auditLog``); an entry about a list the caller is denied (orders, payments, activities, tickets,
contracts) is left out, as are confidential contracts it does not see, access requests and grant uses
unless it may decide access requests on the customer or read the audit log, and a release's note unless
it wrote it or may assign the customer's owner."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

import strawberry

from connectors import models
from features import history
from policies.decisions import Effect
from policies.engine import CustomerView

from .datum import DATUM_OF_OPERATION, write_values

if TYPE_CHECKING:
    from .context import RequestContext


@strawberry.enum(description="Where a history entry comes from.")
class HistorySource(Enum):
    GATEWAY = "gateway"  # a write made through the gateway
    ACCESS = "access"  # an access request, its decision, or a grant used on the customer
    SALES = "sales"  # the sales system's change events
    SUPPORT = "support"  # the helpdesk's change events
    CONTRACTS = "contracts"  # the register's changes (polled)
    POOL = "pool"  # claims, releases, recycles, reassignments, reviews, warnings


@strawberry.input(description="Narrows `Customer.history`.")
class HistoryFilter:
    sources: list[HistorySource] | None = None
    since: datetime | None = None
    until: datetime | None = None


@strawberry.type(description="One entry of a customer's history.")
class HistoryEntry:
    at: datetime
    source: HistorySource
    kind: str = strawberry.field(
        description="The gateway operation (updateCustomerContact's `changeContact`, …), the system's event "
        "type (`account.updated`, `ticket.created`, `contract.changed`), or the pool event."
    )
    actor: str | None = strawberry.field(description="Who acted: a user id, system:…, or null (a system).")
    before: strawberry.scalars.JSON | None = strawberry.field(
        description="Changed values before, as you may see them."
    )
    after: strawberry.scalars.JSON | None = strawberry.field(
        description="Changed values after, as you may see them."
    )
    detail: strawberry.scalars.JSON | None
    grant_id: str | None = None


@strawberry.type
class HistoryEdge:
    cursor: str
    node: HistoryEntry


@strawberry.type
class HistoryPageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class HistoryConnection:
    edges: list[HistoryEdge]
    page_info: HistoryPageInfo


# writes about access and a data subject's rights, not the customer's data: shown only to who sees access
_ACCESS_OPERATIONS = frozenset(
    {"requestDataExport", "requestErasure", "decideErasure", "resumeErasure", "eraseCustomer"}
)
_LIST_OF_EVENT = {"order": "orders", "payment": "payments", "activity": "activities"}


def _denied(view: CustomerView, name: str) -> bool:
    return view[name].effect is Effect.DENY


class Reader:
    """What one caller may see of one customer's history: ``keep`` decides an entry (used before paging,
    so cursors never point at an entry left out), ``edge`` shows it."""

    def __init__(self, context: RequestContext, account: models.Account, view: CustomerView) -> None:
        guard = context.require_guard()
        self.guard, self.account, self.view = guard, account, view
        self.sees_access = (
            guard.can_write("decideAccessRequest", account).allowed or guard.can_write("readAuditLog").allowed
        )
        self.sees_notes = guard.can_write("assignOwner", account).allowed

    def sources(self, wanted: tuple[str, ...]) -> tuple[str, ...]:
        denied = {"support": "tickets", "contracts": "contracts"}
        return tuple(
            s
            for s in wanted
            if not (s in denied and _denied(self.view, denied[s]))
            and not (s == "access" and not self.sees_access)
        )

    def keep(self, entry: history.Entry) -> bool:
        if entry.source == "gateway":
            # a write about a list the reader is denied (a ticket opened, an activity logged) is not
            # shown at all; a data subject's request shows to who sees access entries
            operation = str(entry.detail.get("operation") or entry.kind)
            listed = DATUM_OF_OPERATION.get(operation)
            if listed is not None and _denied(self.view, listed):
                return False
            return operation not in _ACCESS_OPERATIONS or self.sees_access
        if entry.source == "sales":
            listed = _LIST_OF_EVENT.get(entry.kind.partition(".")[0])
            return listed is None or not _denied(self.view, listed)
        if entry.source == "contracts":
            item = SimpleNamespace(confidential=bool(entry.detail.get("confidential", False)))
            return bool(self.guard.keep(self.view, "contracts", [item]))
        return True

    def edge(self, entry: history.Entry) -> HistoryEdge:
        guard, account = self.guard, self.account
        before = after = None
        detail: dict[str, Any] = dict(entry.detail)
        if entry.source in ("gateway", "access"):
            operation = str(entry.detail.get("operation", ""))
            before = write_values(guard, account, operation, entry.before)
            after = write_values(guard, account, operation, entry.after)
            detail.pop("search", None)
        elif entry.source == "support":
            email = detail.get("requesterEmail")
            if isinstance(email, str):
                detail["requesterEmail"] = guard.datum(account, "email", email)
        elif entry.source == "contracts":
            detail.pop("party_name", None)
        elif entry.source == "pool" and not (self.sees_notes or entry.actor == guard.principal.sub):
            detail.pop("note", None)
        return HistoryEdge(
            cursor=history.cursor_of(entry),
            node=HistoryEntry(
                at=entry.at,
                source=HistorySource(entry.source),
                kind=entry.kind,
                actor=entry.actor,
                before=cast(strawberry.scalars.JSON, before),
                after=cast(strawberry.scalars.JSON, after),
                detail=cast(strawberry.scalars.JSON, detail or None),
                grant_id=entry.grant_id,
            ),
        )


def sources_of(filter: HistoryFilter | None) -> tuple[str, ...]:
    if filter is None or not filter.sources:
        return history.SOURCES
    return tuple(source.value for source in filter.sources)
