"""``customer-graph identity scan``: match every sales account against every other, by blocking keys.

    customer-graph identity scan [--database-url URL] [--per-page N] [--no-progress]
    customer-graph identity requesters FILE [--database-url URL]

Reads every account from the sales system (pages of ``--per-page``, four at a time), compares accounts
that share a blocking key (same tax id, e-mail, phone, company name, or contact in a region — never all
pairs) and stores the result as the gateway's identity index: blocking keys (digests), pairs with score
and reasons, which contact fields each account lacks, and e-mails that changed since the last look
(kept as previous support identities). A progress bar on stderr; counts only on stdout, never
customers' data. Exit codes: 0 done, 2 configuration, database or upstream problem.

``identity requesters FILE`` imports the helpdesk's requesters (an export: one e-mail per line, or a CSV
with an ``email`` column; ``-`` reads standard input). The helpdesk has no call that lists them, so
without an import the gateway knows only those its change events named; ``unmatchedRequesters`` lists
those of them that are on no sales account.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import sys
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from tqdm import tqdm

from connectors.models import Account
from connectors.normalize import normalize_email
from connectors.sales import SalesConnector
from features.identity.service import Identity, ScanResult
from features.identity.store import IdentityStore
from features.store.db import Database

from .datakeys import open_database
from .settings import Settings, SettingsError, load_settings, retention_key

PAGES_IN_FLIGHT = 4


async def sales_pages(
    sales: SalesConnector, per_page: int, bar: tqdm[Any] | None
) -> AsyncIterator[list[Account]]:
    """Every account, a page at a time, ``PAGES_IN_FLIGHT`` pages requested at once."""
    first = await sales.list_accounts(page=1, per_page=per_page)
    if bar is not None:
        bar.reset(total=first.total)
    yield first.accounts
    pages = -(-first.total // per_page)
    for start in range(2, pages + 1, PAGES_IN_FLIGHT):
        batch = range(start, min(pages, start + PAGES_IN_FLIGHT - 1) + 1)
        answers = await asyncio.gather(*(sales.list_accounts(page=p, per_page=per_page) for p in batch))
        for answer in answers:
            yield answer.accounts


async def run_scan(settings: Settings, per_page: int, progress: bool) -> ScanResult:
    from .upstreams import build_upstreams

    upstreams = build_upstreams(settings)
    database = open_database(settings)
    bar: tqdm[Any] = tqdm(
        total=None, unit=" accounts", file=sys.stderr, disable=not progress, desc="identity scan"
    )
    try:
        await database.migrate()
        identity = Identity(
            IdentityStore(database, retention_key(settings)), upstreams.sales.accounts, refresh_seconds=0
        )
        return await identity.scan(
            sales_pages(upstreams.sales, per_page, bar), progress=lambda n: bar.update(n)
        )
    finally:
        bar.close()
        await database.aclose()
        await upstreams.aclose()


def scan_main(argv: Sequence[str] | None = None, *, config: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="customer-graph identity scan",
        description="Match every sales account by blocking keys and store the identity index "
        "(duplicate pairs, blocking keys, incomplete records, changed e-mails).",
    )
    parser.add_argument(
        "--database-url", default=None, help="the gateway database (default: CG_DATABASE_URL)"
    )
    parser.add_argument("--per-page", type=int, default=200, help="accounts per sales call (at most 200)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if not 1 <= args.per_page <= 200:
        print(f"{parser.prog}: --per-page must be between 1 and 200", file=sys.stderr)
        return 2
    try:
        settings = load_settings(config)
    except SettingsError as exc:
        print(f"{parser.prog}: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.database_url:
        settings = replace(settings, database_url=args.database_url)
    try:
        result = asyncio.run(run_scan(settings, args.per_page, not args.no_progress))
    except Exception as exc:  # the class only: driver and upstream messages may carry addresses
        print(f"{parser.prog}: failed ({type(exc).__name__})", file=sys.stderr)
        return 2
    print(
        f"identity scan: {result.accounts} accounts, {result.pairs} pairs ({result.probable} probable "
        f"duplicates), {result.previous_emails} changed e-mails kept, {result.skipped_blocks} oversized "
        f"blocks skipped; {result.seconds:.1f} s"
    )
    return 0


def read_requesters(lines: Iterable[str]) -> tuple[list[str], int]:
    """E-mails from an export (one per line, or CSV with an ``email`` column): (valid, lowered), skipped."""
    rows = list(csv.reader(line for line in lines if line.strip()))
    if not rows:
        return [], 0
    header = [cell.strip().lower() for cell in rows[0]]
    column = header.index("email") if "email" in header else 0
    body = rows[1:] if "email" in header else rows
    found: list[str] = []
    skipped = 0
    for row in body:
        value = normalize_email(row[column]) if len(row) > column else ""
        local, at, domain = value.partition("@")
        if at and local and "." in domain and not any(c.isspace() for c in value) and len(value) <= 254:
            found.append(value)
        else:
            skipped += 1
    return found, skipped


async def import_requesters(database: Database, emails: Sequence[str], key: bytes = b"") -> None:
    """``key``: the key of erased e-mails' digests (those are not imported again)."""
    store = IdentityStore(database, key)
    now = datetime.now(UTC)
    for start in range(0, len(emails), 1000):
        await store.heard_requesters(emails[start : start + 1000], now)


def requesters_main(argv: Sequence[str] | None = None, *, config: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="customer-graph identity requesters",
        description="Import the helpdesk's requesters (an export: one e-mail per line, or CSV with an "
        "'email' column), so unmatchedRequesters can list those on no sales account.",
    )
    parser.add_argument("file", help="the export; - for standard input")
    parser.add_argument(
        "--database-url", default=None, help="the gateway database (default: CG_DATABASE_URL)"
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings(config)
    except SettingsError as exc:
        print(f"{parser.prog}: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.file == "-":
            emails, skipped = read_requesters(sys.stdin)
        else:
            with open(args.file, encoding="utf-8", newline="") as handle:
                emails, skipped = read_requesters(handle)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        print(f"{parser.prog}: cannot read {args.file} ({type(exc).__name__})", file=sys.stderr)
        return 2

    async def run() -> None:
        database = open_database(settings, args.database_url)
        try:
            await database.migrate()
            await import_requesters(database, sorted(set(emails)), retention_key(settings))
        finally:
            await database.aclose()

    try:
        asyncio.run(run())
    except Exception as exc:  # the class only: driver messages may carry addresses
        print(f"{parser.prog}: failed ({type(exc).__name__})", file=sys.stderr)
        return 2
    print(f"identity requesters: {len(set(emails))} imported, {skipped} lines skipped (not an e-mail)")
    return 0
