"""Reading the audit trail: filters, paging (newest first, opaque cursors), export, the CLI."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from features.store import AuditEntry, AuditFilter, AuditLog, Database, InvalidCursor
from features.store.audit import EXPORT_COLUMNS
from gateway.store_cli import audit_export_main, audit_verify_main, db_upgrade_main
from tests.factories import KEY_A

from .conftest import Backend, entry, raw

T = datetime(2025, 3, 1, tzinfo=UTC)


async def seeded(db: Database) -> AuditLog:
    log = AuditLog(db)
    entries = []
    for i in range(30):
        entries.append(
            entry(
                i,
                at=T + timedelta(hours=i),
                user_sub="u-1" if i % 2 == 0 else "u-2",
                kind="read" if i % 3 else "denial",
                operation_name="CustomerPage" if i < 20 else "Customer",
                fields={f"A-{i % 5}": {"email": "mask"}},
            )
        )
    entries.append(
        AuditEntry(
            kind="grant_use",
            request_id="req-g",
            user_sub="u-3",
            roles=("finance",),
            operation_name="Customer",
            fields={"A-1": {"taxId": "allow"}},
            grant_id="g-1",
            at=T + timedelta(days=5),
        )
    )
    for chunk in range(0, len(entries), 7):
        await log.record(entries[chunk : chunk + 7])
    return log


async def test_query_filters(database: Database) -> None:
    log = await seeded(database)

    async def ids(f: AuditFilter) -> list[int]:
        return [r.id for r in (await log.query(f, first=100)).records]

    assert await ids(AuditFilter()) == list(range(31, 0, -1))
    assert await ids(AuditFilter(user_sub="u-1")) == list(range(29, 0, -2))
    assert await ids(AuditFilter(customer_id="A-3")) == [29, 24, 19, 14, 9, 4]
    assert await ids(AuditFilter(kinds={"denial"})) == list(range(28, 0, -3))
    assert await ids(AuditFilter(kinds={"grant_use", "denial"}, user_sub="u-3")) == [31]
    assert await ids(AuditFilter(grant_id="g-1")) == [31]
    assert await ids(AuditFilter(operation_name="Customer")) == [31, *range(30, 20, -1)]
    assert await ids(AuditFilter(request_id="req-5")) == [6]
    assert await ids(AuditFilter(since=T + timedelta(hours=10), until=T + timedelta(hours=12))) == [12, 11]
    assert await ids(AuditFilter(customer_id="A-1", user_sub="u-2", kinds={"read"})) == [12, 2]
    assert await ids(AuditFilter(customer_id="nobody")) == []


async def test_paging(database: Database) -> None:
    log = await seeded(database)
    seen: list[int] = []
    after = None
    pages = 0
    while True:
        page = await log.query(AuditFilter(customer_id="A-0"), first=2, after=after)
        pages += 1
        seen += [r.id for r in page.records]
        if not page.has_next_page:
            break
        assert page.end_cursor == page.records[-1].cursor
        after = page.end_cursor
    assert seen == [26, 21, 16, 11, 6, 1] and pages == 3
    last = await log.query(
        AuditFilter(), first=5, after=(await log.query(AuditFilter(), first=31)).end_cursor
    )
    assert last.records == [] and not last.has_next_page and last.end_cursor is None


async def test_bad_arguments(database: Database) -> None:
    log = AuditLog(database)
    for cursor in ("nonsense", "YWNjZXNzOjE6Mg", "YXVkaXQ6eA"):  # garbage, another kind's, audit:x
        with pytest.raises(InvalidCursor):
            await log.query(AuditFilter(), first=5, after=cursor)
    with pytest.raises(ValueError):
        await log.query(AuditFilter(), first=0)
    with pytest.raises(ValueError):
        await log.query(AuditFilter(), first=501)
    with pytest.raises(ValueError):
        await log.query(AuditFilter(since=datetime(2025, 1, 1)), first=5)


async def test_export_jsonl(database: Database) -> None:
    log = await seeded(database)
    out = io.StringIO()
    count = await log.export(T + timedelta(hours=25), "jsonl", out)
    lines = out.getvalue().splitlines()
    assert count == len(lines) == 6
    records = [json.loads(line) for line in lines]
    assert [r["id"] for r in records] == [26, 27, 28, 29, 30, 31]  # oldest first
    assert records[-1]["grantId"] == "g-1" and records[-1]["fields"] == {"A-1": {"taxId": "allow"}}
    assert records[0]["at"] == "2025-03-02T01:00:00.000000Z"
    assert set(records[0]) == set(EXPORT_COLUMNS)
    assert records[1]["prevHash"] == records[0]["hash"]


async def test_export_csv(database: Database) -> None:
    log = await seeded(database)
    out = io.StringIO()
    assert await log.export(None, "csv", out, until=T + timedelta(hours=3)) == 3
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [int(r["id"]) for r in rows] == [1, 2, 3]
    assert tuple(rows[0]) == EXPORT_COLUMNS
    assert json.loads(rows[0]["fields"]) == {"A-0": {"email": "mask"}}
    assert json.loads(rows[0]["roles"]) == ["sales_rep"]
    assert rows[0]["grantId"] == "" and rows[0]["user"] == "u-1"


async def cli(main: Callable[[list[str]], int], *args: str) -> int:
    """Run a CLI entry point (it calls asyncio.run()) off this test's event loop."""
    return await asyncio.get_running_loop().run_in_executor(None, main, list(args))


async def test_cli_export_and_verify(
    backend: Backend,
    database: Database,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CG_DATA_KEYS", KEY_A)  # the audit values are sealed: the CLI opens them with the keys
    await seeded(database)
    await database.aclose()  # the CLI runs its own event loop: let it own the connections
    url = backend.url + (f"?schema={backend.schema}" if backend.schema else "")
    target = tmp_path / "audit.jsonl"

    assert (
        await cli(
            audit_export_main,
            "--since",
            "2025-03-02T04:00:00Z",
            "--output",
            str(target),
            "--database-url",
            url,
        )
        == 0
    )
    assert [json.loads(line)["id"] for line in target.read_text().splitlines()] == [29, 30, 31]
    csv_target = tmp_path / "audit.csv"
    assert await cli(audit_export_main, "--format", "csv", "-o", str(csv_target), "--database-url", url) == 0
    assert len(list(csv.DictReader(csv_target.open(newline="")))) == 31

    assert await cli(audit_verify_main, "--database-url", url) == 0
    assert "31 record(s) checked" in capsys.readouterr().out
    await raw(database, "UPDATE audit_log SET kind = 'write' WHERE id = 3")
    assert await cli(audit_verify_main, "--database-url", url) == 1
    assert "BROKEN at record 3" in capsys.readouterr().out


async def test_cli_without_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = f"sqlite:///{tmp_path}/nothing/here.db"
    assert await cli(audit_verify_main, "--database-url", missing) == 2
    assert await cli(audit_export_main, "--database-url", missing) == 2
    unreachable = "postgresql://postgres@127.0.0.1:1/test"
    assert await cli(audit_verify_main, "--database-url", unreachable) == 2
    assert "unavailable" in capsys.readouterr().err
    fresh = f"sqlite:///{tmp_path}/fresh/gateway.db"
    assert await cli(db_upgrade_main, "--database-url", fresh) == 0
    assert await cli(audit_verify_main, "--database-url", fresh) == 0
    assert not (tmp_path / "nothing").exists()
