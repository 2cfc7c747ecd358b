"""Live updates: change events in (webhooks, the register's poll), evictions and subscriptions out.

    receiver.py   POST /hooks/sales, /hooks/support: signature, body, stored, acknowledged
    inbox.py      the gateway database's event_inbox: insert-or-ignore, pending, claim, prune
    publisher.py  pending rows → customers named → cache evicted → bus → row marked published
    poller.py     the contract register's updated_since, every CG_CONTRACTS_POLL_INTERVAL
    bus.py        fan-out to subscribers (bounded queues), Redis pub/sub between instances
    service.py    LiveUpdates: all of the above, started and stopped with the gateway
    websocket.py  graphql-transport-ws: the connection's token, a context per operation

``schema/live.py`` has the subscriptions and the policy applied to every event.
"""

from __future__ import annotations

from .bus import BusUnavailable, EventBus, Subscriber
from .inbox import Inbox
from .model import ChangeEvent, InboxEvent, StoredEvent
from .receiver import SIGNATURE_HEADERS, signature
from .service import LiveUpdates

__all__ = [
    "SIGNATURE_HEADERS",
    "BusUnavailable",
    "ChangeEvent",
    "EventBus",
    "Inbox",
    "InboxEvent",
    "LiveUpdates",
    "StoredEvent",
    "Subscriber",
    "signature",
]
