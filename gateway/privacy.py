"""A data subject's exports and erasures, as the gateway runs them: one background task per export (its
progress in the database, so every instance can answer ``dataRequest``), and ``GET
/privacy/exports/<id>.json|html`` for the files, to a caller the policy lets export that customer
(``writes.requestDataExport``); one background task per approved (or resumed) erasure
(features/erasure.py), its steps in the database.

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

from features.erasure import Eraser, Erasure, ErasureRefused, Erasures, ErasureStatus
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
        eraser: Callable[[], Eraser] | None = None,
    ) -> None:
        self.requests = requests
        self._make_eraser = eraser
        self._eraser: Eraser | None = None
        self._sources = sources
        self._authenticator = authenticator
        self._policy = policy
        self._fetch_account = fetch_account
        self._tasks: set[asyncio.Task[None]] = set()

    async def get(self, request_id: str) -> DataRequest | None:
        return await self.requests.get(request_id)

    async def start_export(self, account_no: str, requested_by: str) -> DataRequest:
        request = await self.requests.create("export", account_no, requested_by, datetime.now(UTC))
        self._background(self._export(request), f"data-export-{request.id}")
        return request

    async def _export(self, request: DataRequest) -> None:
        await run_export(self.requests, Exporter(self._sources()), request)

    def _background(self, work: Any, name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- erasures -----------------------------------------------------------------------------

    @property
    def eraser(self) -> Eraser:
        if self._eraser is None:
            if self._make_eraser is None:
                raise LookupError("erasure is not available on this gateway")
            self._eraser = self._make_eraser()
        return self._eraser

    @property
    def erasures(self) -> Erasures:
        return self.eraser.erasures

    async def request_erasure(self, account_no: str, reason: str, requested_by: str) -> Erasure:
        return await self.erasures.create(account_no, reason, requested_by, datetime.now(UTC))

    async def get_erasure(self, erasure_id: str) -> Erasure | None:
        return await self.erasures.get(erasure_id) if len(erasure_id) <= 36 else None

    async def list_erasures(self, statuses: list[ErasureStatus] | None, first: int) -> list[Erasure]:
        return await self.erasures.list(statuses, first)

    async def decide_erasure(self, erasure_id: str, approve: bool, by: str, note: str | None) -> Erasure:
        erasure = await self.erasures.decide(
            erasure_id, approve=approve, by=by, note=note, at=datetime.now(UTC)
        )
        if erasure.status is ErasureStatus.RUNNING:
            self._background(self._erase(erasure), f"erasure-{erasure.id}")
        return erasure

    async def resume_erasure(self, erasure_id: str) -> Erasure:
        erasure = await self.erasures.claim(erasure_id, datetime.now(UTC))
        self._background(self._erase(erasure), f"erasure-{erasure.id}")
        return erasure

    async def resume_stopped(self) -> int:
        """Erasures left running by an instance that stopped (no heartbeat for ``STALE_AFTER``) run on
        here; a failed one waits for a person (``resumeErasure``). Returns how many were taken."""
        if self._make_eraser is None:
            return 0
        taken = 0
        for erasure in await self.erasures.list([ErasureStatus.RUNNING], first=50):
            if any(t.get_name() == f"erasure-{erasure.id}" for t in self._tasks):
                continue
            try:
                claimed = await self.erasures.claim(erasure.id, datetime.now(UTC))
            except ErasureRefused:
                continue  # still beating elsewhere
            log.warning("erasure %s: its runner stopped; running it on here", erasure.id)
            self._background(self._erase(claimed), f"erasure-{claimed.id}")
            taken += 1
        return taken

    async def _erase(self, erasure: Erasure) -> None:
        ended = await self.eraser.run(erasure)
        log.info("erasure %s ended: %s", ended.id, ended.status.value)

    async def wait_idle(self) -> None:
        """Wait for the running exports and erasures (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

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
