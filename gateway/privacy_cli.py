"""``customer-graph privacy export ACCOUNT_NO --by USER [--out DIR]``: a data subject's export from the
command line, as ``requestDataExport`` builds it (features/privacy.py), with a progress bar. The request is
recorded (``dataRequest`` shows it) and audited in the user's name (operation type ``cli``). Prints where the
JSON and HTML files are; never the data. Exit codes: 0 done, 1 no such customer, 2 a problem."""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from features.history import CustomerHistory
from features.identity.store import IdentityStore
from features.privacy import DataRequests, Exporter, RequestStatus, Sources, run_export
from features.store.audit import AuditEntry, AuditLog

from .datakeys import open_database
from .settings import SettingsError, load_settings


async def _run(account_no: str, by: str, folder: Path, database_url: str | None, bar: tqdm[Any]) -> Path:
    from .upstreams import build_upstreams

    settings = load_settings()
    upstreams = build_upstreams(settings)
    database = open_database(settings, database_url)
    audit = AuditLog(database)
    try:
        await database.migrate()
        requests = DataRequests(database, folder)
        request = await requests.create("export", account_no, by, datetime.now(UTC))
        await audit.record(
            [
                AuditEntry(
                    kind="write",
                    request_id=f"cli-{uuid.uuid4().hex[:12]}",
                    user_sub=by,
                    operation_name="requestDataExport",
                    operation_type="cli",
                    customer_ids=[account_no],
                    after={"request": request.id},
                    detail={"operation": "requestDataExport"},
                )
            ]
        )

        async def progress(share: float, parts: Sequence[Mapping[str, Any]]) -> None:
            bar.n = round(share * 100)
            bar.set_postfix_str(str(parts[-1]["name"]) if parts else "")
            bar.refresh()

        sources = Sources(
            sales=upstreams.sales,
            support=upstreams.support,
            contracts=upstreams.contracts,
            history=CustomerHistory(database, audit),
            audit=audit,
            identity=IdentityStore(database),
            database=database,
        )
        ended = await run_export(requests, Exporter(sources), request, on_progress=progress)
        if ended.status is not RequestStatus.DONE:
            if ended.error == "LookupError":
                raise LookupError("no such customer")
            raise RuntimeError(ended.error or "the export failed")
        return requests.files(request.id)["json"]
    finally:
        await audit.aclose()
        await database.aclose()
        await upstreams.aclose()


def export_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="customer-graph privacy export",
        description="Export everything the three systems and the gateway hold about one customer "
        "(JSON and HTML).",
    )
    parser.add_argument("account_no", help="the sales account number, e.g. A100234")
    parser.add_argument("--by", required=True, help="the privacy officer's user id (audited)")
    parser.add_argument(
        "--out", type=Path, default=None, help="folder for the files (default: CG_PRIVACY_FOLDER)"
    )
    parser.add_argument(
        "--database-url", default=None, help="the gateway database (default: CG_DATABASE_URL)"
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        folder = args.out or Path(load_settings().privacy_folder)
    except SettingsError as exc:
        print(f"{parser.prog}: configuration error: {exc}", file=sys.stderr)
        return 2
    bar: tqdm[Any] = tqdm(total=100, unit="%", file=sys.stderr, disable=args.no_progress, desc="export")
    try:
        target = asyncio.run(_run(args.account_no, args.by, folder, args.database_url, bar))
    except LookupError:
        print(f"{parser.prog}: no customer {args.account_no}", file=sys.stderr)
        return 1
    except Exception as exc:  # the class only: messages may carry addresses
        print(f"{parser.prog}: failed ({type(exc).__name__})", file=sys.stderr)
        return 2
    finally:
        bar.close()
    print(f"privacy export: {target} and {target.with_suffix('.html')}")
    return 0
