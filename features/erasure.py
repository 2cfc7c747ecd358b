"""A data subject's erasure (PIPL art. 47, GDPR art. 17) across the three systems and the gateway.

One privacy officer asks (``Erasures.create``), **another** approves (``Erasures.decide``: the policy's
``writes.approveErasure`` is ``not_by_requester``). ``Eraser.run`` then works step by step; each step's
outcome is written to ``erasures.steps`` as it ends, so a failed system costs only its own step and a
resume (``Erasures.claim`` again) redoes only what is not done, with nothing half-written:

1. **values** — the account's contact values and every e-mail support knows it by are read and kept in
   the request (``pending``) *only while it runs*: they are what the gateway looks for in its own data
   (search terms in the audit trail, event payloads). Dropped when the erasure is done.
2. **sales** — ``contact_name``, ``title``, ``email``, ``phone``, ``address`` set to null with one
   ``PATCH`` carrying ``If-Match`` (a stale version is read again and retried). The name, orders,
   payments, opportunities and activities stay: the sales contract has no call to erase them (and
   bookkeeping law keeps orders and payments) — the step says so.
3. **support**, **contracts** — ``retained``: neither contract has a call to erase a requester, a ticket or
   a contract; they stay there under legal hold. The gateway stops linking them to the customer (step 4).
4. **gateway** — only once sales is done (else a change event would bring the values back): identity
   links, keys, pairs and requester records removed and the e-mails remembered as keyed digests (never
   linked again on the gateway's own); event payloads' e-mails pseudonymised; pool and review notes and
   access-request reasons removed; export files deleted; audit values removed (the facts stay, the chain
   verifies: ``AuditLog.redact_customer``); the cache evicted on every instance.

Statuses: ``pending_approval`` → ``rejected`` | ``running`` → ``done`` | ``failed`` (resumable).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from connectors.errors import UpstreamConflict, UpstreamError, UpstreamNotFound
from connectors.models import Account, System
from connectors.sales import SalesConnector
from features.identity.store import IdentityStore
from features.retention import PSEUDONYM, pseudonym, remove_access_reasons
from features.store.audit import AuditEntry, AuditLog
from features.store.db import STORE_ERRORS, Database, StoreUnavailable
from features.store.models import access_requests, erasures, event_inbox, pool_history, pool_reviews

log = logging.getLogger(__name__)

SALES_BLANKED: tuple[str, ...] = ("contact_name", "title", "email", "phone", "address")
SYSTEMS: tuple[str, ...] = ("sales", "support", "contracts", "gateway")
ERASED_TEXT = "(erased)"  # what stays of a required free text (an access request's reason)
STALE_AFTER = timedelta(minutes=5)  # a running erasure without a heartbeat this long may be resumed
HEARTBEAT = 60.0  # seconds between a running erasure's heartbeats
_CONFLICT_RETRIES = 3


class ErasureStatus(StrEnum):
    PENDING_APPROVAL = "pending_approval"
    REJECTED = "rejected"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class StepStatus(StrEnum):
    PENDING = "pending"
    DONE = "done"
    RETAINED = "retained"  # the system keeps it: its contract has no call to erase it
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Step:
    system: str
    status: StepStatus
    note: str
    at: datetime | None


@dataclass(frozen=True, slots=True)
class Erasure:
    id: str
    account_no: str
    reason: str
    status: ErasureStatus
    requested_by: str
    requested_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    decision_note: str | None
    steps: tuple[Step, ...]
    finished_at: datetime | None

    def step(self, system: str) -> Step:
        return next(s for s in self.steps if s.system == system)


class ErasureRefused(Exception):
    """A request that cannot be made or decided now (``code``: CONFLICT or NOT_FOUND)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _steps(raw: Mapping[str, Any]) -> tuple[Step, ...]:
    out = []
    for system in SYSTEMS:
        item = raw.get(system) or {}
        at = item.get("at")
        out.append(
            Step(
                system=system,
                status=StepStatus(item.get("status", StepStatus.PENDING.value)),
                note=str(item.get("note", "")),
                at=datetime.fromisoformat(at) if at else None,
            )
        )
    return tuple(out)


def _erasure(row: Mapping[Any, Any]) -> Erasure:
    return Erasure(
        id=row["id"],
        account_no=row["account_no"],
        reason=row["reason"],
        status=ErasureStatus(row["status"]),
        requested_by=row["requested_by"],
        requested_at=row["requested_at"],
        decided_by=row["decided_by"],
        decided_at=row["decided_at"],
        decision_note=row["decision_note"],
        steps=_steps(row["steps"] or {}),
        finished_at=row["finished_at"],
    )


_OPEN = (ErasureStatus.PENDING_APPROVAL.value, ErasureStatus.RUNNING.value, ErasureStatus.FAILED.value)


class Erasures:
    """The ``erasures`` table. Every method raises ``StoreUnavailable`` when the database fails."""

    def __init__(self, database: Database) -> None:
        self.db = database

    async def _guard(self, call: Callable[[], Awaitable[Any]]) -> Any:
        try:
            return await call()
        except STORE_ERRORS as exc:
            raise StoreUnavailable(f"the erasure requests are unavailable ({type(exc).__name__})") from None

    async def create(self, account_no: str, reason: str, requested_by: str, at: datetime) -> Erasure:
        """A new request awaiting a second person's approval; CONFLICT while another one for the same
        customer is open (awaiting approval, running or failed)."""
        request_id = str(uuid.uuid4())

        async def run() -> None:
            async with self.db.write_transaction() as conn:
                open_one = await conn.execute(
                    sa.select(erasures.c.id).where(
                        erasures.c.account_no == account_no, erasures.c.status.in_(_OPEN)
                    )
                )
                if open_one.first() is not None:
                    raise ErasureRefused("CONFLICT", "an erasure of this customer is already open")
                await conn.execute(
                    erasures.insert().values(
                        id=request_id,
                        account_no=account_no,
                        reason=reason,
                        status=ErasureStatus.PENDING_APPROVAL.value,
                        requested_by=requested_by,
                        requested_at=at,
                        steps={},
                    )
                )

        await self._guard(run)
        found = await self.get(request_id)
        assert found is not None
        return found

    async def get(self, request_id: str) -> Erasure | None:
        async def run() -> Erasure | None:
            async with self.db.read() as conn:
                row = (
                    (await conn.execute(sa.select(erasures).where(erasures.c.id == request_id)))
                    .mappings()
                    .first()
                )
            return _erasure(row) if row is not None else None

        result: Erasure | None = await self._guard(run)
        return result

    async def list(self, statuses: Iterable[ErasureStatus] | None = None, first: int = 50) -> list[Erasure]:
        """Newest first."""

        async def run() -> list[Erasure]:
            query = sa.select(erasures).order_by(erasures.c.requested_at.desc(), erasures.c.id).limit(first)
            if statuses is not None:
                query = query.where(erasures.c.status.in_([s.value for s in statuses]))
            async with self.db.read() as conn:
                return [_erasure(r) for r in (await conn.execute(query)).mappings()]

        result: list[Erasure] = await self._guard(run)
        return result

    async def decide(
        self, request_id: str, *, approve: bool, by: str, note: str | None, at: datetime
    ) -> Erasure:
        """Approve (status running: the caller starts ``Eraser.run``) or reject a pending request;
        CONFLICT when it was decided already. Who may decide is the policy's (never the requester)."""
        status = ErasureStatus.RUNNING if approve else ErasureStatus.REJECTED
        return await self._move(
            request_id,
            erasures.c.status == ErasureStatus.PENDING_APPROVAL.value,
            {
                "status": status.value,
                "decided_by": by,
                "decided_at": at,
                "decision_note": note,
                "heartbeat_at": at if approve else None,
                "finished_at": None if approve else at,
            },
            "this erasure request was decided already",
        )

    async def claim(self, request_id: str, at: datetime) -> Erasure:
        """Take a failed erasure (or a running one whose runner stopped beating ``STALE_AFTER`` ago) to
        run it again; CONFLICT when it is done, rejected, awaiting approval or running elsewhere."""
        return await self._move(
            request_id,
            sa.or_(
                erasures.c.status == ErasureStatus.FAILED.value,
                sa.and_(
                    erasures.c.status == ErasureStatus.RUNNING.value,
                    erasures.c.heartbeat_at < at - STALE_AFTER,
                ),
            ),
            {"status": ErasureStatus.RUNNING.value, "heartbeat_at": at},
            "only a failed erasure (or a stopped one) can be resumed",
        )

    async def _move(
        self, request_id: str, when: sa.ColumnElement[bool], values: Mapping[str, Any], refusal: str
    ) -> Erasure:
        """Set ``values`` on the request if ``when`` holds (one compare-and-set), else CONFLICT."""

        async def run() -> int:
            async with self.db.write_transaction() as conn:
                result = await conn.execute(
                    erasures.update().where(erasures.c.id == request_id, when).values(**values)
                )
                return int(result.rowcount)

        if not await self._guard(run):
            raise ErasureRefused("CONFLICT", refusal)
        found = await self.get(request_id)
        assert found is not None
        return found

    async def pending_values(self, request_id: str) -> dict[str, Any] | None:
        async def run() -> Any:
            async with self.db.read() as conn:
                return (
                    await conn.execute(sa.select(erasures.c.pending).where(erasures.c.id == request_id))
                ).scalar()

        found = await self._guard(run)
        return dict(found) if found else None

    async def save(
        self,
        request_id: str,
        at: datetime,
        *,
        step: Step | None = None,
        pending: Mapping[str, Any] | None = None,
        status: ErasureStatus | None = None,
        drop_pending: bool = False,
    ) -> None:
        async def run() -> None:
            async with self.db.write_transaction() as conn:
                values: dict[str, Any] = {"heartbeat_at": at}
                if step is not None:
                    raw = (
                        await conn.execute(sa.select(erasures.c.steps).where(erasures.c.id == request_id))
                    ).scalar()
                    steps = dict(raw or {})
                    steps[step.system] = {
                        "status": step.status.value,
                        "note": step.note,
                        "at": step.at.isoformat() if step.at else None,
                    }
                    values["steps"] = steps
                if pending is not None:
                    values["pending"] = dict(pending)
                if drop_pending:
                    values["pending"] = None
                if status is not None:
                    values["status"] = status.value
                    if status in (ErasureStatus.DONE, ErasureStatus.FAILED):
                        values["finished_at"] = at
                await conn.execute(erasures.update().where(erasures.c.id == request_id).values(**values))

        await self._guard(run)


@dataclass(frozen=True, slots=True)
class GatewayPurge:
    """What the gateway removed of its own data."""

    support_emails: int
    requesters: int
    pairs: int
    event_payloads: int
    notes: int
    access_reasons: int
    export_files: int
    audit_values: int

    def note(self) -> str:
        return (
            f"identity: {self.support_emails} support e-mail(s), {self.requesters} requester record(s), "
            f"{self.pairs} pair(s) removed; {self.event_payloads} event payload(s) pseudonymised; "
            f"{self.notes} pool note(s) and {self.access_reasons} access-request reason(s) removed; "
            f"{self.export_files} export file(s) deleted; {self.audit_values} audit value(s) removed; "
            "caches evicted"
        )


Evict = Callable[[str, Sequence[str], str | None], Awaitable[None]]


class Eraser:
    """Carries out approved erasures. ``evict(account_no, emails, tax_id)`` empties the gateway's caches
    of that customer on every instance (and refreshes the identity directory); ``export_files(account_no)``
    are the files of the customer's earlier exports; ``key`` pseudonymises e-mails in event payloads."""

    def __init__(
        self,
        erasures_: Erasures,
        *,
        sales: Callable[[], SalesConnector],
        identity: IdentityStore,
        audit: AuditLog,
        evict: Evict,
        export_files: Callable[[str], Awaitable[Iterable[Path]]],
        key: bytes,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.erasures = erasures_
        self.db = erasures_.db
        self._sales = sales
        self.identity = identity
        self.audit = audit
        self.evict = evict
        self.export_files = export_files
        self.key = key
        self.clock = clock

    async def run(self, erasure: Erasure) -> Erasure:
        """Run every step not done yet; the request ends ``done`` or ``failed`` (never raises for a
        system's failure: the step says which kind of failure, never a value). While it runs, its
        heartbeat is written every ``HEARTBEAT`` seconds, so no other instance takes it over."""
        beat = asyncio.create_task(self._beat(erasure.id), name=f"erasure-heartbeat-{erasure.id}")
        try:
            return await self._run(erasure)
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat

    async def _beat(self, erasure_id: str) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            with contextlib.suppress(StoreUnavailable):
                await self.erasures.save(erasure_id, self.clock())

    async def _run(self, erasure: Erasure) -> Erasure:
        try:
            try:
                values = await self._values(erasure)
            except UpstreamError as exc:  # the values are read from sales: its step failed
                failed = f"failed ({type(exc).__name__}); resume to retry"
                await self.erasures.save(
                    erasure.id,
                    self.clock(),
                    step=Step("sales", StepStatus.FAILED, failed, self.clock()),
                    status=ErasureStatus.FAILED,
                )
                found = await self.erasures.get(erasure.id)
                return found if found is not None else erasure
            sales = erasure.step("sales")
            if sales.status is not StepStatus.DONE:
                sales = await self._step(erasure, "sales", lambda: self._erase_sales(erasure, values))
            for system, note in (
                (
                    "support",
                    "retained under legal hold: the helpdesk has no call to erase a requester, a ticket or "
                    f"a comment; {len(values['emails'])} e-mail(s) no longer linked to this customer by the "
                    "gateway (ask the helpdesk's owners to erase them by hand if its law allows)",
                ),
                (
                    "contracts",
                    "retained under legal hold: the register has no call to erase a contract; contracts "
                    "are kept for their legal term",
                ),
            ):
                if erasure.step(system).status is StepStatus.PENDING:
                    await self.erasures.save(
                        erasure.id, self.clock(), step=Step(system, StepStatus.RETAINED, note, self.clock())
                    )
            gateway = erasure.step("gateway")
            if gateway.status is not StepStatus.DONE:
                if sales.status is StepStatus.DONE:
                    gateway = await self._step(
                        erasure, "gateway", lambda: self._erase_gateway(erasure, values)
                    )
                else:
                    gateway = Step("gateway", StepStatus.PENDING, "waits for the sales step", None)
            ok = sales.status is StepStatus.DONE and gateway.status is StepStatus.DONE
            await self.erasures.save(
                erasure.id,
                self.clock(),
                status=ErasureStatus.DONE if ok else ErasureStatus.FAILED,
                drop_pending=ok,
            )
        except StoreUnavailable:
            log.warning("erasure %s stopped: the gateway database is unavailable", erasure.id)
            # the heartbeat goes stale: a resume is possible after STALE_AFTER
        found = await self.erasures.get(erasure.id)
        return found if found is not None else erasure

    async def _step(self, erasure: Erasure, system: str, work: Callable[[], Awaitable[str]]) -> Step:
        try:
            note = await work()
            step = Step(system, StepStatus.DONE, note, self.clock())
        except UpstreamError as exc:
            step = Step(
                system, StepStatus.FAILED, f"failed ({type(exc).__name__}); resume to retry", self.clock()
            )
        except StoreUnavailable:
            raise
        except Exception as exc:  # a bug must not leave the request running forever
            log.error("erasure %s: the %s step failed (%s)", erasure.id, system, type(exc).__name__)
            step = Step(
                system, StepStatus.FAILED, f"failed ({type(exc).__name__}); resume to retry", self.clock()
            )
        await self.erasures.save(erasure.id, self.clock(), step=step)
        return step

    async def _values(self, erasure: Erasure) -> dict[str, Any]:
        """The values being erased: kept in the request until it is done (read once, before sales is
        changed; a resume after the sales step finds them there)."""
        kept = await self.erasures.pending_values(erasure.id)
        if kept is not None:
            return kept
        try:
            account: Account | None = await self._sales().account(erasure.account_no)
        except UpstreamNotFound:
            account = None
        fields = {
            f: getattr(account, f) for f in SALES_BLANKED if account is not None and getattr(account, f)
        }
        emails = {str(fields["email"])} if "email" in fields else set()
        emails |= {e.email for e in await self.identity.support_emails(erasure.account_no)}
        terms = [str(v) for v in fields.values()]
        if account is not None and account.kind == "person":
            terms.append(account.name)  # a person's name: kept by sales, but no search for it stays here
        values = {
            "fields": sorted(fields),
            "terms": sorted(set(terms) | emails),
            "emails": sorted(emails),
            "tax_id": account.tax_id if account is not None else None,
        }
        await self.erasures.save(erasure.id, self.clock(), pending=values)
        return values

    async def _erase_sales(self, erasure: Erasure, values: Mapping[str, Any]) -> str:
        sales = self._sales()
        for attempt in range(_CONFLICT_RETRIES):
            try:
                account = await sales.account(erasure.account_no)
            except UpstreamNotFound:
                return "the sales system no longer has this account"
            changes: dict[str, str | None] = {f: None for f in SALES_BLANKED if getattr(account, f)}
            if not changes:
                break
            try:
                await sales.update_account(
                    erasure.account_no,
                    changes,
                    version=account.version,
                    idempotency_key=f"erasure-{erasure.id}-{attempt}",
                )
            except UpstreamConflict:
                continue  # changed meanwhile: read it again
            await self._record(erasure, system="sales", fields=sorted(changes))
            break
        else:
            raise UpstreamConflict(System.SALES, "the account kept changing")
        blanked = ", ".join(values["fields"]) or "nothing (already blank)"
        return (
            f"blanked: {blanked}; kept: name, orders, payments, opportunities, activities (the sales "
            "system has no call to erase them; orders and payments are bookkeeping records)"
        )

    async def _erase_gateway(self, erasure: Erasure, values: Mapping[str, Any]) -> str:
        account_no, emails = erasure.account_no, list(values["emails"])
        now = self.clock()
        forgotten = await self.identity.forget(account_no, emails, now)
        payloads, notes, reasons = await self._own_rows(account_no, emails)
        files = 0
        for path in await self.export_files(account_no):
            if path.is_file():
                path.unlink()
                files += 1
        redacted = await self.audit.redact_customer(
            account_no,
            list(values["terms"]),
            cause={
                "cause": "erasure",
                "erasureId": erasure.id,
                "by": erasure.decided_by or erasure.requested_by,
            },
        )
        await self.evict(account_no, emails, values.get("tax_id"))
        purge = GatewayPurge(
            support_emails=forgotten.support_emails,
            requesters=forgotten.requesters,
            pairs=forgotten.pairs,
            event_payloads=payloads,
            notes=notes,
            access_reasons=reasons,
            export_files=files,
            audit_values=redacted.values,
        )
        await self._record(erasure, system="gateway", removed=purge.note())
        return purge.note()

    async def _record(self, erasure: Erasure, **facts: Any) -> None:
        """A step's write in the audit trail: what it did, never a value (``facts``: the system, fields…)."""
        await self.audit.record(
            [
                AuditEntry(
                    kind="write",
                    request_id=f"erasure-{erasure.id}",
                    user_sub=erasure.decided_by or erasure.requested_by,
                    operation_name="eraseCustomer",
                    operation_type="system",
                    customer_ids=[erasure.account_no],
                    detail={"operation": "eraseCustomer", **facts},
                )
            ]
        )

    async def _own_rows(self, account_no: str, emails: Sequence[str]) -> tuple[int, int, int]:
        """Event payloads, pool and review notes, access-request reasons of this customer, in one
        transaction."""
        payloads = notes = 0
        written = sorted({*emails, *(x.strip().lower() for x in emails)})  # as typed, as normalised
        async with self.db.write_transaction() as conn:
            e = event_inbox
            if written:  # the e-mail is sealed: found by its blind index
                rows = await conn.execute(sa.select(e.c.id, e.c.email).where(e.c.email_idx.in_(written)))
                for row_id, email in rows.all():
                    if email is None or email.startswith(PSEUDONYM):
                        continue
                    alias = pseudonym(email, self.key)
                    await conn.execute(
                        e.update().where(e.c.id == row_id).values(email=alias, email_idx=alias)
                    )
                    payloads += 1
            result = await conn.execute(
                pool_history.update()
                .where(pool_history.c.account_no == account_no, pool_history.c.note.is_not(None))
                .values(note=None)
            )
            notes += max(result.rowcount, 0)
            result = await conn.execute(
                pool_reviews.update()
                .where(
                    pool_reviews.c.account_no == account_no,
                    sa.or_(pool_reviews.c.note.is_not(None), pool_reviews.c.decision_note.is_not(None)),
                )
                .values(note=None, decision_note=None)
            )
            notes += max(result.rowcount, 0)
            reasons = await remove_access_reasons(
                conn, access_requests.c.account_no == account_no, ERASED_TEXT, self.clock()
            )
        return payloads, notes, reasons
