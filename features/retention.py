"""Retention: personal data in the gateway database kept no longer than configured, per kind.

``purge`` pseudonymises what is past its time and keeps the facts:

- **pool notes** (a release's free text in ``pool_history``, a review's notes in ``pool_reviews``): the text
  is removed (``CG_RETENTION_POOL_NOTES_DAYS``);
- **event payloads** (``event_inbox``: a helpdesk event's requester e-mail, a register event's party name):
  the e-mail becomes a pseudonym (``pseudonym:`` + a keyed digest, the same for the same e-mail, so events
  still group), the party name is removed (``CG_RETENTION_EVENT_PAYLOAD_DAYS``).

- **access-request reasons** (free text: why someone asked for a field, why a grant was revoked) of requests
  that ended: replaced by ``(removed by retention)`` (``CG_RETENTION_ACCESS_REASONS_DAYS``);
- **unlinked support identities** (an e-mail a steward unlinked from a customer, with who and why): the row
  goes that long after the unlink (``CG_RETENTION_UNLINKED_IDENTITIES_DAYS``); the audit trail keeps the fact;
- **export files** (a data subject's export: everything about them, on disk): deleted that long after the
  export finished (``CG_RETENTION_EXPORT_DAYS``); the request's row (who, when, which parts) stays;
- **audit values** (a write's values before and after, a search term): removed from the record, their
  commitment kept, so the record's facts stay and the chain still verifies (``AuditLog.redact_older_than``;
  ``CG_RETENTION_AUDIT_VALUES_DAYS``). Each removal is a ``maintenance`` record of its own.

Each kind's days: 0 keeps it (until the row itself goes: events after ``events_retention_days``). Idempotent;
safe on several instances at once (each update only touches rows still holding a value).

The values are sealed (``features/store/sealed.py``), so SQL cannot tell a pseudonym from an e-mail: an event
whose payload was purged is marked (``payload_purged_at``), and its e-mail's blind index becomes the
pseudonym's (a lookup by the real e-mail no longer finds it; the same pseudonym still groups). Likewise an
access request whose reasons were removed is marked (``reasons_removed_at``).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from features.store.audit import AuditLog
from features.store.db import STORE_ERRORS, Database, StoreUnavailable
from features.store.models import (
    access_requests,
    data_requests,
    event_inbox,
    identity_emails,
    pool_history,
    pool_reviews,
)

PSEUDONYM = "pseudonym:"
REMOVED_TEXT = "(removed by retention)"
_PERSONAL_DETAIL = ("party_name",)  # keys of an event's detail that carry personal data


@dataclass(frozen=True, slots=True)
class Retention:
    pool_notes_days: float = 730.0
    event_payload_days: float = 180.0
    audit_values_days: float = 365.0
    access_reasons_days: float = 730.0
    export_days: float = 30.0
    unlinked_identities_days: float = 365.0

    @classmethod
    def from_settings(cls, settings: Any) -> Retention:
        return cls(
            pool_notes_days=float(settings.retention_pool_notes_days),
            event_payload_days=float(settings.retention_event_payload_days),
            audit_values_days=float(settings.retention_audit_values_days),
            access_reasons_days=float(settings.retention_access_reasons_days),
            export_days=float(settings.retention_export_days),
            unlinked_identities_days=float(settings.retention_unlinked_identities_days),
        )


@dataclass(frozen=True, slots=True)
class Purged:
    pool_notes: int
    review_notes: int
    event_payloads: int
    audit_values: int = 0
    access_reasons: int = 0
    export_files: int = 0
    unlinked_identities: int = 0

    @property
    def any(self) -> bool:
        return bool(
            self.pool_notes
            or self.review_notes
            or self.event_payloads
            or self.audit_values
            or self.access_reasons
            or self.export_files
            or self.unlinked_identities
        )


def pseudonym(email: str, key: bytes) -> str:
    return PSEUDONYM + hmac.new(key, email.encode(), hashlib.sha256).hexdigest()[:24]


async def remove_access_reasons(
    conn: AsyncConnection, where: sa.ColumnElement[bool], text: str, now: datetime
) -> int:
    """Replace the reasons (and a revocation's reason) of the access requests meeting ``where`` by
    ``text``, marking them (``reasons_removed_at``); one by one, as the reasons are sealed in Python.
    Requests already marked are left alone. Returns how many were changed."""
    a = access_requests
    found = await conn.execute(
        sa.select(a.c.id, a.c.revoke_reason.is_(None)).where(where, a.c.reasons_removed_at.is_(None))
    )
    changed = 0
    for request_id, never_revoked in found.all():
        result = await conn.execute(
            a.update()
            .where(a.c.id == request_id, a.c.reasons_removed_at.is_(None))
            .values(reason=text, revoke_reason=None if never_revoked else text, reasons_removed_at=now)
        )
        changed += max(result.rowcount, 0)
    return changed


async def purge(
    database: Database,
    retention: Retention,
    now: datetime,
    *,
    key: bytes,
    audit: AuditLog | None = None,
    exports: Path | None = None,
) -> Purged:
    """Pseudonymise every value past its kind's retention (one transaction per kind; audit values in
    chunks, through ``audit``, default an ``AuditLog`` of ``database``; export files in ``exports``)."""
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
        unlinked = 0
        if retention.unlinked_identities_days > 0:
            cut = now - timedelta(days=retention.unlinked_identities_days)
            async with database.write_transaction() as conn:
                result = await conn.execute(
                    identity_emails.delete().where(
                        identity_emails.c.removed_at.is_not(None), identity_emails.c.removed_at < cut
                    )
                )
                unlinked = max(result.rowcount, 0)
        audit_values = 0
        if retention.audit_values_days > 0:
            days = retention.audit_values_days
            log = audit if audit is not None else AuditLog(database)
            redacted = await log.redact_older_than(
                now - timedelta(days=days), cause={"cause": "retention", "days": days}
            )
            audit_values = redacted.values
        reasons = 0
        if retention.access_reasons_days > 0:
            cut = now - timedelta(days=retention.access_reasons_days)
            a = access_requests
            async with database.write_transaction() as conn:
                finished = sa.and_(
                    a.c.created_at < cut,
                    a.c.status != "pending",
                    sa.or_(a.c.expires_at.is_(None), a.c.expires_at < now),
                )
                reasons = await remove_access_reasons(conn, finished, REMOVED_TEXT, now)
        files = 0
        if retention.export_days > 0 and exports is not None:
            cut = now - timedelta(days=retention.export_days)
            async with database.read() as conn:
                ended = (
                    await conn.execute(sa.select(data_requests.c.id).where(data_requests.c.finished_at < cut))
                ).scalars()
                for request_id in ended.all():
                    for suffix in (".json", ".html"):
                        path = exports / f"{request_id}{suffix}"
                        if path.is_file():
                            path.unlink()
                            files += 1
    except STORE_ERRORS as exc:
        raise StoreUnavailable(f"the retention purge could not write ({type(exc).__name__})") from None
    return Purged(pool_notes, review_notes, payloads, audit_values, reasons, files, unlinked)
