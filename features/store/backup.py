"""``db backup`` / ``db restore``: the gateway database as one portable file, and back.

A backup is gzip'd JSON lines: a header (format, the schema revision, when, row counts) and then one line per
row, ``{"t": table, "r": {column: value}}``, every table of ``models.metadata`` in dependency order; times are
ISO 8601 with their offset. It is a logical copy, so a SQLite backup restores into PostgreSQL and back.

``restore`` brings the target to the same revision (migrations), refuses a target whose audit trail has
records (``replace=True`` empties it first), writes every row in one transaction, moves PostgreSQL's
sequences past the restored ids, and answers the audit chain's verification of the result.
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
from .models import UTCDateTime, audit_log, metadata

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
                keys = [c for c in table.primary_key.columns]
                result = await conn.stream(
                    sa.select(table).order_by(*keys).execution_options(yield_per=_CHUNK)
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
    await database.migrate(str(revision) if revision else "head")
    if await database.current_revision() != revision:
        raise BackupError(f"the database is at a later revision than the backup ({revision})")
    tables = {t.name: t for t in metadata.sorted_tables}
    counts: dict[str, int] = dict.fromkeys(tables, 0)
    async with database.write_transaction() as conn:
        used = (await conn.execute(sa.select(sa.func.count()).select_from(audit_log))).scalar_one()
        if used and not replace:
            raise BackupError("the target database has audit records: restore into an empty one (or replace)")
        for table in reversed(metadata.sorted_tables):  # what migrations seeded, or what is replaced
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
            await _move_sequences(conn)
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


async def _move_sequences(conn: AsyncConnection) -> None:
    """PostgreSQL: each identity / serial column's sequence past the highest restored id."""
    for table in metadata.sorted_tables:
        column = table.autoincrement_column
        if column is not None:
            await conn.execute(
                sa.text(
                    f"SELECT setval(pg_get_serial_sequence('{table.name}', '{column.name}'), "
                    f"COALESCE((SELECT max({column.name}) FROM {table.name}), 0) + 1, false)"
                )
            )
