"""``db backup`` / ``db restore``: a gateway database written to one file and restored into an empty one —
on SQLite and PostgreSQL, and across them — with every row back and the audit chain verifying."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import sqlalchemy as sa

from features.identity.service import Identity
from features.identity.store import IdentityStore
from features.pool.rules import PoolEventKind, PoolRecord
from features.pool.store import PoolStore
from features.store import AuditLog, Database
from features.store.backup import BackupError, backup, restore
from features.store.models import audit_log, metadata
from tests.factories import data_keyring, make_account

from .conftest import T0, Backend, entry


async def _fill(db: Database) -> None:
    audit = AuditLog(db)
    try:
        for n in range(5):
            await audit.record(
                [
                    entry(n),
                    entry(n + 100, kind="write", before={"email": "a@x.cn"}, after={"email": "b@x.cn"}),
                ]
            )
    finally:
        await audit.aclose()
    await PoolStore(db).add(
        [
            PoolRecord(
                kind=PoolEventKind.RELEASE,
                account_no="A-1",
                actor="u-1",
                at=T0,
                owner_id="u-1",
                reason="other",
                note="说明",
            )
        ]
    )
    accounts = [make_account("A-1"), dataclasses.replace(make_account("A-2"), email=None)]

    async def fetch(numbers: list[str]) -> dict[str, object]:
        return {}

    identity = Identity(IdentityStore(db), fetch, refresh_seconds=0)  # type: ignore[arg-type]

    async def pages():  # type: ignore[no-untyped-def]
        yield accounts

    await identity.scan(pages())
    await identity.link("A-1", "old@x.cn", actor="u-steward", note="同一人")


async def _dump(db: Database) -> dict[str, list[tuple[object, ...]]]:
    out: dict[str, list[tuple[object, ...]]] = {}
    async with db.read() as conn:
        for table in metadata.sorted_tables:
            keys = list(table.primary_key.columns)
            rows = (await conn.execute(sa.select(table).order_by(*keys))).all()
            out[table.name] = [tuple(r) for r in rows]
    return out


async def test_backup_and_restore(backend: Backend, empty_backend: Backend, tmp_path: Path) -> None:
    source = backend.open()
    # (the empty SQLite fixture would share the source's file: a file of its own)
    target = (
        empty_backend.open()
        if empty_backend.name == "postgresql"
        else Database(f"sqlite+aiosqlite:///{tmp_path}/restored.db", keyring=data_keyring())
    )
    try:
        await _fill(source)
        file = tmp_path / "gateway.cgbak"
        counts = await backup(source, file)
        assert counts["audit_log"] == 10 and counts["pool_history"] == 1 and counts["identity_emails"] == 1
        restored = await restore(target, file)
        assert restored.verify.ok, restored.verify
        assert restored.verify.records_checked == 10
        assert await _dump(target) == await _dump(source)
        # the restored database goes on: a new record continues the chain, new ids follow the old ones
        audit = AuditLog(target)
        try:
            await audit.record([entry(7)])
            assert (await audit.verify()).ok
        finally:
            await audit.aclose()
        await PoolStore(target).add(
            [PoolRecord(kind=PoolEventKind.CLAIM, account_no="A-2", actor="u-2", at=T0, owner_id="u-2")]
        )
        # a second restore into a database in use is refused, unless asked to replace it
        with pytest.raises(BackupError):
            await restore(target, file)
        again = await restore(target, file, replace=True)
        assert again.verify.ok
        async with target.read() as conn:
            assert (await conn.execute(sa.select(sa.func.count()).select_from(audit_log))).scalar_one() == 10
    finally:
        await source.aclose()
        await target.aclose()


async def test_a_tampered_backup_does_not_verify(backend: Backend, tmp_path: Path) -> None:
    import gzip

    source = backend.open()
    target = Database(f"sqlite+aiosqlite:///{tmp_path}/restored.db", keyring=data_keyring())
    try:
        await _fill(source)
        file = tmp_path / "gateway.cgbak"
        await backup(source, file)
        text = gzip.decompress(file.read_bytes()).decode()
        assert "b@x.cn" not in text  # the audit values are sealed in the backup too
        text = text.replace('"req-101"', '"req-forged"')  # a record's request id edited by hand
        file.write_bytes(gzip.compress(text.encode()))
        restored = await restore(target, file)
        assert not restored.verify.ok
    finally:
        await source.aclose()
        await target.aclose()


async def test_not_a_backup(tmp_path: Path) -> None:
    bogus = tmp_path / "x.cgbak"
    bogus.write_text("hello")
    target = Database(f"sqlite+aiosqlite:///{tmp_path}/t.db", keyring=data_keyring())
    try:
        with pytest.raises(BackupError):
            await restore(target, bogus)
    finally:
        await target.aclose()
