"""Redaction (erasure, retention): values leave the audit trail, the facts and the chain stay."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from features.store import AuditFilter, AuditLog, Database
from features.store.audit import ChainUpgradeError, _body, chain_hash, matches_any, upgrade_chain_format
from features.store.models import GENESIS_HASH, UTCDateTime, audit_chain_head, audit_customers, audit_log
from features.store.rotation import rotate_keys
from features.store.sealed import Keyring
from tests.factories import KEY_A, KEY_B

from .conftest import Backend, entry, raw, scalar

PHONE = "+8613812345678"
EMAIL = "wang.fang@chengchuan.cn"


def write(n: int, account_no: str, **overrides: object) -> object:
    values: dict[str, object] = {
        "kind": "write",
        "operation_type": "mutation",
        "operation_name": "ChangeContact",
        "customer_ids": [account_no],
        "fields": {},
        "before": {"email": EMAIL, "phone": PHONE},
        "after": {"email": f"new{n}@example.cn", "phone": None},
        "detail": {"operation": "updateCustomerContact"},
    }
    values.update(overrides)
    return entry(n, **values)


async def text_of_every_row(db: Database, *, opened: bool = False) -> str:
    """Everything the audit table holds, as text: as stored (what someone reading the database file sees),
    or ``opened`` (the sealed values opened with the keys: what is there at all)."""
    query = sa.select(audit_log) if opened else sa.text("SELECT * FROM audit_log")
    async with db.engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    return json.dumps([{k: str(v) for k, v in row.items()} for row in rows], ensure_ascii=False)


async def test_erasure_removes_the_customers_values_and_keeps_the_facts(database: Database) -> None:
    log = AuditLog(database)
    await log.record([write(1, "A-1"), write(2, "A-2"), entry(3, fields={"A-1": {"email": "allow"}})])
    done = await log.redact_customer("A-1", [], cause={"cause": "erasure", "erasureId": "e-1", "by": "u-po"})
    assert (done.records, done.values) == (1, 4)

    (record,) = (await log.query(AuditFilter(customer_id="A-1", kinds={"write"}))).records
    assert record.before == {} and record.after == {}
    assert record.detail == {"operation": "updateCustomerContact"}  # the fact stays
    assert record.user_sub == "u-1021" and record.customer_ids == ("A-1",)
    assert record.redacted == ("after.email", "after.phone", "before.email", "before.phone")
    other = (await log.query(AuditFilter(customer_id="A-2", kinds={"write"}))).records[0]
    assert other.before == {"email": EMAIL, "phone": PHONE} and other.redacted == ()

    maintenance = (await log.query(AuditFilter(kinds={"maintenance"}))).records[0]
    assert maintenance.user_sub == "u-po"
    assert maintenance.detail is not None and maintenance.detail["erasureId"] == "e-1"
    assert maintenance.detail["values"] == 4 and maintenance.customer_ids == ()
    assert (await log.verify()).ok
    # idempotent: nothing left to remove, no second maintenance record
    again = await log.redact_customer("A-1", [], cause={"cause": "erasure"})
    assert (again.records, again.values) == (0, 0)
    assert len((await log.query(AuditFilter(kinds={"maintenance"}))).records) == 1


async def test_a_redacted_value_is_nowhere_in_the_table(database: Database) -> None:
    log = AuditLog(database)
    await log.record([write(1, "A-1", before={"phone": "+86 139 0000 7777"})])
    assert "+86 139 0000 7777" not in await text_of_every_row(database)  # sealed at rest
    assert "+86 139 0000 7777" in await text_of_every_row(database, opened=True)
    await log.redact_customer("A-1", [], cause={"cause": "erasure"})
    assert "+86 139 0000 7777" not in await text_of_every_row(database, opened=True)  # gone, not only sealed
    assert (await log.verify()).ok


async def test_search_terms_that_give_away_an_erased_value_are_removed(database: Database) -> None:
    log = AuditLog(database)
    terms = {"Wang", "wang fang", "138 1234", "Li"}
    await log.record(
        [
            entry(i, kind="search", fields={}, detail={"search": term, "fields": ["contactName"]})
            for i, term in enumerate(sorted(terms), 1)
        ]
    )
    done = await log.redact_customer("A-1", ["王芳", "Wang Fang", PHONE], cause={"cause": "erasure"})
    assert done.values == 3
    kept = {
        r.detail["search"] if r.detail and "search" in r.detail else None
        for r in (await log.query(AuditFilter(kinds={"search"}))).records
    }
    assert kept == {None, "Li"}  # "Li" gives nothing away; the others do
    assert (await log.verify()).ok


def test_what_a_search_term_gives_away() -> None:
    assert matches_any("WANG", ["Wang Fang"])
    assert matches_any("+86-138-1234-5678", [PHONE])
    assert matches_any("wang.fang@chengchuan.cn", [EMAIL.upper()])
    assert not matches_any("a", ["Wang Fang"])  # too short to say anything
    assert not matches_any("Zhou", ["Wang Fang", PHONE])
    assert matches_any("138", [PHONE])  # a piece of the number: removed too (the safe side)


async def test_retention_removes_values_older_than_the_cutoff(database: Database) -> None:
    log = AuditLog(database)
    now = datetime.now(UTC)
    old, recent = now - timedelta(days=400), now - timedelta(days=10)
    await log.record(
        [
            write(1, "A-1", at=old),
            entry(2, kind="search", fields={}, detail={"search": "Wang", "fields": []}, at=old),
            write(3, "A-1", at=recent),
        ]
    )
    done = await log.redact_older_than(now - timedelta(days=365), cause={"cause": "retention", "days": 365})
    assert (done.records, done.values) == (2, 5)
    records = {r.request_id: r for r in (await log.query(AuditFilter(), first=10)).records}
    assert records["req-1"].before == {} and records["req-2"].detail == {"fields": []}
    assert records["req-3"].before == {"email": EMAIL, "phone": PHONE}
    assert (await log.verify()).ok


async def test_editing_a_value_is_still_found(database: Database) -> None:
    log = AuditLog(database)
    await log.record([write(1, "A-1"), write(2, "A-2")])
    await log.redact_customer("A-1", [], cause={"cause": "erasure"})
    await raw(database, "UPDATE audit_log SET detail = :d WHERE id = 2", d='{"operation": "forged"}')
    result = await log.verify()
    assert not result.ok and result.first_bad_id == 2


async def test_editing_a_commitment_is_found(database: Database) -> None:
    log = AuditLog(database)
    await log.record([write(1, "A-1"), write(2, "A-2")])
    await log.redact_customer("A-1", [], cause={"cause": "erasure"})
    found = await scalar(database, "SELECT redactions FROM audit_log WHERE id = 1")
    redactions = json.loads(found) if isinstance(found, str) else found
    assert isinstance(redactions, dict)
    redactions["before.email"] = "0" * 64
    await raw(database, "UPDATE audit_log SET redactions = :r WHERE id = 1", r=json.dumps(redactions))
    result = await log.verify()
    assert not result.ok and result.first_bad_id == 1


async def test_a_value_removed_behind_the_stores_back_is_found(database: Database) -> None:
    log = AuditLog(database)
    await log.record([write(1, "A-1"), write(2, "A-2")])
    await raw(database, "UPDATE audit_log SET before = :b WHERE id = 2", b=json.dumps({"phone": PHONE}))
    result = await log.verify()
    assert not result.ok and result.first_bad_id == 2


def _as_before_0010() -> sa.TableClause:
    """``audit_log`` as the releases before migration 0010 had it: values as plain JSON."""
    json_columns = ("roles", "customers", "fields", "before", "after", "detail")
    names = ("id", "at", "request_id", "user_sub", "roles", "operation_name", "operation_type", "kind",
             "customers", "fields", "grant_id", "before", "after", "detail", "prev_hash", "hash")  # fmt: skip
    return sa.table(
        "audit_log",
        *[
            sa.column(
                c,
                sa.JSON()
                if c in json_columns
                else UTCDateTime()
                if c == "at"
                else sa.BigInteger()
                if c == "id"
                else sa.Text(),
            )
            for c in names
        ],
    )


async def _first_format_chain(db: Database, n: int, table: sa.TableClause | sa.Table = audit_log) -> str:
    """Write ``n`` records as the first release did: values hashed in, no salts."""
    prev = GENESIS_HASH
    rows, index = [], []
    at = datetime(2026, 11, 1, tzinfo=UTC)
    for i in range(1, n + 1):
        before = {"email": EMAIL} if i % 2 else None
        facts = (at, f"req-{i}", "u-1", ["sales_rep"], "Op", "mutation", "write", [f"A-{i}"], {}, None)
        digest = chain_hash(prev, i, _body(*facts, before, None, {"operation": "x"}, version=1))
        rows.append(
            {
                "id": i,
                "at": at,
                "request_id": f"req-{i}",
                "user_sub": "u-1",
                "roles": ["sales_rep"],
                "operation_name": "Op",
                "operation_type": "mutation",
                "kind": "write",
                "customers": [f"A-{i}"],
                "fields": {},
                "grant_id": None,
                "before": before,
                "after": None,
                "detail": {"operation": "x"},
                "prev_hash": prev,
                "hash": digest,
            }
        )
        index.append({"account_no": f"A-{i}", "audit_id": i})
        prev = digest
    async with db.engine.begin() as conn:
        await conn.execute(table.insert(), rows)
        await conn.execute(audit_customers.insert(), index)
        await conn.execute(audit_chain_head.update().values(last_id=n, last_hash=prev))
    return prev


async def test_a_first_format_chain_is_upgraded_and_then_redactable(database: Database) -> None:
    old_head = await _first_format_chain(database, 5)
    async with database.engine.begin() as conn:
        assert await conn.run_sync(upgrade_chain_format) == 5
    log = AuditLog(database)
    assert (await log.verify()).ok
    (upgrade,) = (await log.query(AuditFilter(kinds={"maintenance"}))).records
    assert upgrade.id == 6 and upgrade.detail is not None
    assert upgrade.detail["previousHeadHash"] == old_head and upgrade.detail["previousHeadId"] == 5
    first = await log.get(1)
    assert first is not None and first.before == {"email": EMAIL}  # values kept as they were
    await log.redact_customer("A-1", [], cause={"cause": "erasure"})
    assert (await log.verify()).ok


async def test_a_broken_first_format_chain_is_not_upgraded(database: Database) -> None:
    await _first_format_chain(database, 3)
    await raw(database, "UPDATE audit_log SET user_sub = 'u-forged' WHERE id = 2")
    with pytest.raises(ChainUpgradeError, match="record 2"):
        async with database.engine.begin() as conn:
            await conn.run_sync(upgrade_chain_format)
    assert await scalar(database, "SELECT count(*) FROM audit_log WHERE salts IS NOT NULL") == 0


async def test_migration_0010_moves_a_first_format_database(empty_backend: Backend) -> None:
    """A database written by the previous release (revision 0009) is migrated: its values are sealed, its
    chain verifies in format 2 and its values can be removed."""
    db = empty_backend.open()
    try:
        await db.migrate("0009_sealed")
        old_head = await _first_format_chain(db, 4, _as_before_0010())
        assert EMAIL in await text_of_every_row(db)
        await db.migrate()
        log = AuditLog(db)
        result = await log.verify()
        assert result.ok and result.records_checked == 5
        (upgrade,) = (await log.query(AuditFilter(kinds={"maintenance"}))).records
        assert upgrade.detail is not None and upgrade.detail["previousHeadHash"] == old_head
        first = await log.get(1)
        assert first is not None and first.before == {"email": EMAIL}  # opened through the sealed column
        async with db.engine.connect() as conn:  # as stored: ciphertext
            stored = (await conn.execute(sa.text("SELECT before FROM audit_log WHERE id = 1"))).scalar()
        assert EMAIL not in str(stored)
        await log.redact_customer("A-3", [], cause={"cause": "erasure"})
        assert (await log.verify()).ok
    finally:
        await db.aclose()


async def test_rotating_the_data_keys_leaves_the_chain_verifying(backend: Backend) -> None:
    """The audit values are sealed, but the chain commits to their plaintext: ``rotate-keys`` re-seals
    every value (new ciphertext) and ``audit verify`` still passes with the new key alone."""
    db = backend.open(keyring=Keyring([KEY_A]))
    try:
        await AuditLog(db).record([write(1, "A-1"), write(2, "A-2")])
    finally:
        await db.aclose()
    both = backend.open(keyring=Keyring([KEY_B, KEY_A]))
    try:
        await both.migrate()
        rotated = await rotate_keys(both)
        assert rotated.resealed["audit_log.before"] == 2 and rotated.resealed["audit_log.detail"] == 2
    finally:
        await both.aclose()
    only_b = backend.open(keyring=Keyring([KEY_B]))
    try:
        await only_b.migrate()
        log = AuditLog(only_b)
        assert (await log.verify()).ok
        first = await log.get(1)
        assert first is not None and first.before == {"email": EMAIL, "phone": PHONE}
    finally:
        await only_b.aclose()
