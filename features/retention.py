"""Retention: personal data in the gateway database kept no longer than configured, per kind.

``purge`` pseudonymises what is past its time and keeps the facts:

- **pool notes** (a release's free text in ``pool_history``, a review's notes in ``pool_reviews``): the text
  is removed (``CG_RETENTION_POOL_NOTES_DAYS``);
- **event payloads** (``event_inbox``: a helpdesk event's requester e-mail, a register event's party name):
  the e-mail becomes a pseudonym (``pseudonym:`` + a keyed digest, the same for the same e-mail, so events
  still group), the party name is removed (``CG_RETENTION_EVENT_PAYLOAD_DAYS``).

Each kind's days: 0 keeps it (until the row itself goes: events after ``events_retention_days``). Audit values
are not purged here: the audit chain commits to them (see README, #18). Idempotent; safe on several
instances at once (each update only touches rows still holding a value).

The values are sealed (``features/store/sealed.py``), so SQL cannot tell a pseudonym from an e-mail: an event
whose payload was purged is marked (``payload_purged_at``), and its e-mail's blind index becomes the
pseudonym's (a lookup by the real e-mail no longer finds it; the same pseudonym still groups).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from features.store.db import STORE_ERRORS, Database, StoreUnavailable
from features.store.models import event_inbox, pool_history, pool_reviews

PSEUDONYM = "pseudonym:"
_PERSONAL_DETAIL = ("party_name",)  # keys of an event's detail that carry personal data


@dataclass(frozen=True, slots=True)
class Retention:
    pool_notes_days: float = 730.0
    event_payload_days: float = 180.0

    @classmethod
    def from_settings(cls, settings: Any) -> Retention:
        return cls(
            pool_notes_days=float(settings.retention_pool_notes_days),
            event_payload_days=float(settings.retention_event_payload_days),
        )


@dataclass(frozen=True, slots=True)
class Purged:
    pool_notes: int
    review_notes: int
    event_payloads: int


def pseudonym(email: str, key: bytes) -> str:
    return PSEUDONYM + hmac.new(key, email.encode(), hashlib.sha256).hexdigest()[:24]


async def purge(database: Database, retention: Retention, now: datetime, *, key: bytes) -> Purged:
    """Pseudonymise every value past its kind's retention (one transaction per kind)."""
    try:
        pool_notes = review_notes = payloads = 0
        if retention.pool_notes_days > 0:
            cut = now - timedelta(days=retention.pool_notes_days)
            async with database.write_transaction() as conn:
                result = await conn.execute(
                    pool_history.update()
                    .where(pool_history.c.at < cut, pool_history.c.note.is_not(None))
                    .values(note=None)
                )
                pool_notes = max(result.rowcount, 0)
                result = await conn.execute(
                    pool_reviews.update()
                    .where(
                        pool_reviews.c.entered_at < cut,
                        sa.or_(pool_reviews.c.note.is_not(None), pool_reviews.c.decision_note.is_not(None)),
                    )
                    .values(note=None, decision_note=None)
                )
                review_notes = max(result.rowcount, 0)
        if retention.event_payload_days > 0:
            cut = now - timedelta(days=retention.event_payload_days)
            e = event_inbox
            async with database.write_transaction() as conn:
                rows = (
                    await conn.execute(
                        sa.select(e.c.id, e.c.email, e.c.detail).where(
                            e.c.received_at < cut,
                            e.c.payload_purged_at.is_(None),
                            sa.or_(e.c.email.is_not(None), e.c.source == "contracts"),
                        )
                    )
                ).all()
                for row_id, email, detail in rows:
                    personal = {k: v for k, v in (detail or {}).items() if k not in _PERSONAL_DETAIL}
                    changes: dict[str, Any] = {"payload_purged_at": now}
                    if email and not email.startswith(PSEUDONYM):
                        changes["email"] = changes["email_idx"] = pseudonym(email, key)
                    if detail and personal != detail:
                        changes["detail"] = personal
                    result = await conn.execute(
                        e.update().where(e.c.id == row_id, e.c.payload_purged_at.is_(None)).values(**changes)
                    )
                    if result.rowcount and len(changes) > 1:  # (another instance may have been first)
                        payloads += 1
    except STORE_ERRORS as exc:
        raise StoreUnavailable(f"the retention purge could not write ({type(exc).__name__})") from None
    return Purged(pool_notes, review_notes, payloads)
