"""Personal data sealed at rest (features/store/sealed.py, migration 0009_sealed), on SQLite and PostgreSQL:
what a thief of the database file (or of a backup) sees holds no e-mail, note or reason; the stores read
back what they wrote; lookups by e-mail still find their rows; keys rotate without losing a value; a wrong key
fails clearly and names a column, never a value."""

from __future__ import annotations

import gzip
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from features.identity.match import Profile, hashed
from features.identity.store import IdentityStore
from features.pool.rules import PoolEventKind, PoolRecord
from features.pool.store import PoolStore, ReviewStore
from features.retention import Retention, purge
from features.store import Database
from features.store.backup import BackupError, backup, restore
from features.store.migrations import downgrade
from features.store.models import access_requests, event_inbox, identity_emails, metadata, pool_history
from features.store.rotation import rotate_keys
from features.store.sealed import (
    DataKeyError,
    Keyring,
    Sealed,
    SealedValueError,
    raw_table,
    sealed_columns,
)
from gateway.events.inbox import Inbox
from gateway.events.model import InboxEvent
from tests.factories import KEY_A, KEY_B, KEY_C, make_account

from .conftest import T0, Backend

# values planted through the stores, looked for in what is stored
NOTE = "PLANTED-pool-note 客户电话 13800138000"
REVIEW_NOTE = "PLANTED-review-note"
REASON = "PLANTED-access-reason"
EMAIL = "planted.requester@chengchuan.cn"
LINKED = "planted.linked@chengchuan.cn"
LINK_NOTE = "PLANTED-link-note"
UNLINK_REASON = "PLANTED-unlink-reason"
DISTINCT_REASON = "PLANTED-two-shops"
PARTY = "PLANTED-澄川科技"
TAX_ID = "91310115PLANTED3L"
ACCOUNT_EMAIL = "wang.fang@chengchuan.cn"  # make_account's
PLANTED = [NOTE, REVIEW_NOTE, REASON, EMAIL, LINKED, LINK_NOTE, UNLINK_REASON, DISTINCT_REASON, PARTY,
           TAX_ID, ACCOUNT_EMAIL]  # fmt: skip


async def _write(db: Database) -> None:
    """Personal data into every sealed table, through the stores that write it."""
    await PoolStore(db).add(
        [PoolRecord(kind=PoolEventKind.RELEASE, account_no="A-1", actor="u-1", at=T0, owner_id="u-1",
                    reason="other", note=NOTE)]
    )  # fmt: skip
    await PoolStore(db).open_review(
        account_no="A-1", region="east", cause="other", note=REVIEW_NOTE, previous_owner="u-1",
        actor="u-1", at=T0,
    )  # fmt: skip
    async with db.write_transaction() as conn:  # (the access store writes the row this way)
        await conn.execute(
            access_requests.insert().values(
                id="r-1", requester_sub="u-1", requester_roles=["sales_rep"], account_no="A-1",
                account_region="east", account_owner="u-2", fields=["email"], reason=REASON,
                status="pending", created_at=T0,
            )
        )  # fmt: skip
    inbox = Inbox(db)
    await inbox.accept_many(
        [
            InboxEvent("support", "t-1", "ticket.created", email=EMAIL, detail={"ticket_id": "T-1"}),
            InboxEvent(
                "contracts",
                "c-1",
                "contract.changed",
                tax_id=TAX_ID,
                detail={"contract_id": "HT-1", "party_name": PARTY},
            ),
        ],
        now=T0,
    )
    identity = IdentityStore(db)
    account = make_account("A-1")
    await identity.observe([Profile.of(account)], [account], T0)
    assert await identity.add_email("A-1", LINKED, origin="linked", source="steward", actor="u-s", at=T0,
                                    note=LINK_NOTE)  # fmt: skip
    assert await identity.add_email("A-1", "second@x.cn", origin="linked", source="steward", actor="u-s",
                                    at=T0)  # fmt: skip
    assert await identity.remove_email("A-1", "second@x.cn", actor="u-s", reason=UNLINK_REASON, at=T0)
    assert await identity.mark_distinct("A-1", "A-2", actor="u-s", reason=DISTINCT_REASON, at=T0)
    await identity.heard_requesters([EMAIL, ACCOUNT_EMAIL], T0)


async def _stored_text(backend: Backend, db: Database) -> bytes:
    """What a thief gets: the SQLite file's bytes (WAL checkpointed), or every row of every table as
    PostgreSQL prints it."""
    if backend.name == "sqlite":
        await db.aclose()  # the last connection checkpoints the WAL into the file
        path = Path(str(db.url.database))
        wal = path.with_name(path.name + "-wal")
        return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    out = []
    async with db.engine.connect() as conn:
        for table in metadata.sorted_tables:
            rows = await conn.execute(sa.text(f"SELECT t::text FROM {table.name} t"))
            out.extend(str(r[0]) for r in rows)
    return "\n".join(out).encode()


async def test_no_personal_data_in_the_database(backend: Backend) -> None:
    db = backend.open()
    try:
        await _write(db)
        stored = await _stored_text(backend, db)
    finally:
        await db.aclose()
    assert stored  # (the check below would pass on nothing)
    assert b"A-1" in stored and b"ticket.created" in stored  # what is not personal is there
    for value in PLANTED:
        assert value.encode() not in stored, value
        assert value.lower().encode() not in stored.lower(), value
    # nor the unkeyed digests of A-1's phone, e-mail, tax id… (found again by hashing guesses)
    digests = [hashed(k) for k in Profile.of(make_account("A-1")).blocking_keys()]
    assert digests and not any(d.encode() in stored for d in digests)


async def test_the_stores_read_back_what_they_wrote(backend: Backend) -> None:
    db = backend.open()
    try:
        await _write(db)
        history = await PoolStore(db).history("A-1")
        assert [r.note for r in history.records] == [NOTE]
        assert (await ReviewStore(db).latest(["A-1"]))["A-1"].note == REVIEW_NOTE
        async with db.read() as conn:
            reason = (await conn.execute(sa.select(access_requests.c.reason))).scalar_one()
            events = (await conn.execute(sa.select(event_inbox).order_by(event_inbox.c.id))).mappings().all()
        assert reason == REASON
        assert (events[0]["email"], events[0]["detail"]) == (EMAIL, {"ticket_id": "T-1"})
        assert (events[1]["tax_id"], events[1]["detail"]["party_name"]) == (TAX_ID, PARTY)
        identity = IdentityStore(db)
        emails = await identity.support_emails("A-1")
        assert [(e.email, e.note) for e in emails] == [(LINKED, LINK_NOTE)]
        assert (await identity.extra_emails())["A-1"] == ((LINKED, "linked"),)
        # lookups by value go through the blind index: the requester known as A-1's e-mail is matched
        unmatched, _, _ = await identity.unmatched_requesters(after=None, first=10)
        assert unmatched == [EMAIL]
        assert not await identity.add_email(
            "A-1", LINKED, origin="linked", source="steward", actor="u", at=T0
        )  # fmt: skip (already there: found by its index)
        async with db.read() as conn:
            found = (
                await conn.execute(sa.select(event_inbox.c.event_id).where(event_inbox.c.email_idx == EMAIL))
            ).all()
            other = (
                await conn.execute(
                    sa.select(event_inbox.c.event_id).where(event_inbox.c.email_idx == EMAIL.upper())
                )
            ).all()
        assert [r[0] for r in found] == ["t-1"] and other == []
        removed = (await _raw_rows(db, identity_emails))[1]
        assert removed["removed_reason"] is not None and UNLINK_REASON not in removed["removed_reason"]
    finally:
        await db.aclose()


async def _raw_rows(db: Database, table: sa.Table) -> list[dict[str, object]]:
    raw = raw_table(table)
    async with db.read() as conn:
        result = await conn.execute(sa.select(raw).order_by(*raw.primary_key.columns))
        return [dict(r) for r in result.mappings()]


async def test_keys_rotate_without_losing_a_value(backend: Backend) -> None:
    db = backend.open(keyring=Keyring([KEY_A]))
    try:
        await _write(db)
        before = await _raw_rows(db, pool_history)
    finally:
        await db.aclose()
    both = backend.open(keyring=Keyring([KEY_B, KEY_A]))  # B added first: gateways read A and B
    try:
        await both.migrate()
        assert (await PoolStore(both).history("A-1")).records[0].note == NOTE  # read with A
        rotated = await rotate_keys(both, batch=2)  # (small batches: resuming at a key)
        # every non-null sealed value re-sealed: 15 personal values and the blind-index key
        assert rotated.total("resealed") == 16 and rotated.total("changed") == 0
        assert rotated.resealed["pool_history.note"] == 1 and rotated.resealed["sealed_keys.value"] == 1
        again = await rotate_keys(both)
        assert again.total("resealed") == 0 and again.total("current") == rotated.total("resealed")
        after = await _raw_rows(both, pool_history)
        assert after[0]["note"] != before[0]["note"]
    finally:
        await both.aclose()
    only_b = backend.open(keyring=Keyring([KEY_B]))  # A removed
    try:
        await only_b.migrate()
        assert (await PoolStore(only_b).history("A-1")).records[0].note == NOTE
        identity = IdentityStore(only_b)  # the blind index did not change with the keys
        assert not await identity.add_email(
            "A-1", LINKED, origin="linked", source="steward", actor="u", at=T0
        )
    finally:
        await only_b.aclose()
    only_a = backend.open(keyring=Keyring([KEY_A]))  # what was sealed with B no longer opens with A
    try:
        with pytest.raises(SealedValueError) as caught:
            await only_a.migrate()  # at start, not at the first request
        assert "sealed_keys.value" in str(caught.value)
    finally:
        await only_a.aclose()


async def test_a_wrong_key_names_the_column_never_the_value(backend: Backend) -> None:
    db = backend.open()
    try:
        await _write(db)
    finally:
        await db.aclose()
    wrong = backend.open(keyring=Keyring([KEY_C]))
    try:
        with pytest.raises(SealedValueError) as at_start:
            await wrong.migrate()
        wrong.sealer.index_key = b"x" * 32  # (past the start check: what a read would meet)
        with pytest.raises(SealedValueError) as on_read:
            await PoolStore(wrong).history("A-1")
    finally:
        await wrong.aclose()
    for caught in (at_start, on_read):
        message = str(caught.value)
        assert "cannot be opened with any configured data key" in message
        assert KEY_C not in message and KEY_A not in message
        assert not any(value in message for value in PLANTED)
    assert "pool_history.note" in str(on_read.value)
    keyless = backend.open(keyring=None)
    try:
        with pytest.raises(SealedValueError, match="no data key is configured"):
            await PoolStore(keyless).history("A-1")
    finally:
        await keyless.aclose()


def test_sealed_columns_refuse_comparison_in_sql() -> None:
    with pytest.raises(SealedValueError, match=r"pool_history\.note is sealed"):
        _ = pool_history.c.note == NOTE
    with pytest.raises(SealedValueError):
        sa.select(event_inbox).order_by(event_inbox.c.email.desc())
    with pytest.raises(SealedValueError):
        event_inbox.c.email.in_([EMAIL])
    assert pool_history.c.note.is_(None) is not None  # whether there is a value at all: allowed


def test_bad_keys_are_refused_without_showing_them() -> None:
    for bad in (["not-a-key"], [KEY_A, "x" * 44], [KEY_A, KEY_A], []):
        with pytest.raises(DataKeyError) as caught:
            Keyring(bad)
        assert all(k not in str(caught.value) for k in bad if k)
    assert KEY_A not in repr(Keyring([KEY_A]))


def test_every_personal_column_is_sealed() -> None:
    """The columns this issue names are sealed (a new column of personal data must be added here)."""
    sealed = {f"{t.name}.{c.name}" for t in metadata.sorted_tables for c in sealed_columns(t)}
    assert sealed >= {
        "pool_history.note", "pool_reviews.note", "pool_reviews.decision_note", "access_requests.reason",
        "access_requests.revoke_reason", "event_inbox.email", "event_inbox.tax_id", "event_inbox.detail",
        "identity_accounts.email", "identity_emails.email", "identity_emails.note",
        "identity_emails.removed_reason", "identity_distinct.reason", "identity_requesters.email",
    }  # fmt: skip
    assert isinstance(access_requests.c.reason.type, Sealed)


async def test_backup_holds_ciphertext_and_restores_with_the_keys(
    backend: Backend, empty_backend: Backend, tmp_path: Path
) -> None:
    source = backend.open()
    try:
        await _write(source)
        file = tmp_path / "gateway.cgbak"
        await backup(source, file)
        source_rows = {t.name: await _raw_rows(source, t) for t in metadata.sorted_tables}
    finally:
        await source.aclose()
    text = gzip.decompress(file.read_bytes())
    assert b"A-1" in text
    for value in PLANTED:
        assert value.encode() not in text, value

    def target(keys: list[str], name: str) -> Database:
        if empty_backend.name == "postgresql":
            return empty_backend.open(keyring=Keyring(keys))
        return Database(f"sqlite+aiosqlite:///{tmp_path}/{name}.db", keyring=Keyring(keys))

    wrong = target([KEY_C], "wrong")
    try:
        with pytest.raises(BackupError, match="sealed with data keys that are not configured"):
            await restore(wrong, file)
        async with wrong.read() as conn:
            assert (await conn.execute(sa.select(sa.func.count()).select_from(pool_history))).scalar() == 0
    finally:
        await wrong.aclose()
    right = target([KEY_B, KEY_A], "right")  # (a later key list that still has the old one)
    try:
        restored = await restore(right, file, replace=True)
        assert restored.verify.ok
        assert {t.name: await _raw_rows(right, t) for t in metadata.sorted_tables} == source_rows
        assert (await PoolStore(right).history("A-1")).records[0].note == NOTE
        unmatched, _, _ = await IdentityStore(right).unmatched_requesters(after=None, first=10)
        assert unmatched == [EMAIL]  # the restored blind index, with the restored index key
    finally:
        await right.aclose()


async def test_retention_purge_on_sealed_values(backend: Backend) -> None:
    db = backend.open()
    try:
        await _write(db)
        purged = await purge(db, Retention(pool_notes_days=1, event_payload_days=1), T0 + timedelta(days=2),
                             key=b"k" * 32)  # fmt: skip
        assert (purged.pool_notes, purged.review_notes, purged.event_payloads) == (1, 1, 2)
        async with db.read() as conn:
            events = (await conn.execute(sa.select(event_inbox).order_by(event_inbox.c.id))).mappings().all()
            by_email = (
                await conn.execute(sa.select(event_inbox.c.id).where(event_inbox.c.email_idx == EMAIL))
            ).all()
        assert events[0]["email"].startswith("pseudonym:") and events[0]["payload_purged_at"] is not None
        assert events[1]["detail"] == {"contract_id": "HT-1"}
        assert by_email == []  # the real e-mail no longer finds the purged event
        again = await purge(db, Retention(pool_notes_days=1, event_payload_days=1), T0 + timedelta(days=2),
                            key=b"k" * 32)  # fmt: skip
        assert (again.pool_notes, again.review_notes, again.event_payloads) == (0, 0, 0)
    finally:
        await db.aclose()


async def test_migration_seals_what_was_there(empty_backend: Backend) -> None:
    """A database at 0008 with plaintext personal data: the upgrade refuses without keys (nothing
    changed), seals everything with them, and the stores read it."""
    db = empty_backend.open()
    try:
        await db.migrate("0008_access_review")
        async with db.engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO pool_history (at, account_no, kind, actor, note) "
                    "VALUES (:at, 'A-1', 'release', 'u-1', :note)"
                ),
                {"at": T0, "note": NOTE},
            )
            for n, email in enumerate([EMAIL, "pseudonym:0123"]):
                await conn.execute(
                    sa.text(
                        "INSERT INTO event_inbox (source, event_id, type, email, detail, received_at) "
                        "VALUES ('support', :id, 'ticket.created', :email, :detail, :at)"
                    ),
                    {"id": f"t-{n}", "email": email, "detail": '{"ticket_id": "T-1"}', "at": T0},
                )
            await conn.execute(
                sa.text("INSERT INTO identity_requesters (email, first_seen, last_seen) VALUES (:e, :t, :t)"),
                {"e": EMAIL, "t": T0},
            )
            for account_no in ("A-1", "A-2", "A-3"):  # share a blocking key
                key = hashed("phone:13800138000" if account_no != "A-3" else "phone:13900139000")
                await conn.execute(
                    sa.text("INSERT INTO identity_keys (key, account_no) VALUES (:k, :a)"),
                    {"k": key, "a": account_no},
                )
        keyless = empty_backend.open(keyring=None)
        try:
            with pytest.raises(SealedValueError, match="configure the data keys"):
                await keyless.migrate()
            assert await keyless.current_revision() == "0008_access_review"
        finally:
            await keyless.aclose()
        await db.migrate()
        assert (await PoolStore(db).history("A-1")).records[0].note == NOTE
        async with db.read() as conn:
            rows = (await conn.execute(sa.select(event_inbox).order_by(event_inbox.c.id))).mappings().all()
            found = (
                await conn.execute(sa.select(event_inbox.c.id).where(event_inbox.c.email_idx == EMAIL))
            ).all()
        assert [(r["email"], r["detail"]) for r in rows] == [(EMAIL, {"ticket_id": "T-1"}),
                                                             ("pseudonym:0123", {"ticket_id": "T-1"})]  # fmt: skip
        assert [r["payload_purged_at"] is not None for r in rows] == [False, True]
        assert len(found) == 1
        unmatched, _, _ = await IdentityStore(db).unmatched_requesters(after=None, first=10)
        assert unmatched == [EMAIL]
        shared = await IdentityStore(db).sharing_keys([hashed("phone:13800138000")])
        assert list(shared.values()) == [{"A-1", "A-2"}]  # blocking keys re-keyed, still shared
        stored = await _stored_text(empty_backend, db)
        for value in (NOTE, EMAIL, hashed("phone:13800138000")):
            assert value.encode() not in stored
        # and back: the downgrade opens every value again
        reopened = empty_backend.open()
        try:
            async with reopened.engine.begin() as conn:
                await conn.run_sync(downgrade, "0008_access_review")
            async with reopened.engine.connect() as conn:
                note = (await conn.execute(sa.text("SELECT note FROM pool_history"))).scalar()
                requester = (await conn.execute(sa.text("SELECT email FROM identity_requesters"))).scalar()
            assert (note, requester) == (NOTE, EMAIL)
        finally:
            await reopened.aclose()
    finally:
        await db.aclose()


async def test_a_value_read_again_is_not_opened_again(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The identity directory reloads every support identity every 2 s on every instance: each token is
    opened once (the memo), a new token (a new or re-sealed value) is opened."""
    db = backend.open()
    try:
        await _write(db)
        identity = IdentityStore(db)
        opened: list[str] = []
        real = Keyring.open

        def counting(self: Keyring, token: str, column: str) -> bytes:
            opened.append(column)
            return real(self, token, column)

        monkeypatch.setattr(Keyring, "open", counting)
        await identity.extra_emails()
        first = len(opened)
        assert first >= 1
        await identity.extra_emails()
        assert len(opened) == first  # nothing opened again
        await identity.add_email("A-1", "third@x.cn", origin="linked", source="steward", actor="u", at=T0)
        assert (await identity.extra_emails())["A-1"] == ((LINKED, "linked"), ("third@x.cn", "linked"))
        assert len(opened) == first + 1  # only the new one
    finally:
        await db.aclose()


async def test_rotation_leaves_a_value_a_gateway_changed_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rotate-keys runs while gateways write: a value changed between its read and its write-back (here:
    the retention purge removed the note) is left as the gateway wrote it, and counted."""
    import sqlite3

    path = tmp_path / "gateway.db"
    db = Database(f"sqlite+aiosqlite:///{path}", keyring=Keyring([KEY_A]))
    try:
        await db.migrate()
        await _write(db)
    finally:
        await db.aclose()
    rotating = Database(f"sqlite+aiosqlite:///{path}", keyring=Keyring([KEY_B, KEY_A]))
    real = Keyring.rotate

    def meanwhile(self: Keyring, token: str, column: str) -> str:
        if column == "pool_history.note":  # another process writes between the batch's read and write
            with sqlite3.connect(path, timeout=5) as other:
                other.execute("UPDATE pool_history SET note = NULL")
        return real(self, token, column)

    monkeypatch.setattr(Keyring, "rotate", meanwhile)
    try:
        await rotating.migrate()
        rotated = await rotate_keys(rotating)
        assert rotated.changed == {**dict.fromkeys(rotated.changed, 0), "pool_history.note": 1}
        assert (await PoolStore(rotating).history("A-1")).records[0].note is None  # the other write stands
        monkeypatch.setattr(Keyring, "rotate", real)
        assert (await rotate_keys(rotating)).total("resealed") == 0  # nothing left behind
    finally:
        await rotating.aclose()
