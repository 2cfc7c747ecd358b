"""A data subject's requests (PIPL / GDPR): ``requestDataExport`` and ``dataRequest`` for the
privacy officer (the policy's ``writes.requestDataExport``). The export runs in the background
(features/privacy.py); its files are served at ``/privacy/exports/<id>.json`` and ``.html``."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Protocol, cast

import strawberry

from features.privacy import DataRequest as StoredRequest

from .context import RequestContext, WriteRecord
from .errors import Forbidden, NotFound
from .ids import encode_id
from .mutations import _authorize, _target


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
