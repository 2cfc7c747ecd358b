"""``db backup`` / ``db restore``: the gateway database as one portable file, and back.

A backup is gzip'd JSON lines: a header (format, the schema revision, when, row counts) and then one line per
row, ``{"t": table, "r": {column: value}}``, every table of ``models.metadata`` in dependency order; times are
ISO 8601 with their offset. It is a logical copy, so a SQLite backup restores into PostgreSQL and back.

``restore`` brings the target to the same revision (migrations), refuses a target whose audit trail has
records (``replace=True`` empties it first), writes every row in one transaction, moves PostgreSQL's
sequences past the restored ids, and answers the audit chain's verification of the result.

Sealed personal data (``sealed.py``) is written as it is stored: ciphertext, never plaintext, and blind
indexes as their digests; a backup needs no data key. A restore writes them back as they were and needs the
data keys that sealed them (or later ones that still list them): it checks that the configured keys open the
backup's blind-index key before it commits, so a wrong key restores nothing. A backup from before migration
0009 (plaintext) restores at its revision; the next start seals it.
"""

from __future__ import annotations

import gzip
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .audit import AuditLog, VerifyResult
from .db import Database
from .models import UTCDateTime, audit_log, metadata, sealed_keys
from .sealed import INDEX_KEY_NAME, SealedValueError, raw_table, sealer_of

FORMAT = "customer-graph-backup/1"
_CHUNK = 1000


class BackupError(Exception):
    """The file is not a backup this gateway can restore, or the target is not empty."""


@dataclass(frozen=True, slots=True)
class Restored:
    rows: Mapping[str, int]
    verify: VerifyResult


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return value


async def backup(database: Database, path: Path) -> dict[str, int]:
    """Write every table to ``path``; the row count per table."""
    revision = await database.current_revision()
    counts: dict[str, int] = {}
    partial = path.with_name(path.name + ".partial")
    with gzip.open(partial, "wb") as out:
        async with database.read() as conn:
            for table in metadata.sorted_tables:
                counts[str(table.name)] = int(
                    (await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one()
                )
            header = {
                "format": FORMAT,
                "revision": revision,
                "at": datetime.now(UTC).isoformat(),
                "rows": counts,
            }
            out.write(orjson.dumps(header) + b"\n")
            for table in metadata.sorted_tables:
                stored = raw_table(table)  # sealed columns as their ciphertext
                keys = [c for c in stored.primary_key.columns]
                result = await conn.stream(
                    sa.select(stored).order_by(*keys).execution_options(yield_per=_CHUNK)
                )
                async for row in result.mappings():
                    line = {"t": str(table.name), "r": {str(k): _encode(v) for k, v in row.items()}}
                    out.write(orjson.dumps(line, option=orjson.OPT_NON_STR_KEYS) + b"\n")
    partial.replace(path)
    return counts


def _decoders(table: sa.Table) -> dict[str, Any]:
    return {
        c.name: datetime.fromisoformat
        for c in table.columns
        if isinstance(c.type, (UTCDateTime, sa.DateTime))
    }


async def restore(database: Database, path: Path, *, replace: bool = False) -> Restored:
    """Restore ``path`` into ``database`` (see the module's docstring); ``BackupError`` when it cannot."""
    try:
        with gzip.open(path, "rb") as handle:
            header = orjson.loads(handle.readline())
    except (OSError, orjson.JSONDecodeError, EOFError) as exc:
        raise BackupError(f"not a readable backup ({type(exc).__name__})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise BackupError("not a customer-graph backup (format)")
    revision = header.get("revision")
    # (the keys are checked against the backup's own blind-index key, below, not the target's)
    await database.migrate(str(revision) if revision else "head", open_keys=False)
    if await database.current_revision() != revision:
        raise BackupError(f"the database is at a later revision than the backup ({revision})")
    async with database.engine.connect() as conn:  # the tables (and columns) at the backup's revision
        present = await conn.run_sync(_present)
    # as stored: ciphertext in, no defaults (a blind index is restored, not computed)
    sealed = sealed_keys.name in present  # else a backup from before migration 0009: plain values
    tables = {
        t.name: raw_table(t, present[t.name], sealed=sealed)
        for t in metadata.sorted_tables
        if t.name in present
    }
    counts: dict[str, int] = dict.fromkeys(tables, 0)
    async with database.write_transaction(open_keys=False) as conn:
        used = (await conn.execute(sa.select(sa.func.count()).select_from(audit_log))).scalar_one()
        if used and not replace:
            raise BackupError("the target database has audit records: restore into an empty one (or replace)")
        for table in reversed(list(tables.values())):  # what migrations seeded, or what is replaced
            await conn.execute(table.delete())
        pending: dict[str, list[dict[str, Any]]] = {}
        decoders = {name: _decoders(t) for name, t in tables.items()}
        order = list(tables)
        with gzip.open(path, "rb") as handle:
            handle.readline()
            for raw in handle:
                item = orjson.loads(raw)
                name = item["t"]
                if name not in tables:
                    raise BackupError(f"unknown table {name!r} in the backup")
                row = {
                    k: (decoders[name][k](v) if k in decoders[name] and isinstance(v, str) else v)
                    for k, v in item["r"].items()
                }
                batch = pending.setdefault(name, [])
                batch.append(row)
                # rows come table by table in dependency order: a table's rows go once the next begins
                for earlier in order[: order.index(name)]:
                    await _flush(conn, tables[earlier], pending, counts)
                if len(batch) >= _CHUNK:
                    await _flush(conn, tables[name], pending, counts)
        for name in order:
            await _flush(conn, tables[name], pending, counts)
        if database.is_postgresql:
            await _move_sequences(conn, tables)
        if sealed_keys.name in tables:
            await conn.run_sync(_check_keys)
    await database.reload_keys()
    expected = header.get("rows") or {}
    for name, count in counts.items():
        if int(expected.get(name, count)) != count:
            raise BackupError(f"table {name}: {count} rows restored, the backup says {expected.get(name)}")
    verify = await AuditLog(database).verify(checkpoints=None)
    return Restored(counts, verify)


async def _flush(
    conn: AsyncConnection, table: sa.Table, pending: dict[str, list[dict[str, Any]]], counts: dict[str, int]
) -> None:
    rows = pending.pop(table.name, None)
    if rows:
        await conn.execute(table.insert(), rows)
        counts[table.name] += len(rows)


def _present(conn: sa.Connection) -> dict[str, set[str]]:
    inspector = sa.inspect(conn)
    names = set(inspector.get_table_names())
    return {
        t.name: {c["name"] for c in inspector.get_columns(t.name)}
        for t in metadata.sorted_tables
        if t.name in names
    }


def _check_keys(conn: sa.Connection) -> None:
    """Do the configured data keys open what was restored? (Before the commit: else nothing is restored.)"""
    raw = raw_table(sealed_keys)
    value = conn.execute(sa.select(raw.c.value).where(raw.c.name == INDEX_KEY_NAME)).scalar_one_or_none()
    if value is None:
        return
    try:
        sealer_of(conn.dialect).open("sealed_keys.value", value)
    except SealedValueError:
        raise BackupError(
            "the backup's personal data is sealed with data keys that are not configured here "
            "(CG_DATA_KEYS must list the key it was sealed with): nothing restored"
        ) from None


async def _move_sequences(conn: AsyncConnection, tables: Mapping[str, sa.Table]) -> None:
    """PostgreSQL: each identity / serial column's sequence past the highest restored id."""
    for table in metadata.sorted_tables:
        if table.name not in tables:
            continue
        column = table.autoincrement_column
        if column is not None:
            await conn.execute(
                sa.text(
                    f"SELECT setval(pg_get_serial_sequence('{table.name}', '{column.name}'), "
                    f"COALESCE((SELECT max({column.name}) FROM {table.name}), 0) + 1, false)"
                )
            )
