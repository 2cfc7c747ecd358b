"""The contract register sends no events: ask it ``updated_since`` every ``CG_CONTRACTS_POLL_INTERVAL``.

Each poll asks for the contracts changed since yesterday (the register counts in days; yesterday
covers the turn of the day, and since the last successful poll's day when polls failed). Each
contract found is an inbox event ``contract.changed`` with the id ``<contract_id>@<updated_on>#<digest>``,
the digest over the contract's fields, so the inbox's uniqueness recognises a change already seen —
also across restarts and by other gateways on the same database — while a second change on the same
day is a new event. The very first poll on an empty inbox records what it finds as already published
(a baseline), so a new gateway does not announce the last two days of the register as news.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

from connectors.contracts import ContractsConnector
from connectors.errors import UpstreamError
from connectors.models import Contract
from features.store.db import StoreUnavailable

from .inbox import Inbox
from .model import CONTRACT_CHANGED, InboxEvent

log = logging.getLogger("customer_graph.events")

__all__ = ["ContractsPoller", "contract_event"]


def contract_event(contract: Contract) -> InboxEvent:
    fields = dataclasses.asdict(dataclasses.replace(contract, documents=None))
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return InboxEvent(
        source="contracts",
        event_id=f"{contract.contract_id}@{contract.updated_on.isoformat()}#{digest}",
        type=CONTRACT_CHANGED,
        tax_id=contract.party_tax_id,
        detail={
            "contract_id": contract.contract_id,
            "party_name": contract.party_name,
            "confidential": contract.confidential,
            "updated_on": contract.updated_on.isoformat(),
        },
    )


class ContractsPoller:
    def __init__(
        self,
        inbox: Inbox,
        contracts: Callable[[], ContractsConnector],
        *,
        interval: float,
        on_new: Callable[[], None] = lambda: None,
        today: Callable[[], date] = lambda: datetime.now(UTC).date(),
    ) -> None:
        self.inbox = inbox
        self.contracts = contracts
        self.interval = interval
        self.on_new = on_new
        self.today = today
        self.polls = 0  # successful polls
        self._last_day: date | None = None  # of the last successful poll
        self._seen: set[str] = set()  # event ids of the last poll's answer
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None and self.interval > 0:
            self._task = asyncio.create_task(self._run(), name="contracts-poller")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.poll_once()
            except (UpstreamError, StoreUnavailable) as exc:
                log.warning("contracts poll failed; next at the next interval", extra={"error": str(exc)})
            except Exception:
                log.exception("contracts poll failed; next at the next interval")
            await asyncio.sleep(self.interval)

    async def poll_once(self) -> int:
        """One poll; how many changes were new."""
        today = self.today()
        since = min(today, self._last_day or today) - timedelta(days=1)
        baseline = self._last_day is None and await self.inbox.count("contracts") == 0
        found = await self.contracts().updated_since(since)
        events = [contract_event(contract) for contract in found]
        fresh = [event for event in events if event.event_id not in self._seen]
        new = await self.inbox.accept_many(fresh, published=baseline)
        self._seen = {event.event_id for event in events}
        self._last_day = today
        self.polls += 1
        if baseline:
            log.info("contracts poll: baseline of %d changes recorded", new)
            return 0
        if new:
            self.on_new()
        return new
