"""The write journal: a write is recorded before it is sent, and closed with its audit record.

The outside review made a write reach the sales system while the audit database was down: the caller
got INTERNAL, the activity existed, and no record said so. Now every write through the graph is, in
order:

1. **intent** — a ``write_intents`` row (state ``open``) is committed *before* the system is called;
   if the store cannot take it, nothing is sent and the caller is told so;
2. the write, sent to the system;
3. **outcome** — the request's audit records and the intent's new state (``done``, or ``failed`` when
   the system refused or could not be reached) commit in **one** transaction.

An intent left ``open`` (the database failed between 2 and 3, or the gateway stopped) is found by
``flag_stale()`` — at start and then every minute — and written into the audit trail as a ``write``
record with ``outcome: unknown`` (who, when, which operation on which customer: the values are not
known), and marked ``flagged``. So the trail never misses a write that may have happened.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .audit import AuditEntry, AuditLog
from .db import STORE_ERRORS, Database, StoreUnavailable
from .models import write_intents

log = logging.getLogger(__name__)

STALE_AFTER = timedelta(seconds=60)  # an open intent older than this belongs to no live request


class WriteJournal:
    def __init__(self, database: Database) -> None:
        self.db = database

    async def open(self, request_id: str, user_sub: str, operation: str, account_no: str | None) -> str:
        """Record the intent (committed); ``StoreUnavailable`` when the store cannot take it."""
        intent = str(uuid.uuid4())
        row = {
            "id": intent,
            "at": datetime.now(UTC),
            "request_id": request_id,
            "user_sub": user_sub,
            "operation": operation,
            "account_no": account_no,
            "state": "open",
        }
        try:
            async with self.db.write_transaction() as conn:
                await conn.execute(write_intents.insert(), row)
        except STORE_ERRORS as exc:
            raise StoreUnavailable(f"the write journal is unavailable ({type(exc).__name__})") from None
        return intent

    @staticmethod
    async def close(conn: AsyncConnection, states: dict[str, str]) -> None:
        """In the caller's transaction (the one that appends the audit records): set each intent's
        outcome."""
        now = datetime.now(UTC)
        for state in set(states.values()):
            ids = [intent for intent, s in states.items() if s == state]
            await conn.execute(
                write_intents.update()
                .where(write_intents.c.id.in_(ids), write_intents.c.state == "open")
                .values(state=state, settled_at=now)
            )

    async def flag_stale(self, audit: AuditLog, *, older_than: timedelta = STALE_AFTER) -> int:
        """Write every open intent older than ``older_than`` into the audit trail as a write of unknown
        outcome and mark it ``flagged``; how many were flagged. ``StoreUnavailable`` when it cannot."""
        try:
            return await self._flag_stale(audit, older_than)
        except STORE_ERRORS as exc:
            raise StoreUnavailable(f"the write journal is unavailable ({type(exc).__name__})") from None

    async def _flag_stale(self, audit: AuditLog, older_than: timedelta) -> int:
        cut = datetime.now(UTC) - older_than
        async with self.db.read() as conn:
            rows = (
                (
                    await conn.execute(
                        sa.select(write_intents).where(
                            write_intents.c.state == "open", write_intents.c.at < cut
                        )
                    )
                )
                .mappings()
                .all()
            )
        if not rows:
            return 0
        async with audit.transaction() as tx:
            tx.add(*(_unknown(row) for row in rows))
            await self.close(tx.connection, {str(row["id"]): "flagged" for row in rows})
        log.error("%d write(s) whose outcome was never recorded flagged in the audit trail", len(rows))
        return len(rows)

    async def open_count(self) -> int:
        async with self.db.read() as conn:
            found = await conn.execute(
                sa.select(sa.func.count()).select_from(write_intents).where(write_intents.c.state == "open")
            )
            return int(found.scalar() or 0)


def _unknown(row: Any) -> AuditEntry:
    return AuditEntry(
        kind="write",
        request_id=str(row["request_id"]),
        user_sub=str(row["user_sub"]),
        operation_type="mutation",
        customer_ids=[str(row["account_no"])] if row["account_no"] else [],
        detail={
            "operation": str(row["operation"]),
            "intent": str(row["id"]),
            "outcome": "unknown",
            "note": "sent to the system; its outcome was never recorded (the store or the gateway failed)",
        },
        at=row["at"],
    )


def intent_states(
    intents: Sequence[tuple[str, str, str | None]], written: set[tuple[str, str]]
) -> dict[str, str]:
    """Each intent's outcome: ``done`` when the request recorded that write, else ``failed``."""
    return {
        intent: "done" if (operation, account_no or "") in written else "failed"
        for intent, operation, account_no in intents
    }
