"""Retention: a purge leaves no pool note, event payload or audit value older than its retention in the gateway
database, keeps the younger ones and the facts (who, when, which ticket), gives one e-mail one pseudonym,
and leaves the audit chain verifying — on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

from features.identity.store import IdentityStore
from features.pool.rules import PoolEventKind, PoolRecord
from features.pool.store import PoolStore
from features.retention import PSEUDONYM, REMOVED_TEXT, Retention, purge
from features.store import AuditLog
from features.store.models import (
    access_requests,
    audit_log,
    data_requests,
    event_inbox,
    identity_emails,
    pool_history,
)

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


async def test_ended_access_reasons_and_old_export_files_go(backend: Backend, tmp_path: Path) -> None:
    exports = tmp_path / "exports"
    exports.mkdir()
    db = backend.open()
    try:
        await db.migrate()
        old, young = T0 - timedelta(days=800), T0 - timedelta(days=10)
        async with db.write_transaction() as conn:
            for n, (created, status, expires) in enumerate(
                [
                    (old, "approved", old + timedelta(days=7)),  # ended long ago
                    (old, "pending", None),  # still waiting: its reason is what the approver reads
                    (young, "denied", None),  # younger than the retention
                ]
            ):
                await conn.execute(
                    access_requests.insert().values(
                        id=f"r-{n}", requester_sub="u-1", requester_roles=["finance"], account_no="A-1",
                        account_region="east", account_owner=None, fields=["phone"],
                        reason=f"客户王芳来电 {n}", status=status, created_at=created, expires_at=expires,
                    )
                )  # fmt: skip
            for n, finished in enumerate([T0 - timedelta(days=40), T0 - timedelta(days=2)]):
                await conn.execute(
                    data_requests.insert().values(
                        id=f"x-{n}", kind="export", account_no="A-1", status="done", progress=1.0, parts=[],
                        requested_by="u-dpo", created_at=finished, finished_at=finished,
                    )
                )  # fmt: skip
                for suffix in (".json", ".html"):
                    (exports / f"x-{n}{suffix}").write_text("{}")
        retention = Retention(access_reasons_days=730, export_days=30)
        purged = await purge(db, retention, T0, key=KEY, exports=exports)
        assert (purged.access_reasons, purged.export_files) == (1, 2)
        async with db.read() as conn:
            reasons = dict(
                (await conn.execute(sa.select(access_requests.c.id, access_requests.c.reason))).all()
            )
        assert reasons == {"r-0": REMOVED_TEXT, "r-1": "客户王芳来电 1", "r-2": "客户王芳来电 2"}
        assert sorted(p.name for p in exports.iterdir()) == ["x-1.html", "x-1.json"]
        again = await purge(db, retention, T0, key=KEY, exports=exports)
        assert (again.access_reasons, again.export_files) == (0, 0)
    finally:
        await db.aclose()


async def test_unlinked_support_identities_go_after_their_retention(backend: Backend) -> None:
    db = backend.open()
    try:
        await db.migrate()
        store = IdentityStore(db)
        for email, at in (("old@x.cn", T0 - timedelta(days=800)), ("recent@x.cn", T0 - timedelta(days=5))):
            await store.add_email("A-1", email, origin="linked", source="steward", actor="u-s", at=at)
            await store.remove_email("A-1", email, actor="u-s", reason="王芳说这不是她的邮箱", at=at)
        await store.add_email("A-1", "current@x.cn", origin="linked", source="steward", actor="u-s", at=T0)
        purged = await purge(db, Retention(unlinked_identities_days=365), T0, key=KEY)
        assert purged.unlinked_identities == 1
        async with db.read() as conn:
            kept = sorted((await conn.execute(sa.select(identity_emails.c.email))).scalars())
        assert kept == ["current@x.cn", "recent@x.cn"]
    finally:
        await db.aclose()
