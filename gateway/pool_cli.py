"""``customer-graph pool sweep``: one recycling pass now, as the gateway's scheduled job runs it.

    customer-graph pool sweep [--dry-run] [--database-url URL]

Uses the gateway's configuration (``--config`` / ``CG_*``: the sales system, ``CG_DATABASE_URL``, the
``pool_*`` rules). Prints counts only — never customers' data. Exit codes: 0 done, 1 skipped (another
instance is sweeping), 2 configuration, database or upstream problem.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from dataclasses import replace

from features.pool.service import PoolService
from features.pool.sweep import SweepResult

from .datakeys import keyring_for
from .settings import Settings, SettingsError, load_settings


def _print(result: SweepResult) -> None:
    if not result.ran:
        why = "another instance is sweeping" if result.skipped == "locked" else str(result.skipped)
        print(f"pool sweep skipped: {why}")
        return
    verb = "would recycle" if result.dry_run else "recycled"
    print(
        f"pool sweep{' (dry run)' if result.dry_run else ''}: {result.scanned} customers scanned, "
        f"{result.owned} owned; {verb} {result.recycled}; {result.warned} new warnings "
        f"({result.due_warnings} within the warning period); {result.conflicts} changed meanwhile, "
        f"{result.errors} failed; {result.seconds:.2f} s"
    )


async def _run(settings: Settings, dry_run: bool) -> SweepResult:
    from .upstreams import build_upstreams

    upstreams = build_upstreams(settings)
    pool = PoolService.from_settings(settings, lambda: upstreams.sales, keyring=keyring_for(settings))
    try:
        return await pool.sweep(dry_run=dry_run)
    finally:
        await pool.aclose()
        await upstreams.aclose()


def sweep_main(argv: Sequence[str] | None = None, *, config: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="customer-graph pool sweep",
        description="Run one recycling pass of the public pool now (the gateway runs it every "
        "pool_sweep_interval seconds).",
    )
    parser.add_argument("--dry-run", action="store_true", help="decide and count, change nothing")
    parser.add_argument(
        "--database-url", default=None, help="the gateway database (default: CG_DATABASE_URL)"
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings(config)
    except SettingsError as exc:
        print(f"{parser.prog}: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.database_url:
        settings = replace(settings, database_url=args.database_url)
    try:
        result = asyncio.run(_run(settings, args.dry_run))
    except Exception as exc:  # the class only: driver and upstream messages may carry addresses
        print(f"{parser.prog}: failed ({type(exc).__name__})", file=sys.stderr)
        return 2
    _print(result)
    return 0 if result.ran else 1
