"""A data subject's requests (PIPL / GDPR): ``requestDataExport`` and ``dataRequest`` for the
privacy officer (the policy's ``writes.requestDataExport``). The export runs in the background
(features/privacy.py); its files are served at ``/privacy/exports/<id>.json`` and ``.html``.
``requestErasure`` / ``decideErasure`` (a second privacy officer) / ``resumeErasure``, ``erasureRequest``
and ``erasureRequests`` (features/erasure.py)."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Protocol, cast

import strawberry

from connectors import models
from features.erasure import Erasure as StoredErasure
from features.erasure import ErasureRefused
from features.erasure import ErasureStatus as StoredStatus
from features.privacy import DataRequest as StoredRequest

from .context import RequestContext, WriteRecord
from .errors import BadUserInput, Conflict, Forbidden, NotFound
from .ids import encode_id
from .mutations import _authorize, _target, clean_text


class DataRequestsPort(Protocol):
    """What the schema needs of the gateway's data requests (``gateway.privacy.Privacy`` fits)."""

    async def start_export(self, account_no: str, requested_by: str) -> StoredRequest: ...

    async def get(self, request_id: str) -> StoredRequest | None: ...


@strawberry.enum
class DataRequestStatus(Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@strawberry.type(description="One part of an export: what was read, from where, when.")
class DataRequestPart:
    name: str
    source: str = strawberry.field(description="sales, support, contracts or gateway.")
    read_at: datetime
    count: int


@strawberry.type(description="A data subject's request and how far it got.")
class DataRequest:
    id: strawberry.ID
    kind: str
    customer_id: strawberry.ID
    status: DataRequestStatus
    progress: float = strawberry.field(description="0 to 1.")
    parts: list[DataRequestPart]
    requested_by: str
    created_at: datetime
    finished_at: datetime | None
    error: str | None = strawberry.field(description="Why it failed (a kind, never data).")
    json_url: str | None = strawberry.field(description="The export as JSON, once done (same token).")
    html_url: str | None = strawberry.field(description="The export as a readable report, once done.")

    @classmethod
    def of(cls, request: StoredRequest) -> DataRequest:
        done = request.status.value == "done"
        return cls(
            id=strawberry.ID(request.id),
            kind=request.kind,
            customer_id=strawberry.ID(encode_id("Customer", request.account_no)),
            status=DataRequestStatus(request.status.value),
            progress=request.progress,
            parts=[
                DataRequestPart(
                    name=p["name"],
                    source=p["source"],
                    read_at=datetime.fromisoformat(p["readAt"]),
                    count=int(p["count"]),
                )
                for p in request.parts
            ],
            requested_by=request.requested_by,
            created_at=request.created_at,
            finished_at=request.finished_at,
            error=request.error,
            json_url=f"/privacy/exports/{request.id}.json" if done else None,
            html_url=f"/privacy/exports/{request.id}.html" if done else None,
        )


def _context(info: strawberry.Info) -> RequestContext:
    return cast(RequestContext, info.context)


def _port(context: RequestContext) -> DataRequestsPort:
    if context.privacy is None:
        raise Forbidden("Data requests are not available on this gateway.")
    return cast(DataRequestsPort, context.privacy)


@strawberry.type
class PrivacyQuery:
    @strawberry.field(
        description="A data request and its progress (writes.requestDataExport on its customer)."
    )
    async def data_request(self, info: strawberry.Info, id: strawberry.ID) -> DataRequest:
        context = _context(info)
        request = await _port(context).get(str(id))
        if request is None:
            raise NotFound("No such data request.")
        account = await _target(context, strawberry.ID(encode_id("Customer", request.account_no)))
        _authorize(context, "requestDataExport", account)
        return DataRequest.of(request)


@strawberry.type
class PrivacyMutation:
    @strawberry.mutation(
        description="Export everything the three systems and the gateway hold about a customer (a data "
        "subject's request): JSON and a readable report, built in the background; follow it with "
        "`dataRequest(id)`. Privacy officers (writes.requestDataExport); audited."
    )
    async def request_data_export(self, info: strawberry.Info, customer_id: strawberry.ID) -> DataRequest:
        context = _context(info)
        port = _port(context)
        account = await _target(context, customer_id)
        _authorize(context, "requestDataExport", account)
        request = await port.start_export(account.account_no, context.require_principal().sub)
        context.record(WriteRecord("requestDataExport", account.account_no, after={"request": request.id}))
        return DataRequest.of(request)


# --- erasure --------------------------------------------------------------------------------------


class ErasurePort(Protocol):
    """What the schema needs of the gateway's erasures (``gateway.privacy.Privacy`` fits)."""

    async def request_erasure(self, account_no: str, reason: str, requested_by: str) -> StoredErasure: ...

    async def get_erasure(self, erasure_id: str) -> StoredErasure | None: ...

    async def list_erasures(self, statuses: list[StoredStatus] | None, first: int) -> list[StoredErasure]: ...

    async def decide_erasure(
        self, erasure_id: str, approve: bool, by: str, note: str | None
    ) -> StoredErasure: ...

    async def resume_erasure(self, erasure_id: str) -> StoredErasure: ...


@strawberry.enum(description="Where an erasure is: it needs a second privacy officer's approval to start.")
class ErasureStatus(Enum):
    PENDING_APPROVAL = "pending_approval"
    REJECTED = "rejected"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@strawberry.enum
class ErasureStepStatus(Enum):
    PENDING = "pending"
    DONE = "done"
    RETAINED = strawberry.enum_value(
        "retained", description="The system keeps it: its contract has no call to erase it (legal hold)."
    )
    FAILED = "failed"


@strawberry.type(description="What one system did of an erasure.")
class ErasureStep:
    system: str = strawberry.field(description="sales, support, contracts or gateway.")
    status: ErasureStepStatus
    note: str = strawberry.field(description="What was erased or kept, and why (counts, never values).")
    at: datetime | None


@strawberry.type(description="A data subject's erasure and where each system is with it.")
class ErasureRequest:
    id: strawberry.ID
    customer_id: strawberry.ID
    reason: str
    status: ErasureStatus
    requested_by: str
    requested_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    decision_note: str | None
    systems: list[ErasureStep]
    finished_at: datetime | None

    @classmethod
    def of(cls, erasure: StoredErasure) -> ErasureRequest:
        return cls(
            id=strawberry.ID(erasure.id),
            customer_id=strawberry.ID(encode_id("Customer", erasure.account_no)),
            reason=erasure.reason,
            status=ErasureStatus(erasure.status.value),
            requested_by=erasure.requested_by,
            requested_at=erasure.requested_at,
            decided_by=erasure.decided_by,
            decided_at=erasure.decided_at,
            decision_note=erasure.decision_note,
            systems=[
                ErasureStep(system=s.system, status=ErasureStepStatus(s.status.value), note=s.note, at=s.at)
                for s in erasure.steps
            ],
            finished_at=erasure.finished_at,
        )


def _erasures(context: RequestContext) -> ErasurePort:
    if context.privacy is None:
        raise Forbidden("Erasure is not available on this gateway.")
    return cast(ErasurePort, context.privacy)


async def _erasure(
    context: RequestContext, erasure_id: strawberry.ID
) -> tuple[StoredErasure, models.Account]:
    """The erasure request and its customer, for a caller the policy lets ask for it (else NOT_FOUND)."""
    found = await _erasures(context).get_erasure(str(erasure_id))
    if found is None:
        raise NotFound("No such erasure request.")
    account = await _target(context, strawberry.ID(encode_id("Customer", found.account_no)))
    if not context.require_guard().can_write("requestErasure", account).allowed:
        raise NotFound("No such erasure request.")
    return found, account


def _refused(exc: ErasureRefused) -> Exception:
    return Conflict(str(exc)) if exc.code == "CONFLICT" else NotFound(str(exc))


@strawberry.type
class ErasureQuery:
    @strawberry.field(description="An erasure request and each system's step (writes.requestErasure).")
    async def erasure_request(self, info: strawberry.Info, id: strawberry.ID) -> ErasureRequest:
        found, _ = await _erasure(_context(info), id)
        return ErasureRequest.of(found)

    @strawberry.field(
        description="Erasure requests, newest first, optionally by status (writes.requestErasure)."
    )
    async def erasure_requests(
        self, info: strawberry.Info, status: list[ErasureStatus] | None = None, first: int = 50
    ) -> list[ErasureRequest]:
        context = _context(info)
        if not 1 <= first <= 200:
            raise BadUserInput("'first' must be between 1 and 200.")
        if not context.require_guard().can_write("requestErasure").allowed:
            raise Forbidden("Not allowed: writes.requestErasure.")
        statuses = [StoredStatus(s.value) for s in status] if status else None
        return [ErasureRequest.of(e) for e in await _erasures(context).list_erasures(statuses, first)]


@strawberry.type
class ErasureMutation:
    @strawberry.mutation(
        description="Ask for a customer's erasure (a data subject's request). Nothing happens until another "
        "privacy officer approves it (`decideErasure`). Audited."
    )
    async def request_erasure(
        self, info: strawberry.Info, customer_id: strawberry.ID, reason: str
    ) -> ErasureRequest:
        context = _context(info)
        port = _erasures(context)
        text = clean_text("reason", reason, required=True)
        assert text is not None
        account = await _target(context, customer_id)
        _authorize(context, "requestErasure", account)
        try:
            erasure = await port.request_erasure(account.account_no, text, context.require_principal().sub)
        except ErasureRefused as exc:
            raise _refused(exc) from None
        context.record(WriteRecord("requestErasure", account.account_no, after={"erasure": erasure.id}))
        return ErasureRequest.of(erasure)

    @strawberry.mutation(
        description="Approve (the erasure starts at once, in the background) or reject an erasure request: "
        "another privacy officer than the one who asked (writes.approveErasure). Audited."
    )
    async def decide_erasure(
        self, info: strawberry.Info, id: strawberry.ID, approve: bool, note: str | None = None
    ) -> ErasureRequest:
        context = _context(info)
        found, account = await _erasure(context, id)
        _authorize(context, "approveErasure", account, requester=found.requested_by)
        text = clean_text("note", note)
        try:
            erasure = await _erasures(context).decide_erasure(
                found.id, approve, context.require_principal().sub, text
            )
        except ErasureRefused as exc:
            raise _refused(exc) from None
        context.record(
            WriteRecord(
                "decideErasure", account.account_no, after={"erasure": erasure.id, "approve": approve}
            )
        )
        return ErasureRequest.of(erasure)

    @strawberry.mutation(
        description="Run a failed erasure again: only the steps not done (writes.approveErasure). Audited."
    )
    async def resume_erasure(self, info: strawberry.Info, id: strawberry.ID) -> ErasureRequest:
        context = _context(info)
        found, account = await _erasure(context, id)
        _authorize(context, "approveErasure", account, requester=found.requested_by)
        try:
            erasure = await _erasures(context).resume_erasure(found.id)
        except ErasureRefused as exc:
            raise _refused(exc) from None
        context.record(WriteRecord("resumeErasure", account.account_no, after={"erasure": erasure.id}))
        return ErasureRequest.of(erasure)
