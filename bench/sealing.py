"""``python -m bench.sealing``: what sealing personal data costs the gateway database's writes and reads.

The same rows written through the store's tables (values sealed, blind indexes computed) and, as the
baseline, written as plaintext into the same tables as stored (``raw_table``: no sealing, no index), on a
fresh SQLite file (and PostgreSQL with ``--postgres URL``: an empty scratch schema, e.g. ``…/test?schema=x``;
its data key is made per run, so drop the schema afterwards). Each case runs ``--runs`` times; the median is
reported, in ms per batch and µs per row. Rows: change events of the helpdesk (requester e-mail, its blind
index, details: what every webhook writes) and pool releases (a note). Also the reads back.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from features.store.db import Database
from features.store.models import event_inbox, pool_history
from features.store.sealed import Keyring, generate_key, raw_table

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _events(n: int, run: int) -> list[dict[str, Any]]:
    return [
        {
            "source": "support",
            "event_id": f"r{run}-e{i}",
            "type": "ticket.updated",
            "email": f"requester{i}@example.cn",
            "detail": {"ticket_id": f"T-{i}", "status": "open", "confidential": False},
            "received_at": T0,
        }
        for i in range(n)
    ]


def _notes(n: int) -> list[dict[str, Any]]:
    return [
        {"at": T0, "account_no": f"A{i:06d}", "kind": "release", "actor": "u-1", "owner_id": "u-1",
         "reason": "other", "note": f"客户 {i} 说下个月再联系，电话 1380013{i:04d}"}
        for i in range(n)
    ]  # fmt: skip


async def _timed(fn: Callable[[], Awaitable[None]]) -> float:
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start


async def measure(url: str, rows: int, runs: int) -> dict[str, float]:
    """Median seconds per case."""
    db = Database(url, keyring=Keyring([generate_key()]))
    await db.migrate()
    # the same tables as they were before 0009_sealed: plaintext, JSON, no blind index
    plain_events, plain_notes = raw_table(event_inbox, sealed=False), raw_table(pool_history, sealed=False)
    cases: dict[str, list[float]] = {}
    try:
        for run in range(runs):

            async def sealed_events(run: int = run) -> None:
                async with db.write_transaction() as conn:
                    await conn.execute(event_inbox.insert(), _events(rows, 2 * run))

            async def open_events(run: int = run) -> None:
                async with db.write_transaction() as conn:
                    await conn.execute(plain_events.insert(), _events(rows, 2 * run + 1))

            async def sealed_notes() -> None:
                async with db.write_transaction() as conn:
                    await conn.execute(pool_history.insert(), _notes(rows))

            async def open_notes() -> None:
                async with db.write_transaction() as conn:
                    await conn.execute(plain_notes.insert(), _notes(rows))

            async def read_sealed(run: int = run) -> None:  # the rows sealed_events wrote
                async with db.read() as conn:
                    mine = event_inbox.c.event_id.startswith(f"r{2 * run}-")
                    (await conn.execute(sa.select(event_inbox).where(mine))).all()

            async def read_open(run: int = run) -> None:  # the rows open_events wrote
                async with db.read() as conn:
                    mine = plain_events.c.event_id.startswith(f"r{2 * run + 1}-")
                    (await conn.execute(sa.select(plain_events).where(mine))).all()

            for name, fn in (
                ("insert events, sealed", sealed_events),
                ("insert events, plaintext", open_events),
                ("insert pool notes, sealed", sealed_notes),
                ("insert pool notes, plaintext", open_notes),
                ("read events, sealed", read_sealed),
                ("read events, as stored", read_open),
            ):
                cases.setdefault(name, []).append(await _timed(fn))
            async with db.write_transaction() as conn:  # the next run writes into empty tables again
                await conn.execute(event_inbox.delete())
                await conn.execute(pool_history.delete())
    finally:
        await db.aclose()
    return {name: statistics.median(times) for name, times in cases.items()}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sealing", description=__doc__)
    parser.add_argument("--rows", type=int, default=2000, help="rows per batch (default 2000)")
    parser.add_argument("--runs", type=int, default=7, help="runs per case; the median is reported")
    parser.add_argument("--postgres", default="", help="also on this PostgreSQL database (a scratch one)")
    args = parser.parse_args()
    keyring = Keyring([generate_key()])
    n = 20000
    start = time.perf_counter()
    tokens = [keyring.seal(f"requester{i}@example.cn".encode()) for i in range(n)]
    seal_us = (time.perf_counter() - start) / n * 1e6
    start = time.perf_counter()
    for token in tokens:
        keyring.open(token, "bench")
    open_us = (time.perf_counter() - start) / n * 1e6
    print(f"one value: seal {seal_us:.1f} µs, open {open_us:.1f} µs (mean over {n} values)")
    targets = []
    with tempfile.TemporaryDirectory() as folder:
        targets.append(("sqlite", f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}"))
        if args.postgres:
            targets.append(("postgresql", args.postgres))
        for name, url in targets:
            results = asyncio.run(measure(url, args.rows, args.runs))
            print(f"{name}: {args.rows} rows per batch, median of {args.runs} runs")
            for case, seconds in results.items():
                print(f"  {case:32s} {seconds * 1000:8.1f} ms  {seconds / args.rows * 1e6:7.1f} µs/row")


if __name__ == "__main__":
    main()
