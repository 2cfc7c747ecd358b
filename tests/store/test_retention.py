"""Retention: a purge leaves no pool note, event payload or audit value older than its retention in the gateway
database, keeps the younger ones and the facts (who, when, which ticket), gives one e-mail one pseudonym,
and leaves the audit chain verifying — on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from features.pool.rules import PoolEventKind, PoolRecord
from features.pool.store import PoolStore
from features.retention import PSEUDONYM, Retention, purge
from features.store import AuditLog
from features.store.models import audit_log, event_inbox, pool_history

from .conftest import T0, Backend, entry

KEY = b"k" * 32


async def test_purge_keeps_nothing_past_its_time(backend: Backend) -> None:
    db = backend.open()
    try:
        audit = AuditLog(db)
        await audit.record(
            [
                entry(1, kind="write", before={"email": "a@x.cn"}, after={"email": "b@x.cn"}),
                entry(2, kind="write", before={"phone": "+8613900001111"}, at=T0 - timedelta(days=400)),
            ]
        )
        await audit.aclose()
        old, young = T0 - timedelta(days=800), T0 - timedelta(days=10)
        await PoolStore(db).add(
            [
                PoolRecord(kind=PoolEventKind.RELEASE, account_no="A-1", actor="u-1", at=old, owner_id="u-1",
                           reason="other", note="客户电话 138…"),
                PoolRecord(kind=PoolEventKind.RELEASE, account_no="A-2", actor="u-1", at=young, owner_id="u-1",
                           reason="other", note="最近的说明"),
            ]
        )  # fmt: skip
        async with db.write_transaction() as conn:
            for n, (at, email, source, detail) in enumerate(
                [
                    (T0 - timedelta(days=200), "wang@x.cn", "support", {"ticket_id": "1"}),
                    (T0 - timedelta(days=190), "wang@x.cn", "support", {"ticket_id": "2"}),
                    (T0 - timedelta(days=5), "li@x.cn", "support", {"ticket_id": "3"}),
                    (
                        T0 - timedelta(days=300),
                        None,
                        "contracts",
                        {"contract_id": "HT-1", "party_name": "澄川科技"},
                    ),
                ]
            ):
                await conn.execute(
                    event_inbox.insert().values(
                        source=source, event_id=f"e{n}", type="x", email=email, detail=detail,
                        received_at=at, published_at=at,
                    )
                )  # fmt: skip
        purged = await purge(db, Retention(pool_notes_days=730, event_payload_days=180), T0, key=KEY)
        assert (purged.pool_notes, purged.event_payloads, purged.audit_values) == (1, 3, 1)
        async with db.read() as conn:
            notes = dict(
                (await conn.execute(sa.select(pool_history.c.account_no, pool_history.c.note))).all()
            )
            events = (
                (await conn.execute(sa.select(event_inbox).order_by(event_inbox.c.event_id))).mappings().all()
            )
        assert notes == {"A-1": None, "A-2": "最近的说明"}
        e0, e1, e2, e3 = events
        assert e0["email"].startswith(PSEUDONYM) and e0["email"] == e1["email"]  # one e-mail, one pseudonym
        assert e0["detail"] == {"ticket_id": "1"}  # the fact stays
        assert e2["email"] == "li@x.cn"  # younger than its retention
        assert e3["detail"] == {"contract_id": "HT-1"}
        async with db.read() as conn:
            trail = str((await conn.execute(sa.select(audit_log))).all())
        assert "+8613900001111" not in trail  # past the audit values' 365 days
        assert "a@x.cn" in trail  # younger
        again = await purge(db, Retention(pool_notes_days=730, event_payload_days=180), T0, key=KEY)
        assert (again.pool_notes, again.event_payloads, again.audit_values) == (0, 0, 0)  # idempotent
        assert (await AuditLog(db).verify()).ok
    finally:
        await db.aclose()
