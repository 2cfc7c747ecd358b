"""What flows through live updates: accepted inbox events, and the per-customer changes made of them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from schema.live import KNOWN_TYPES, MISSED_TYPE, RECYCLE_WARNING_TYPE, ChangeKind

SOURCES = ("sales", "support", "contracts", "pool")
CONTRACT_CHANGED = str(ChangeKind.CONTRACT_CHANGED.value)

__all__ = [
    "CONTRACT_CHANGED",
    "KNOWN_TYPES",
    "MISSED_TYPE",
    "RECYCLE_WARNING_TYPE",
    "SOURCES",
    "ChangeEvent",
    "InboxEvent",
    "StoredEvent",
]


@dataclass(frozen=True, slots=True)
class InboxEvent:
    """A change event as a system sent it (or the poller found it), reduced to what names the customer."""

    source: str  # sales | support | contracts | pool (the gateway's own public pool)
    event_id: str  # unique per source
    type: str  # the system's own type (account.updated, ticket.created, contract.changed, …)
    account_no: str | None = None
    email: str | None = None
    tax_id: str | None = None
    occurred_at: datetime | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An inbox row."""

    id: int  # the order of acceptance
    event: InboxEvent
    received_at: datetime
    published_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One change to one customer, as subscribers receive it (``schema.live.Change``).

    A support event about an e-mail shared by two customers is two ``ChangeEvent``s with one id.
    """

    event_id: str
    system: str  # sales | support | contracts | gateway (MISSED)
    type: str  # a ``ChangeKind`` value
    account_no: str | None
    at: datetime
    confidential: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "system": self.system,
            "type": self.type,
            "account_no": self.account_no,
            "at": self.at.isoformat(),
            "confidential": self.confidential,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ChangeEvent:
        """Raises ``ValueError`` (or ``KeyError``/``TypeError``) for anything that is not one."""
        at = datetime.fromisoformat(str(data["at"]))
        account_no = data.get("account_no")
        return cls(
            event_id=str(data["event_id"]),
            system=str(data["system"]),
            type=str(data["type"]),
            account_no=None if account_no is None else str(account_no),
            at=at if at.tzinfo is not None else at.replace(tzinfo=UTC),
            confidential=bool(data.get("confidential", False)),
        )

    @classmethod
    def missed(cls, at: datetime) -> ChangeEvent:
        """The marker a subscriber gets after events were dropped for it."""
        return cls(event_id="missed", system="gateway", type=MISSED_TYPE, account_no=None, at=at)
