"""The hash chain: appends verify; any edit, removal or truncation is found at the record it hit."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal

from features.store import AuditEntry, AuditFilter, AuditLog, Database
from features.store.audit import canonical_json, chain_hash
from features.store.models import GENESIS_HASH

from .conftest import Backend, entry, raw, scalar


async def filled(db: Database, n: int = 10) -> AuditLog:
    log = AuditLog(db)
    for i in range(1, n + 1):
        await log.record([entry(i)])
    return log


async def test_append_and_verify(database: Database) -> None:
    log = AuditLog(database)
    result = await log.verify()
    assert result.ok and result.records_checked == 0 and result.head_id == 0

    await log.record([entry(1), entry(1, kind="denial", fields={"A-1": {"payments": "deny"}})])
    await log.record([entry(2)])
    result = await log.verify()
    assert result.ok, result
    assert (result.records_checked, result.head_id, result.first_bad_id) == (3, 3, None)

    records = (await log.query(AuditFilter(), first=10)).records
    assert [r.id for r in records] == [3, 2, 1]
    first = records[-1]
    assert first.prev_hash == GENESIS_HASH
    assert records[1].prev_hash == first.hash and records[0].prev_hash == records[1].hash
    assert result.head_hash == records[0].hash


async def test_hash_is_sha256_of_previous_hash_and_canonical_record(database: Database) -> None:
    log = AuditLog(database)
    at = datetime(2025, 3, 2, 8, 15, tzinfo=UTC)
    await log.record([entry(7, at=at, roles=("support_agent", "finance"))])
    (record,) = (await log.query(AuditFilter(), first=1)).records
    body = canonical_json(
        {
            "at": "2025-03-02T08:15:00.000000Z",
            "requestId": "req-7",
            "user": "u-1021",
            "roles": ["finance", "support_agent"],
            "operationName": "CustomerPage",
            "operationType": "query",
            "kind": "read",
            "customers": ["A-7"],
            "fields": {"A-7": {"email": "mask", "payments": "deny"}},
            "grantId": None,
            "before": None,
            "after": None,
            "detail": None,
            "format": 2,
        }
    )
    expected = hashlib.sha256(f"{GENESIS_HASH}\n1\n{body}".encode()).hexdigest()
    assert record.hash == chain_hash(GENESIS_HASH, 1, body) == expected


async def test_values_enter_the_hash_as_salted_commitments(database: Database) -> None:
    """A write's values are hashed as sha256(salt, path, value), each with a salt of its own."""
    log = AuditLog(database)
    at = datetime(2025, 3, 2, 8, 15, tzinfo=UTC)
    await log.record(
        [entry(1, at=at, kind="write", before={"phone": "+8613812345678"}, detail={"operation": "x"})]
    )
    found = await scalar(database, "SELECT salts FROM audit_log")
    salts = json.loads(found) if isinstance(found, str) else found
    assert isinstance(salts, dict)
    assert set(salts) == {"before.phone", "detail.operation"}
    assert salts["before.phone"] != salts["detail.operation"]

    def commit(path: str, value: object) -> str:
        return hashlib.sha256(f"{salts[path]}\n{path}\n{canonical_json(value)}".encode()).hexdigest()

    (record,) = (await log.query(AuditFilter(), first=1)).records
    body = canonical_json(
        {
            "at": "2025-03-02T08:15:00.000000Z",
            "requestId": "req-1",
            "user": "u-1021",
            "roles": ["sales_rep"],
            "operationName": "CustomerPage",
            "operationType": "query",
            "kind": "write",
            "customers": ["A-1"],
            "fields": {"A-1": {"email": "mask", "payments": "deny"}},
            "grantId": None,
            "before": {"phone": commit("before.phone", "+8613812345678")},
            "after": None,
            "detail": {"operation": commit("detail.operation", "x")},
            "format": 2,
        }
    )
    assert record.hash == chain_hash(GENESIS_HASH, 1, body)


async def test_write_values_round_trip_and_verify(database: Database) -> None:
    log = AuditLog(database)
    before = {"email": "wang.fang@chengchuan.cn", "phone": "+8613812345678", "version": 3}
    after = {
        "email": "fang.wang@chengchuan.cn",
        "address": "上海市浦东新区张江路 88 号",
        "amount": Decimal("1299.00"),
        "when": datetime(2025, 3, 2, 8, 15, tzinfo=UTC),
        "ratio": 0.1,
        "tags": {"b", "a"},
        "nul": "a\x00b",
    }
    await log.record(
        [
            entry(
                1,
                kind="write",
                operation_type="mutation",
                operation_name="ChangeContact",
                fields={"A-1": {"email": "allow"}},
                before=before,
                after=after,
                detail={"ok": True},
            )
        ]
    )
    (record,) = (await log.query(AuditFilter(kinds={"write"}), first=5)).records
    assert record.before == before
    assert record.after == {
        "email": "fang.wang@chengchuan.cn",
        "address": "上海市浦东新区张江路 88 号",
        "amount": "1299.00",
        "when": "2025-03-02T08:15:00.000000Z",
        "ratio": 0.1,
        "tags": ["a", "b"],
        "nul": "a\ufffdb",
    }
    assert (await log.verify()).ok


async def test_tampered_field_is_found_at_that_record(database: Database) -> None:
    log = await filled(database)
    await raw(database, "UPDATE audit_log SET user_sub = 'u-9999' WHERE id = 6")
    result = await log.verify()
    assert not result.ok
    assert result.first_bad_id == 6 and result.records_checked == 5
    assert result.reason == "its contents do not match its hash"


async def test_tampered_json_is_found(backend: Backend, database: Database) -> None:
    log = await filled(database)
    cast = "CAST(:f AS JSON)" if backend.name == "postgresql" else ":f"
    await raw(database, f"UPDATE audit_log SET fields = {cast} WHERE id = 4", f='{"A-4": {"email": "allow"}}')
    result = await log.verify()
    assert (result.ok, result.first_bad_id) == (False, 4)


async def test_rehashed_record_breaks_the_next_link(database: Database) -> None:
    """Editing a record and recomputing its own hash still breaks the chain at the next record."""
    log = await filled(database)
    await raw(database, "UPDATE audit_log SET hash = :h WHERE id = 3", h="f" * 64)
    result = await log.verify()
    assert (result.ok, result.first_bad_id) == (False, 3)


async def test_deleted_record_is_found(database: Database) -> None:
    log = await filled(database)
    await raw(database, "DELETE FROM audit_log WHERE id = 4")
    result = await log.verify()
    assert not result.ok
    assert result.first_bad_id == 5 and result.records_checked == 3
    assert result.reason == "record 4 is missing"


async def test_truncated_tail_is_found(database: Database) -> None:
    log = await filled(database)
    await raw(database, "DELETE FROM audit_log WHERE id >= 9")
    result = await log.verify()
    assert not result.ok and result.first_bad_id == 9
    assert result.reason == "the chain ends at 8 but its head says 10"


async def test_tampered_customer_index_is_found(database: Database) -> None:
    log = await filled(database)
    await raw(database, "DELETE FROM audit_customers WHERE audit_id = 2")
    result = await log.verify()
    assert (result.ok, result.first_bad_id) == (False, 2)
    assert result.reason == "the customer index does not match the record"


async def test_appends_continue_a_valid_chain_after_verify(database: Database) -> None:
    log = await filled(database, 3)
    await log.record([entry(4)])
    assert (await log.verify()).records_checked == 4


async def test_concurrent_records_keep_one_chain(database: Database) -> None:
    log = AuditLog(database)
    await asyncio.gather(*(log.record([entry(i), entry(i, kind="denial")]) for i in range(20)))
    result = await log.verify()
    assert result.ok and result.records_checked == 40
    assert log.commits < 20  # group commit took several requests per transaction
    # a request's entries are contiguous, in the order given
    ids: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for record in (await log.query(AuditFilter(), first=100)).records:
        ids[record.request_id].append((record.id, record.kind))
    for pairs in ids.values():
        pairs.sort()
        assert pairs[1][0] == pairs[0][0] + 1 and [k for _, k in pairs] == ["read", "denial"]


async def test_one_transaction_per_record_without_group_commit(database: Database) -> None:
    log = AuditLog(database, group_commit=False)
    await asyncio.gather(*(log.record([entry(i)]) for i in range(20)))
    assert log.commits == 20
    assert (await log.verify()).records_checked == 20


async def test_two_processes_on_one_database_keep_one_chain(backend: Backend, database: Database) -> None:
    """Two gateways (two engines, two AuditLogs) appending at once: the database lock serialises them."""
    other = backend.open()
    try:
        first, second = AuditLog(database), AuditLog(other)
        await asyncio.gather(
            *(first.record([entry(i)]) for i in range(15)),
            *(second.record([entry(100 + i)]) for i in range(15)),
            *(
                second.record(
                    [entry(200 + i)],
                )
                for i in range(5)
            ),
        )
        result = await first.verify()
        assert result.ok and result.records_checked == 35
    finally:
        await other.aclose()


async def test_bad_entry_fails_only_its_own_caller(database: Database) -> None:
    log = AuditLog(database)
    results = await asyncio.gather(
        log.record([entry(1)]),
        log.record([entry(2, kind="nonsense")]),
        log.record([entry(3, before={"x": object()})]),
        log.record([entry(4, fields={"A-4": {"email": "maybe"}})]),
        log.record([entry(5, at=datetime(2025, 1, 1))]),
        log.record([entry(6)]),
        return_exceptions=True,
    )
    assert results[0] is None and results[5] is None
    assert isinstance(results[1], ValueError)
    assert isinstance(results[2], TypeError)
    assert isinstance(results[3], ValueError)
    assert isinstance(results[4], ValueError)
    assert (await log.verify()).records_checked == 2


async def test_empty_record_is_a_no_op(database: Database) -> None:
    log = AuditLog(database)
    await log.record([])
    assert await scalar(database, "SELECT count(*) FROM audit_log") == 0


async def test_entry_customer_ids_merge_with_fields(database: Database) -> None:
    log = AuditLog(database)
    await log.record(
        [
            AuditEntry(
                kind="write",
                request_id="r",
                user_sub="u",
                customer_ids=["A-9", "A-1"],
                fields={"A-1": {"email": "allow"}, "A-2": {"phone": "allow"}},
                operation_type="mutation",
            )
        ]
    )
    (record,) = (await log.query(AuditFilter(), first=1)).records
    assert record.customer_ids == ("A-9", "A-1", "A-2")
    for customer in ("A-9", "A-1", "A-2"):
        assert len((await log.query(AuditFilter(customer_id=customer), first=5)).records) == 1


def test_canonical_json_is_stable() -> None:
    assert canonical_json({"b": 1.5, "a": [None, "é", True]}) == '{"a":[null,"é",true],"b":1.5}'


async def test_cancelled_caller_does_not_break_the_chain(database: Database) -> None:
    log = AuditLog(database)
    task = asyncio.create_task(log.record([entry(1)]))
    await asyncio.sleep(0)
    task.cancel()
    await log.record([entry(2)])
    await log.aclose()
    result = await log.verify()
    assert result.ok and result.records_checked in (1, 2)
