"""The contracts system (legal contract register) demo, following ``demo/openapi/contracts.md``.

No base path, HTTP Basic auth, bare JSON arrays, ``YYYY-MM-DD`` dates, decimal-string money and
plain-text errors. It is slow (every call takes ``latency_ms``, default 20–60 ms) and serves at
most ``max_in_flight`` (4) calls per credentials at once: a fifth concurrent call is answered at
once with ``503 busy``. Its injected ``error_rate`` answers are that same ``503 busy``, the only
503 the register knows. Choices where the contract is silent: ``status`` also filters the
``updated_since`` poll; ties in ``starts_on`` are ordered by ``contract_id``; documents by upload
day, then name. The register makes no changes, so it has no change events.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import random
import re
import secrets
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from demo.common import DemoApp, DemoControl, is_open_path, json_response, open_db

DEFAULT_USER = "gateway"
DEFAULT_PASSWORD = "demo-contracts-password"
DEFAULT_MAX_IN_FLIGHT = 4
DEFAULT_LATENCY_MS = (20.0, 60.0)
STATUSES = ("draft", "active", "expired", "terminated")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def error(status: int, message: str) -> Response:
    """Plain-text errors; every 503 of the register is ``busy``."""
    if status == 503:
        message = "busy"
    headers = {"WWW-Authenticate": 'Basic realm="contracts"'} if status == 401 else None
    return PlainTextResponse(message, status_code=status, headers=headers)


def _credentials(scope: Scope) -> tuple[str, str] | None:
    header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


class RegisterGuard:
    """HTTP Basic auth, then at most ``max_in_flight`` calls per user, each taking ``latency_ms``."""

    def __init__(
        self, app: ASGIApp, users: Mapping[str, str], max_in_flight: int, latency_ms: tuple[float, float]
    ) -> None:
        self.app = app
        self.users = dict(users)
        self.max_in_flight = max_in_flight
        self.latency_ms = latency_ms
        self.in_flight: dict[str, int] = {}
        self.rng = random.Random()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_open_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        creds = _credentials(scope)
        if creds is None or not secrets.compare_digest(self.users.get(creds[0], "\x00"), creds[1]):
            message = "authentication required" if creds is None else "wrong user or password"
            await error(401, message)(scope, receive, send)
            return
        user = creds[0]
        if self.in_flight.get(user, 0) >= self.max_in_flight:
            await error(503, "busy")(scope, receive, send)
            return
        self.in_flight[user] = self.in_flight.get(user, 0) + 1
        try:
            low, high = self.latency_ms
            if high > 0:
                await asyncio.sleep(self.rng.uniform(low, high) / 1000.0)
            await self.app(scope, receive, send)
        finally:
            self.in_flight[user] -= 1


def _contract(row: dict[str, Any]) -> dict[str, Any]:
    row["auto_renew"] = bool(row["auto_renew"])
    row["confidential"] = bool(row["confidential"])
    return row


class _Contracts:
    def __init__(self, db_path: Path | str, *, in_memory: bool) -> None:
        self.db = open_db(db_path, in_memory=in_memory)

    async def list_contracts(self, request: Request) -> Response:
        qp = request.query_params
        party = qp.get("party_tax_id")
        since = qp.get("updated_since")
        status = qp.get("status")
        if (party is None) == (since is None):
            return error(400, "send exactly one of party_tax_id and updated_since")
        if status is not None and status not in STATUSES:
            return error(400, f"status must be one of {', '.join(STATUSES)}")
        extra = ("" if status is None else " AND status = ?", [] if status is None else [status])
        if party is not None:
            if "," in party:
                return error(400, "exactly one party_tax_id per call")
            if not party.strip():
                return error(400, "party_tax_id is empty")
            rows = self.db.execute(
                f"SELECT * FROM contracts WHERE party_tax_id = ?{extra[0]}"
                " ORDER BY starts_on DESC, contract_id",
                (party.strip(), *extra[1]),
            ).fetchall()
        else:
            assert since is not None
            try:
                if not _DATE_RE.match(since):
                    raise ValueError(since)
                day = date.fromisoformat(since)
            except ValueError:
                return error(400, "updated_since must be a date YYYY-MM-DD")
            rows = self.db.execute(
                f"SELECT * FROM contracts WHERE updated_on >= ?{extra[0]} ORDER BY contract_id",
                (day.isoformat(), *extra[1]),
            ).fetchall()
        return json_response([_contract(r) for r in rows])

    async def get_contract(self, request: Request) -> Response:
        contract_id = request.path_params["contract_id"]
        row = self.db.execute("SELECT * FROM contracts WHERE contract_id = ?", (contract_id,)).fetchone()
        if row is None:
            return error(404, f"no contract {contract_id}")
        documents = self.db.execute(
            "SELECT name, pages, uploaded_on FROM documents WHERE contract_id = ? ORDER BY uploaded_on, name",
            (contract_id,),
        ).fetchall()
        return json_response({**_contract(row), "documents": documents})


def create_app(
    db_path: Path | str,
    *,
    users: Mapping[str, str] | None = None,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    latency_ms: tuple[float, float] = DEFAULT_LATENCY_MS,
    in_memory: bool = False,
) -> DemoApp:
    """The contract register over ``db_path`` (``contracts.sqlite``); ``users`` maps user → password."""
    control = DemoControl("contracts", error)
    register = _Contracts(db_path, in_memory=in_memory)
    routes = [
        Route("/contracts", register.list_contracts, methods=["GET"]),
        Route("/contracts/{contract_id}", register.get_contract, methods=["GET"]),
    ]
    guard = Middleware(
        RegisterGuard,
        users=users if users is not None else {DEFAULT_USER: DEFAULT_PASSWORD},
        max_in_flight=max_in_flight,
        latency_ms=latency_ms,
    )
    app = DemoApp(control, routes, guards=[guard])
    app.state.db = register.db
    return app
