"""A data subject's export: everything the three systems and the gateway hold about one customer.

``DataRequests`` keeps each request (table ``data_requests``: who asked, status, progress, the parts
written); ``Exporter.run`` reads every part from its source and streams it into ``<id>.json`` as it
goes (a customer with hundreds of tickets is read a ticket at a time, never held whole), then renders
``<id>.html``, a readable report, from that file. Each part names its source and when it was read.

Parts: the sales account, orders, payments, opportunities, activities; the helpdesk's requester records,
tickets with their conversations and the satisfaction summary for every e-mail support knows the customer
by (features/identity); the register's contracts (confidential ones included); the gateway's support
identities, duplicate pairs, pool history, change history (features/history.py) and every audit record
about the customer.
"""

from __future__ import annotations

import dataclasses
import html
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

import orjson
import sqlalchemy as sa

from connectors.contracts import ContractsConnector
from connectors.errors import UpstreamNotFound
from connectors.sales import SalesConnector
from connectors.support import SupportConnector
from features.history import SOURCES, CustomerHistory
from features.identity.store import IdentityStore
from features.store.audit import AuditFilter, AuditLog
from features.store.db import STORE_ERRORS, Database, StoreUnavailable
from features.store.models import data_requests, identity_distinct, identity_pairs

log = logging.getLogger(__name__)

Progress = Callable[[float, Sequence[Mapping[str, Any]]], Awaitable[None]]


class RequestStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class DataRequest:
    id: str
    kind: str  # export
    account_no: str
    status: RequestStatus
    progress: float
    parts: list[dict[str, Any]]  # {name, source, readAt, count}
    requested_by: str
    created_at: datetime
    finished_at: datetime | None
    error: str | None


def _request(row: Mapping[Any, Any]) -> DataRequest:
    return DataRequest(
        id=row["id"],
        kind=row["kind"],
        account_no=row["account_no"],
        status=RequestStatus(row["status"]),
        progress=float(row["progress"]),
        parts=list(row["parts"] or []),
        requested_by=row["requested_by"],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
        error=row["error"],
    )


class DataRequests:
    def __init__(self, database: Database, folder: Path) -> None:
        self.db = database
        self.folder = folder

    def files(self, request_id: str) -> dict[str, Path]:
        return {"json": self.folder / f"{request_id}.json", "html": self.folder / f"{request_id}.html"}

    async def create(self, kind: str, account_no: str, requested_by: str, at: datetime) -> DataRequest:
        request_id = str(uuid.uuid4())
        row: dict[str, Any] = {
            "id": request_id,
            "kind": kind,
            "account_no": account_no,
            "status": RequestStatus.QUEUED.value,
            "progress": 0.0,
            "parts": [],
            "requested_by": requested_by,
            "created_at": at,
        }
        try:
            async with self.db.write_transaction() as conn:
                await conn.execute(data_requests.insert().values(**row))
        except STORE_ERRORS as exc:
            raise StoreUnavailable(f"the data requests are unavailable ({type(exc).__name__})") from None
        found = await self.get(request_id)
        assert found is not None
        return found

    async def get(self, request_id: str) -> DataRequest | None:
        try:
            async with self.db.read() as conn:
                row = (
                    (await conn.execute(sa.select(data_requests).where(data_requests.c.id == request_id)))
                    .mappings()
                    .first()
                )
        except STORE_ERRORS as exc:
            raise StoreUnavailable(f"the data requests are unavailable ({type(exc).__name__})") from None
        return _request(row) if row is not None else None

    async def of_account(self, account_no: str) -> list[DataRequest]:
        """Every request about one customer (an erasure deletes their files)."""
        try:
            async with self.db.read() as conn:
                rows = (
                    await conn.execute(
                        sa.select(data_requests).where(data_requests.c.account_no == account_no)
                    )
                ).mappings()
                return [_request(r) for r in rows]
        except STORE_ERRORS as exc:
            raise StoreUnavailable(f"the data requests are unavailable ({type(exc).__name__})") from None

    async def update(self, request_id: str, **values: Any) -> None:
        try:
            async with self.db.write_transaction() as conn:
                await conn.execute(
                    data_requests.update().where(data_requests.c.id == request_id).values(**values)
                )
        except STORE_ERRORS as exc:
            raise StoreUnavailable(f"the data requests are unavailable ({type(exc).__name__})") from None


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError


def _dump(value: Any) -> bytes:
    return orjson.dumps(value, default=_default, option=orjson.OPT_NON_STR_KEYS)


@dataclass(frozen=True, slots=True)
class Sources:
    """Where each part is read from."""

    sales: SalesConnector
    support: SupportConnector
    contracts: ContractsConnector
    history: CustomerHistory
    audit: AuditLog
    identity: IdentityStore
    database: Database


class _Writer:
    """``{"request": …, "customer": …, "parts": [ {name, source, readAt, items: [...], count}, … ]}``
    written part by part and item by item."""

    def __init__(self, out: IO[bytes], header: Mapping[str, Any]) -> None:
        self.out = out
        self.parts: list[dict[str, Any]] = []
        out.write(_dump(dict(header))[:-1] + b',"parts":[')

    async def part(self, name: str, source: str, items: AsyncIterator[Any]) -> dict[str, Any]:
        read_at = datetime.now(UTC).isoformat()
        prefix = b"," if self.parts else b""
        self.out.write(
            prefix + _dump({"name": name, "source": source, "readAt": read_at})[:-1] + b',"items":['
        )
        count = 0
        async for item in items:
            self.out.write((b"," if count else b"") + _dump(item))
            count += 1
        self.out.write(b'],"count":' + str(count).encode() + b"}")
        summary = {"name": name, "source": source, "readAt": read_at, "count": count}
        self.parts.append(summary)
        return summary

    def close(self) -> None:
        self.out.write(b"]}")


async def _each(values: Sequence[Any]) -> AsyncIterator[Any]:
    for value in values:
        yield value


class Exporter:
    def __init__(self, sources: Sources) -> None:
        self.s = sources

    async def run(
        self, account_no: str, out: Path, *, request_id: str, progress: Progress
    ) -> list[dict[str, Any]]:
        """Write the export to ``out`` (JSON) and ``out.with_suffix('.html')``; the parts' summaries."""
        s = self.s
        try:
            account = await s.sales.account(account_no)
        except UpstreamNotFound:
            raise LookupError("no such customer") from None
        extra = [e for e, _ in (await s.identity.extra_emails()).get(account_no, ())]
        emails = sorted({*([account.email] if account.email else []), *extra})
        steps = 14
        done = 0
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.name + ".partial")
        with partial.open("wb") as handle:
            writer = _Writer(
                handle,
                {
                    "request": request_id,
                    "customer": account_no,
                    "exportedAt": datetime.now(UTC).isoformat(),
                    "supportEmails": emails,
                },
            )

            async def step(name: str, source: str, items: AsyncIterator[Any]) -> None:
                nonlocal done
                await writer.part(name, source, items)
                done += 1
                await progress(done / steps, writer.parts)

            await step("account", "sales", _each([account]))
            orders = (await s.sales.orders([account_no])).get(account_no, [])
            await step("orders", "sales", _each(orders))
            await step("payments", "sales", _each((await s.sales.payments([account_no])).get(account_no, [])))
            await step(
                "opportunities",
                "sales",
                _each((await s.sales.opportunities([account_no])).get(account_no, [])),
            )
            await step(
                "activities", "sales", _each((await s.sales.activities([account_no])).get(account_no, []))
            )
            requesters = await s.support.requesters(emails) if emails else {}
            await step("requesters", "support", _each(list(requesters.values())))
            tickets = await s.support.tickets(emails) if emails else {}
            await step(
                "tickets", "support", self._conversations([t for e in emails for t in tickets.get(e, [])])
            )
            satisfaction = await s.support.satisfaction(emails) if emails else {}
            await step("satisfaction", "support", _each(list(satisfaction.values())))
            contracts = await s.contracts.contracts(account.tax_id) if account.tax_id else []
            await step("contracts", "contracts", _each(contracts))
            identities = await s.identity.support_emails(account_no)
            await step("supportIdentities", "gateway", _each(identities))
            await step("duplicatePairs", "gateway", _each(await self._pairs(account_no)))
            await step("poolHistory", "gateway", self._history(account_no, emails, account.tax_id, ("pool",)))
            await step("changeHistory", "gateway", self._history(account_no, emails, account.tax_id, SOURCES))
            await step("auditRecords", "gateway", self._audit(account_no))
            writer.close()
        partial.replace(out)
        render_html(out, out.with_suffix(".html"))
        return writer.parts

    async def _conversations(self, tickets: Sequence[Any]) -> AsyncIterator[Any]:
        for ticket in tickets:  # one helpdesk call per ticket: a conversation at a time, never all at once
            try:
                detail = await self.s.support.ticket(ticket.id)
            except UpstreamNotFound:
                yield {"ticket": ticket, "comments": None}
                continue
            yield {"ticket": detail.ticket, "comments": detail.comments}

    async def _pairs(self, account_no: str) -> list[dict[str, Any]]:
        p, d = identity_pairs, identity_distinct
        async with self.s.database.read() as conn:
            pairs = (
                await conn.execute(sa.select(p).where(sa.or_(p.c.a == account_no, p.c.b == account_no)))
            ).mappings()
            found = [dict(row) for row in pairs]
            marks = (
                await conn.execute(sa.select(d).where(sa.or_(d.c.a == account_no, d.c.b == account_no)))
            ).mappings()
            found += [{**dict(row), "notDuplicate": True} for row in marks]
        return found

    async def _history(
        self, account_no: str, emails: Sequence[str], tax_id: str | None, sources: Sequence[str]
    ) -> AsyncIterator[Any]:
        after: str | None = None
        while True:
            page = await self.s.history.page(
                account_no, emails=emails, tax_id=tax_id, first=100, after=after, sources=sources
            )
            for entry in page.entries:
                yield dataclasses.asdict(entry)
            if not page.has_next_page:
                return
            after = page.end_cursor

    async def _audit(self, account_no: str) -> AsyncIterator[Any]:
        after: str | None = None
        while True:
            page = await self.s.audit.query(AuditFilter(customer_id=account_no), first=500, after=after)
            for record in page.records:
                yield dataclasses.asdict(record)
            if not page.has_next_page:
                return
            after = page.end_cursor


# --- the readable report -----------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return html.escape(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode())
    return html.escape(str(value))


def render_html(source: Path, target: Path) -> None:
    """The export as a readable HTML page: one table per part, every value escaped."""
    data = orjson.loads(source.read_bytes())
    out: list[str] = [
        "<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'>",
        f"<title>Data export {_cell(data['customer'])}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}"
        "td,th{border:1px solid #ccc;padding:4px;font-size:12px;vertical-align:top}</style></head><body>",
        f"<h1>Data export for customer {_cell(data['customer'])}</h1>",
        f"<p>Request {_cell(data['request'])}, exported {_cell(data['exportedAt'])}. Support e-mails: "
        f"{_cell(', '.join(data['supportEmails']))}.</p>",
    ]
    for part in data["parts"]:
        out.append(
            f"<h2>{_cell(part['name'])}</h2><p>Source: {_cell(part['source'])}; read at "
            f"{_cell(part['readAt'])}; {part['count']} item(s).</p>"
        )
        items = part["items"]
        if not items:
            continue
        keys: list[str] = []
        for item in items:
            for key in item if isinstance(item, dict) else ["value"]:
                if key not in keys:
                    keys.append(key)
        out.append("<table><tr>" + "".join(f"<th>{_cell(k)}</th>" for k in keys) + "</tr>")
        for item in items:
            row = item if isinstance(item, dict) else {"value": item}
            out.append("<tr>" + "".join(f"<td>{_cell(row.get(k))}</td>" for k in keys) + "</tr>")
        out.append("</table>")
    out.append("</body></html>")
    target.write_text("\n".join(out), encoding="utf-8")


async def run_export(
    requests: DataRequests, exporter: Exporter, request: DataRequest, *, on_progress: Progress | None = None
) -> DataRequest:
    """Run a recorded export request to its end: running, progress and parts as it goes, then done (or
    failed, with the error's kind only). Answers the request as it ended."""
    await requests.update(request.id, status=RequestStatus.RUNNING.value, started_at=datetime.now(UTC))

    async def progress(share: float, parts: Sequence[Mapping[str, Any]]) -> None:
        await requests.update(request.id, progress=round(share, 3), parts=list(parts))
        if on_progress is not None:
            await on_progress(share, parts)

    try:
        parts = await exporter.run(
            request.account_no, requests.files(request.id)["json"], request_id=request.id, progress=progress
        )
    except Exception as exc:  # the kind only: a message may carry data or an address
        log.warning("data export failed (%s)", type(exc).__name__, extra={"data_request": request.id})
        await requests.update(
            request.id,
            status=RequestStatus.FAILED.value,
            error=type(exc).__name__,
            finished_at=datetime.now(UTC),
        )
    else:
        await requests.update(
            request.id,
            status=RequestStatus.DONE.value,
            progress=1.0,
            parts=parts,
            finished_at=datetime.now(UTC),
        )
    ended = await requests.get(request.id)
    assert ended is not None
    return ended
