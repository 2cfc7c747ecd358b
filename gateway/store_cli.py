"""Command-line entry points for the gateway's database, wired into ``customer-graph`` by ``gateway.cli``:

    customer-graph audit export [--since ISO] [--until ISO] [--format jsonl|csv] [--output FILE]
    customer-graph audit verify
    customer-graph db upgrade
    customer-graph db backup FILE | db restore FILE | db purge
    customer-graph db keygen                  (a new data key: CG_DATA_KEYS)
    customer-graph db rotate-keys             (every sealed value re-sealed with the newest data key)
    customer-graph policy table --grants      (the report below the table: grants_report)

The database is ``--database-url``, else ``$CG_DATABASE_URL``, else the SQLite file ``var/gateway.db``.
Exit codes: 0 done / chain intact, 1 chain broken (verify), 2 usage or database problem.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, cast

from features.retention import Purged, Retention, purge
from features.store.access import grants_in_force
from features.store.audit import AuditLog, AuditUnavailable
from features.store.backup import BackupError, Restored, backup, restore
from features.store.checkpoints import checkpoints_for
from features.store.db import (
    Database,
    DatabaseConfigError,
    StoreUnavailable,
    database_url_from_env,
    normalise_url,
)
from features.store.rotation import Rotated, rotate_keys
from features.store.sealed import SealedValueError, generate_key

from .datakeys import open_database
from .settings import SettingsError, load_settings, retention_key


def _time(text: str) -> datetime:
    """ISO 8601 date or date-time; without an offset it is UTC."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date or time: {text!r}") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _database_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        default=None,
        help="the gateway database (default: $CG_DATABASE_URL, else sqlite var/gateway.db)",
    )


def _open(url_arg: str | None, prog: str, *, keys: bool = True) -> Database | None:
    """The existing database (None: it is not there, said on stderr). ``keys``: with the configured data
    keys (``SettingsError`` in production without them); a backup needs none (it copies ciphertext)."""
    url = url_arg or database_url_from_env()
    try:
        parsed = normalise_url(url)
    except DatabaseConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return None
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database or ""
        if path not in ("", ":memory:") and not Path(path).exists():
            print(f"{prog}: no gateway database at {path}", file=sys.stderr)
            return None
    if not keys:
        return Database(url)
    settings = load_settings()
    return open_database(settings, url or settings.database_url or None)


def audit_export_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="customer-graph audit export", description="Write audit records, oldest first."
    )
    parser.add_argument("--since", type=_time, default=None, help="from this time (ISO 8601, inclusive)")
    parser.add_argument("--until", type=_time, default=None, help="before this time (ISO 8601)")
    parser.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    parser.add_argument("--output", "-o", default="-", help="file to write (default: standard output)")
    _database_arg(parser)
    args = parser.parse_args(argv)
    database = _open(args.database_url, parser.prog)  # the audit values are sealed: the keys open them
    if database is None:
        return 2
    fmt = cast(Literal["jsonl", "csv"], args.format)

    async def run() -> int:
        log = AuditLog(database)
        try:
            if args.output == "-":
                return await log.export(args.since, fmt, sys.stdout, until=args.until)
            target = Path(args.output)
            partial = target.with_name(target.name + ".partial")
            try:
                with open(partial, "w", encoding="utf-8", newline="") as out:
                    count = await log.export(args.since, fmt, out, until=args.until)
                os.replace(partial, target)
            finally:
                partial.unlink(missing_ok=True)
            return count
        finally:
            await database.aclose()

    try:
        count = asyncio.run(run())
    except (AuditUnavailable, StoreUnavailable) as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{parser.prog}: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
        return 2
    print(f"{count} audit record(s) exported", file=sys.stderr)
    return 0


def audit_verify_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="customer-graph audit verify",
        description="Recompute the audit hash chain: exit 0 when intact, 1 when it was tampered with.",
    )
    _database_arg(parser)
    args = parser.parse_args(argv)
    database = _open(args.database_url, parser.prog)  # the audit values are sealed: the keys open them
    if database is None:
        return 2

    async def run() -> int:
        try:
            settings = load_settings()
            checkpoints = checkpoints_for(
                database.file_path,
                settings.audit_checkpoint_file,
                settings.audit_checkpoint_key,
                settings.audit_checkpoint_every,
            )
            result = await AuditLog(database).verify(checkpoints=checkpoints)
            if not checkpoints.key:
                print("note: CG_AUDIT_CHECKPOINT_KEY is not set: checkpoints are not signed", file=sys.stderr)
        finally:
            await database.aclose()
        if result.ok:
            print(
                f"audit chain intact: {result.records_checked} record(s) checked; "
                f"head {result.head_id} {result.head_hash}"
            )
            return 0
        print(
            f"audit chain BROKEN at record {result.first_bad_id}: {result.reason} "
            f"({result.records_checked} record(s) before it are intact)"
        )
        return 1

    try:
        return asyncio.run(run())
    except (AuditUnavailable, StoreUnavailable) as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 2


def db_upgrade_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="customer-graph db upgrade",
        description="Create or upgrade the gateway's tables (the gateway also does this when it starts).",
    )
    parser.add_argument("--revision", default="head")
    _database_arg(parser)
    args = parser.parse_args(argv)
    try:  # with the data keys: migration 0009 seals what is there
        database = open_database(load_settings(), args.database_url or database_url_from_env())
    except DatabaseConfigError as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 2

    async def run() -> str | None:
        try:
            await database.migrate(args.revision)
            return await database.current_revision()
        finally:
            await database.aclose()

    try:
        revision = asyncio.run(run())
    except SealedValueError as exc:  # names a column, never a value
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # report the class only: driver messages may carry connection details
        print(f"{parser.prog}: failed ({type(exc).__name__})", file=sys.stderr)
        return 2
    print(f"gateway database at revision {revision} ({database.safe_url})")
    return 0


def _stamp(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else "-"


def grants_report(args: argparse.Namespace) -> int:
    """``policy table --grants``: the access grants in force, one line each — customer (account
    number), user, fields, until, grant id, approver. Ids, field names and times only: never a value."""
    prog = "customer-graph policy table --grants"
    database = _open(args.database_url, prog)
    if database is None:
        return 2
    now = datetime.now(UTC)

    async def run() -> list[list[str]]:
        try:
            found = await grants_in_force(database, now)
        finally:
            await database.aclose()
        return [
            [
                g.account_no,
                g.requester_sub,
                ",".join(g.fields),
                _stamp(g.expires_at),
                g.id,
                g.decided_by or "-",
            ]
            for g in found
        ]

    try:
        rows = asyncio.run(run())
    except StoreUnavailable as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    print()
    print(
        f"grants in force at {_stamp(now)}: {len(rows)} (each opens these fields of one customer to one user)"
    )
    if rows:
        header = ["customer", "user", "fields", "until", "grant", "approved by"]
        widths = [max(len(r[i]) for r in [header, *rows]) + 2 for i in range(len(header) - 1)]
        for row in [header, *rows]:
            print("".join(v.ljust(w) for v, w in zip(row, widths, strict=False)) + row[-1])
    return 0


def db_backup_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="customer-graph db backup",
        description="Write the gateway database (audit trail, access requests, pool, identity, events…) to "
        "one portable file (gzip'd JSON lines; restores into SQLite or PostgreSQL).",
    )
    parser.add_argument("file", type=Path, help="the backup to write, e.g. gateway-2026-12-04.cgbak")
    _database_arg(parser)
    args = parser.parse_args(argv)
    database = _open(args.database_url, parser.prog, keys=False)  # sealed values are copied as ciphertext
    if database is None:
        return 2

    async def run() -> dict[str, int]:
        try:
            return await backup(database, args.file)
        finally:
            await database.aclose()

    try:
        counts = asyncio.run(run())
    except Exception as exc:  # the class only: driver messages may carry connection details
        print(f"{parser.prog}: failed ({type(exc).__name__})", file=sys.stderr)
        return 2
    audit_records = counts.get("audit_log", 0)
    print(f"backup written: {args.file} ({sum(counts.values())} rows, {audit_records} audit records)")
    return 0


def db_restore_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="customer-graph db restore",
        description="Restore a backup into an empty gateway database, then verify the audit chain "
        "(exit 0 restored and intact, 1 restored but the chain does not verify, 2 not restored).",
    )
    parser.add_argument("file", type=Path, help="a file written by 'customer-graph db backup'")
    parser.add_argument(
        "--replace", action="store_true", help="empty a database that has audit records first (destructive)"
    )
    _database_arg(parser)
    args = parser.parse_args(argv)
    try:  # a new database is fine: restore creates its tables; the data keys must open the backup's
        database = open_database(load_settings(), args.database_url or database_url_from_env())
    except DatabaseConfigError as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 2

    async def run() -> Restored:
        try:
            return await restore(database, args.file, replace=args.replace)
        finally:
            await database.aclose()

    try:
        restored = asyncio.run(run())
    except (BackupError, SealedValueError) as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the class only
        print(f"{parser.prog}: failed ({type(exc).__name__})", file=sys.stderr)
        return 2
    verify = restored.verify
    print(f"restored {sum(restored.rows.values())} rows; audit chain: "
          f"{'intact' if verify.ok else 'BROKEN'} ({verify.records_checked} records checked)")  # fmt: skip
    return 0 if verify.ok else 1


def db_purge_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="customer-graph db purge",
        description="Pseudonymise what is past its retention now (pool notes, event payloads, audit "
        "values; the gateway also runs this every retention_interval seconds). Prints counts only.",
    )
    _database_arg(parser)
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        database = open_database(settings, args.database_url)
    except (SettingsError, DatabaseConfigError) as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 2

    async def run() -> Purged:
        try:
            await database.migrate()
            return await purge(
                database,
                Retention.from_settings(settings),
                datetime.now(UTC),
                key=retention_key(settings),
                exports=Path(settings.privacy_folder),
            )
        finally:
            await database.aclose()

    try:
        purged = asyncio.run(run())
    except Exception as exc:  # the class only
        print(f"{parser.prog}: failed ({type(exc).__name__})", file=sys.stderr)
        return 2
    print(
        f"retention purge: {purged.pool_notes} pool notes, {purged.review_notes} review notes, "
        f"{purged.event_payloads} event payloads pseudonymised, {purged.audit_values} audit values, "
        f"{purged.access_reasons} access-request reasons, {purged.export_files} export files, "
        f"{purged.unlinked_identities} unlinked support identities removed"
    )
    return 0


def db_keygen_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="customer-graph db keygen",
        description="Print a new data key (Fernet) for CG_DATA_KEYS / the data_keys_file. To rotate: put it "
        "first in the list, roll the gateways, run 'db rotate-keys', then remove the old key.",
    )
    parser.parse_args(argv)
    print(generate_key())
    return 0


def db_rotate_keys_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="customer-graph db rotate-keys",
        description="Re-seal every sealed value with the newest data key (the first of CG_DATA_KEYS), in "
        "batches; safe while gateways run, and to run again. Prints counts only.",
    )
    parser.add_argument("--batch", type=int, default=500, help="rows per transaction (default 500)")
    _database_arg(parser)
    args = parser.parse_args(argv)
    if args.batch < 1:
        print(f"{parser.prog}: --batch must be at least 1", file=sys.stderr)
        return 2
    database = _open(args.database_url, parser.prog)  # (no data keys in production: SettingsError, exit 2)
    if database is None or database.sealer.keyring is None:
        return 2
    keyring = database.sealer.keyring

    async def run() -> Rotated:
        try:
            await database.migrate()
            return await rotate_keys(database, batch=args.batch)
        finally:
            await database.aclose()

    try:
        rotated = asyncio.run(run())
    except SealedValueError as exc:  # names a column, never a value
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the class only
        print(f"{parser.prog}: failed ({type(exc).__name__})", file=sys.stderr)
        return 2
    for name in sorted(rotated.resealed):
        if rotated.resealed[name] or rotated.current[name] or rotated.changed[name]:
            print(
                f"{name}: {rotated.resealed[name]} re-sealed, {rotated.current[name]} already current, "
                f"{rotated.changed[name]} changed meanwhile"
            )
    print(
        f"rotate-keys: {rotated.total('resealed')} value(s) re-sealed with key {keyring.newest_id}, "
        f"{rotated.total('current')} already current, {rotated.total('changed')} changed meanwhile"
        + ("" if rotated.total("changed") == 0 else " (run again once every gateway lists the new key first)")
    )
    return 0
