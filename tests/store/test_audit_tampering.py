"""Tampering the outside review tried, and what the gateway does about it:

- a forged row past the chain head: ``verify`` said intact, ``auditLog`` served it, and every later
  audited request failed with INTERNAL (a UNIQUE clash on the next id). Now verify reports it, and the
  writer moves such rows to ``audit_quarantine`` (evidence kept, reported) and goes on;
- records cut off the end with the head moved back: undetectable from inside the database. Now
  signed checkpoints in a file outside it make it evident.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from features.store import AuditLog, Database
from features.store.checkpoints import Checkpoints
from tests.factories import KEY_A

from .conftest import Backend, entry, raw, scalar


def _forge(wrap: str) -> str:
    empty_list, empty_object = wrap.format("'[]'"), wrap.format("'{}'")
    return (
        "INSERT INTO audit_log (id, at, request_id, user_sub, roles, operation_name, operation_type, kind, "
        "customers, fields, grant_id, before, after, detail, prev_hash, hash) VALUES (:id, :at, 'req-forged', "
        f"'u-evil', {empty_list}, NULL, 'query', 'read', {empty_list}, {empty_object}, "
        "NULL, NULL, NULL, NULL, :prev, :hash)"
    )


async def _forge_past_head(database: Database, log: AuditLog) -> None:
    head = await scalar(database, "SELECT last_id FROM audit_chain_head")
    last = await scalar(database, "SELECT last_hash FROM audit_chain_head")
    postgres = database.dialect == "postgresql"
    at = datetime(2026, 1, 1, tzinfo=UTC) if postgres else "2026-01-01 00:00:00.000000"
    sql = _forge("CAST({} AS JSON)" if postgres else "{}")
    await raw(database, sql, id=int(head) + 1, at=at, prev=last, hash="e" * 64)  # type: ignore[arg-type]


async def test_a_forged_row_past_the_head_is_reported_and_the_writer_goes_on(database: Database) -> None:
    log = AuditLog(database)
    for i in range(1, 6):
        await log.record([entry(i)])
    await _forge_past_head(database, log)
    result = await log.verify()
    assert not result.ok and result.first_bad_id == 6
    assert result.reason == "1 record(s) past the chain head are not part of the chain"

    await log.record([entry(6)])  # the next audited request still works (was a UNIQUE clash)
    assert log.quarantined == 1
    assert await scalar(database, "SELECT user_sub FROM audit_log WHERE id = 6") == "u-1021"
    assert await scalar(database, "SELECT count(*) FROM audit_quarantine") == 1
    after = await log.verify()
    assert not after.ok and "audit_quarantine" in (after.reason or "")  # the evidence keeps verify failing


async def test_truncation_with_the_head_moved_back_is_found_by_a_checkpoint(
    database: Database, tmp_path: Path
) -> None:
    points = Checkpoints(tmp_path / "checkpoints.jsonl", key="a-checkpoint-key", every=5)
    log = AuditLog(database, checkpoints=points)
    for i in range(1, 13):
        await log.record([entry(i)])
    assert (await log.verify()).ok
    # cut 8..12 off and move the head back to 7: a consistent chain again, from inside the database
    hash7 = await scalar(database, "SELECT hash FROM audit_log WHERE id = 7")
    await raw(database, "DELETE FROM audit_customers WHERE audit_id > 7")
    await raw(database, "DELETE FROM audit_log WHERE id > 7")
    await raw(database, "UPDATE audit_chain_head SET last_id = 7, last_hash = :h", h=hash7)
    assert (await AuditLog(database).verify()).ok  # without the anchor: undetectable
    result = await log.verify()
    assert not result.ok
    assert "cut off the end" in (result.reason or "")


async def test_a_forged_checkpoint_line_is_refused(database: Database, tmp_path: Path) -> None:
    path = tmp_path / "checkpoints.jsonl"
    log = AuditLog(database, checkpoints=Checkpoints(path, key="k1", every=1))
    for i in range(1, 4):
        await log.record([entry(i)])
    lines = path.read_text().splitlines()
    forged = json.loads(lines[-1]) | {"id": 99}
    path.write_text("\n".join([*lines, json.dumps(forged)]) + "\n")
    result = await log.verify()
    assert not result.ok and "not signed with the configured key" in (result.reason or "")


async def test_audit_verify_cli_exit_codes(backend: Backend, database: Database) -> None:
    if backend.name != "sqlite":
        pytest.skip("the CLI run is shown on the SQLite file")
    log = AuditLog(database)
    for i in range(1, 4):
        await log.record([entry(i)])
    command = [sys.executable, "-c", "from gateway.cli import main; raise SystemExit(main())"]
    keys = {**os.environ, "CG_DATA_KEYS": KEY_A}  # the audit values are sealed: verify opens them
    intact = subprocess.run(
        [*command, "audit", "verify", "--database-url", backend.url], capture_output=True, text=True, env=keys
    )
    assert intact.returncode == 0, intact.stdout + intact.stderr
    await _forge_past_head(database, log)
    broken = subprocess.run(
        [*command, "audit", "verify", "--database-url", backend.url], capture_output=True, text=True, env=keys
    )
    assert broken.returncode == 1 and "past the chain head" in broken.stdout
