"""A data subject's exports, as the gateway runs them: one background task per request (its progress in
the database, so every instance can answer ``dataRequest``), and ``GET /privacy/exports/<id>.json|html``
for the files, to a caller the policy lets export that customer (``writes.requestDataExport``).

The files are on the disk of the instance that ran the export (``CG_PRIVACY_FOLDER``, default
``var/privacy``): with several instances, point it at a shared volume."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from features.privacy import DataRequest, DataRequests, Exporter, RequestStatus, Sources, run_export
from policies import Policy
from policies.guard import Guard

from .auth import Authenticator, AuthError

log = logging.getLogger(__name__)

_MEDIA = {"json": "application/json", "html": "text/html; charset=utf-8"}


class Privacy:
    def __init__(
        self,
        requests: DataRequests,
        sources: Callable[[], Sources],
        authenticator: Authenticator,
        policy: Callable[[], Policy],
        fetch_account: Callable[[str], Any],
    ) -> None:
        self.requests = requests
        self._sources = sources
        self._authenticator = authenticator
        self._policy = policy
        self._fetch_account = fetch_account
        self._tasks: set[asyncio.Task[None]] = set()

    async def get(self, request_id: str) -> DataRequest | None:
        return await self.requests.get(request_id)

    async def start_export(self, account_no: str, requested_by: str) -> DataRequest:
        request = await self.requests.create("export", account_no, requested_by, datetime.now(UTC))
        task = asyncio.create_task(self._export(request), name=f"data-export-{request.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return request

    async def _export(self, request: DataRequest) -> None:
        await run_export(self.requests, Exporter(self._sources()), request)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- the files ----------------------------------------------------------------------------

    async def download(self, request: Request) -> Response:
        request_id, fmt = request.path_params["id"], request.path_params["format"]
        if fmt not in _MEDIA:
            return JSONResponse({"error": "not found"}, status_code=404)
        try:
            principal = self._authenticator.authenticate(request.headers.get("authorization"))
        except AuthError:
            principal = None
        if principal is None:
            return JSONResponse({"error": "send a valid token"}, status_code=401)
        stored = await self.requests.get(request_id) if len(request_id) <= 36 else None
        if stored is None or stored.status is not RequestStatus.DONE:
            return JSONResponse({"error": "no such export"}, status_code=404)
        account = await self._fetch_account(stored.account_no)
        guard = Guard(self._policy(), principal)
        if (
            account is None
            or not guard.view(account).visible
            or not guard.can_write("requestDataExport", account).allowed
        ):
            return JSONResponse({"error": "not allowed"}, status_code=403)
        path: Path = self.requests.files(request_id)[fmt]
        if not path.is_file():
            return JSONResponse(
                {"error": "the export's file is on another instance or gone"}, status_code=404
            )
        return FileResponse(path, media_type=_MEDIA[fmt], filename=f"export-{stored.account_no}.{fmt}")

    def routes(self) -> list[Route]:
        return [Route("/privacy/exports/{id}.{format}", self.download, methods=["GET"])]
