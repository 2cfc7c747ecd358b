"""Shared demo infrastructure: call stats, injected faults, control routes, JSON, idempotency.

Every demo system is a :class:`DemoApp`. Around its own routes it serves, without auth:

- ``GET /health`` → ``200 {"status": "ok"}``;
- ``GET /_demo/stats`` and ``POST /_demo/stats/reset``: calls per ``METHOD route-template``, with
  the answers' statuses and the peak number of calls in flight (overall and per endpoint);
- ``GET /_demo/faults`` and ``POST /_demo/faults``: the injected faults. A POST replaces all of
  them; ``{}`` (or an empty body) clears them. Fields:

  - ``latency_ms`` / ``jitter_ms``: every call waits ``latency_ms + uniform(0, jitter_ms)``
    (an ``asyncio.sleep``, so calls still run concurrently);
  - ``error_rate`` (0..1): that share of calls gets the system's own 503 answer;
  - ``hang``: calls get no answer until the fault is cleared (then they proceed) or the client
    gives up (when the server stops, they get the system's 503);
  - ``down``: the system is unreachable: the server closes the connection without an answer
    (the client sees "server disconnected"), ``/health`` included. Only ``/_demo/*`` still answers.
    Outside uvicorn (no transport to close) the answer is a bare ``503`` with ``Connection: close``.

``/_demo/*`` and ``/health`` are not counted and not subject to faults (except ``down``).
Order on each call: stats → ``down`` → the system's guard (auth, rate or in-flight limits) →
``hang`` → latency → ``error_rate`` → the endpoint. So a system's own overload answers (429,
503 busy) come at once, and latency counts as time in flight.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import random
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("demo")

CONTROL_PREFIX = "/_demo/"
HEALTH_PATH = "/health"
IDEMPOTENCY_TTL_S = 24 * 3600.0

ChangeHook = Callable[[dict[str, Any]], None]
ErrorFactory = Callable[[int, str], Response]


def no_change_hook(event: dict[str, Any]) -> None:
    """The default ``on_change``: events go nowhere (webhook delivery is a later concern)."""


def is_open_path(path: str) -> bool:
    """``/health`` and ``/_demo/*`` need no auth, are not counted and not faulted."""
    return path == HEALTH_PATH or path.startswith(CONTROL_PREFIX)


class ORJSONResponse(JSONResponse):
    """A JSON response encoded with orjson (UTF-8, not ASCII-escaped)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def json_response(content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return ORJSONResponse(content, status_code=status_code, headers=headers)


async def read_json(request: Request) -> Any:
    """The request body parsed as JSON; raises ValueError when it is not JSON."""
    raw = await request.body()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError("the body is not valid JSON") from exc


def now_epoch() -> int:
    return int(time.time())


def iso_utc(ts: float) -> str:
    """Epoch seconds → ``2025-03-02T08:15:00Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def parse_time(text: str) -> int | None:
    """An ISO 8601 time (``Z``, an offset, or none = UTC) → epoch seconds, rounded up; None if bad."""
    try:
        value = datetime.fromisoformat(text.strip().replace(" ", "+"))
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return math.ceil(value.timestamp())


def split_csv(text: str) -> list[str]:
    """``"a, b,,c"`` → ``["a", "b", "c"]``."""
    return [part.strip() for part in text.split(",") if part.strip()]


def dedupe(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))


def open_db(db_path: Path | str, *, in_memory: bool = False) -> sqlite3.Connection:
    """One connection for one app. ``in_memory`` copies the file: writes then do not persist."""
    path = Path(db_path)
    if not path.is_file():
        raise FileNotFoundError(f"no demo database at {path}")
    if in_memory:
        conn = sqlite3.connect(":memory:", check_same_thread=False)
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as source:
            source.backup(conn)
    else:
        conn = sqlite3.connect(path, check_same_thread=False)
    conn.row_factory = _dict_row
    return conn


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    return {col[0]: value for col, value in zip(cursor.description, row, strict=True)}


# --- faults ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Faults:
    """The injected faults of one system; the default is none."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    error_rate: float = 0.0
    down: bool = False
    hang: bool = False

    @classmethod
    def from_json(cls, body: Any) -> Faults:
        """Parse a ``POST /_demo/faults`` body; raises ValueError on unknown fields or bad values."""
        if body is None:
            return cls()
        if not isinstance(body, dict):
            raise ValueError("the body must be a JSON object")
        unknown = set(body) - {"latency_ms", "jitter_ms", "error_rate", "down", "hang"}
        if unknown:
            raise ValueError(f"unknown fields: {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        for name in ("latency_ms", "jitter_ms", "error_rate"):
            if name in body:
                value = body[name]
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise ValueError(f"{name} must be a number >= 0")
                values[name] = float(value)
        if values.get("error_rate", 0.0) > 1:
            raise ValueError("error_rate must be between 0 and 1")
        for name in ("down", "hang"):
            if name in body:
                if not isinstance(body[name], bool):
                    raise ValueError(f"{name} must be true or false")
                values[name] = body[name]
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def delay_s(self, rng: random.Random) -> float:
        jitter = rng.uniform(0, self.jitter_ms) if self.jitter_ms else 0.0
        return (self.latency_ms + jitter) / 1000.0


# --- stats -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Counter:
    count: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    statuses: dict[str, int] = field(default_factory=dict)


class CallStats:
    """Calls per endpoint (``METHOD route-template``), their statuses and peak concurrency."""

    def __init__(self) -> None:
        self._total = _Counter()
        self._endpoints: dict[str, _Counter] = {}
        self._since = time.time()

    def begin(self, endpoint: str) -> None:
        for counter in (self._total, self._endpoints.setdefault(endpoint, _Counter())):
            counter.count += 1
            counter.in_flight += 1
            counter.peak_in_flight = max(counter.peak_in_flight, counter.in_flight)

    def end(self, endpoint: str, status: str) -> None:
        for counter in (self._total, self._endpoints[endpoint]):
            counter.in_flight -= 1
            counter.statuses[status] = counter.statuses.get(status, 0) + 1

    def reset(self) -> None:
        """Zero the counts; peaks restart from the calls in flight now."""
        for counter in (self._total, *self._endpoints.values()):
            counter.count = 0
            counter.statuses = {}
            counter.peak_in_flight = counter.in_flight
        self._endpoints = {k: v for k, v in self._endpoints.items() if v.in_flight}
        self._since = time.time()

    def snapshot(self) -> dict[str, Any]:
        def one(counter: _Counter) -> dict[str, Any]:
            return {
                "count": counter.count,
                "in_flight": counter.in_flight,
                "peak_in_flight": counter.peak_in_flight,
                "statuses": dict(sorted(counter.statuses.items())),
            }

        return {
            "since": iso_utc(self._since),
            **one(self._total),
            "endpoints": {name: one(c) for name, c in sorted(self._endpoints.items())},
        }


# --- the control state of one system ----------------------------------------------------------


class DemoControl:
    """What ``/_demo/*`` acts on for one system: its stats, faults and change hook."""

    def __init__(self, system: str, error: ErrorFactory, on_change: ChangeHook | None = None) -> None:
        self.system = system
        self.error = error
        self.on_change: ChangeHook = on_change or no_change_hook
        self.faults = Faults()
        self.stats = CallStats()
        self.closing = False  # set when the server stops: hanging calls give up

    def unavailable(self) -> Response:
        return self.error(503, "the service is temporarily unavailable")

    def emit(self, event: dict[str, Any]) -> None:
        """Hand a change event to ``on_change``; a failing hook never fails the write."""
        try:
            self.on_change(event)
        except Exception:
            log.exception("%s: on_change hook failed", self.system)


# --- middleware ------------------------------------------------------------------------------


class FaultMiddleware:
    """Applies ``hang``, latency and ``error_rate`` (inside the system's guard)."""

    def __init__(self, app: ASGIApp, control: DemoControl) -> None:
        self.app = app
        self.control = control
        self.rng = random.Random()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_open_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        if self.control.faults.hang:
            receive, gone = await self._hang(receive)
            if gone:
                return
            if self.control.closing:  # the server stops: the hung call gets the system's 503
                await self.control.unavailable()(scope, receive, send)
                return
        faults = self.control.faults
        delay = faults.delay_s(self.rng)
        if delay > 0:
            await asyncio.sleep(delay)
        if faults.error_rate > 0 and self.rng.random() < faults.error_rate:
            await self.control.unavailable()(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _hang(self, receive: Receive) -> tuple[Receive, bool]:
        """Wait while ``hang`` is set; answer a receive that replays the body, and whether the client left."""
        body: list[Message] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return receive, True
            body.append(message)
            if not message.get("more_body", False):
                break
        disconnect = asyncio.ensure_future(receive())
        try:
            while self.control.faults.hang and not self.control.closing:
                done, _ = await asyncio.wait({disconnect}, timeout=0.05)
                if done:
                    return receive, True
        finally:
            disconnect.cancel()

        async def replay() -> Message:
            return body.pop(0) if body else await receive()

        return replay, False


async def _drop_connection(scope: Scope, receive: Receive, send: Send) -> None:
    """Close the client's connection without an answer (``down``)."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    # uvicorn's protocol's transport: asyncio's, or uvloop's (not a subclass of asyncio.BaseTransport)
    if transport is not None and callable(getattr(transport, "close", None)):
        transport.close()
        for _ in range(3):  # let uvicorn notice the closed connection: it then sends nothing
            await asyncio.sleep(0)
        return
    response = Response("down", status_code=503, media_type="text/plain", headers={"connection": "close"})
    await response(scope, receive, send)


# --- the app ---------------------------------------------------------------------------------


class DemoApp(Starlette):
    """A departmental system: its routes plus ``/health``, ``/_demo/*``, stats and faults."""

    def __init__(
        self,
        control: DemoControl,
        routes: Sequence[BaseRoute],
        *,
        guards: Sequence[Middleware] = (),
    ) -> None:
        own = [
            Route(HEALTH_PATH, _health, methods=["GET"]),
            Route("/_demo/stats", self._get_stats, methods=["GET"]),
            Route("/_demo/stats/reset", self._reset_stats, methods=["POST"]),
            Route("/_demo/faults", self._get_faults, methods=["GET"]),
            Route("/_demo/faults", self._set_faults, methods=["POST"]),
        ]
        super().__init__(
            routes=[*own, *routes],
            middleware=[*guards, Middleware(FaultMiddleware, control=control)],
            exception_handlers={HTTPException: self._http_error, Exception: self._server_error},
        )
        self.control = control
        self.state.control = control

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(CONTROL_PREFIX):
            await super().__call__(scope, receive, send)
            return
        if path == HEALTH_PATH:
            if self.control.faults.down:
                await _drop_connection(scope, receive, send)
            else:
                await super().__call__(scope, receive, send)
            return
        endpoint = self.endpoint_of(scope)
        status = "disconnected"

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = str(message["status"])
            await send(message)

        self.control.stats.begin(endpoint)
        try:
            if self.control.faults.down:
                status = "dropped"
                await _drop_connection(scope, receive, send)
            else:
                await super().__call__(scope, receive, recording_send)
        finally:
            self.control.stats.end(endpoint, status)

    def endpoint_of(self, scope: Scope) -> str:
        """``GET /api/v1/accounts/{account_no}`` for a call to ``GET /api/v1/accounts/A100234``."""
        partial: str | None = None
        for route in self.router.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return f"{scope['method']} {getattr(route, 'path', '?')}"
            if match is Match.PARTIAL and partial is None:
                partial = getattr(route, "path", "?")
        return f"{scope['method']} {partial or '<unmatched>'}"

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = "no such endpoint" if exc.status_code == 404 else str(exc.detail)
        return self.control.error(exc.status_code, message)

    async def _server_error(self, request: Request, exc: Exception) -> Response:
        log.error("%s: %s %s failed", self.control.system, request.method, request.url.path, exc_info=exc)
        return self.control.error(500, "internal error")

    async def _get_stats(self, request: Request) -> Response:
        return json_response({"system": self.control.system, **self.control.stats.snapshot()})

    async def _reset_stats(self, request: Request) -> Response:
        self.control.stats.reset()
        return await self._get_stats(request)

    async def _get_faults(self, request: Request) -> Response:
        return json_response(self.control.faults.to_json())

    async def _set_faults(self, request: Request) -> Response:
        raw = await request.body()
        try:
            self.control.faults = Faults.from_json(orjson.loads(raw) if raw.strip() else None)
        except (ValueError, orjson.JSONDecodeError) as exc:
            return json_response({"error": str(exc)}, 400)
        return json_response(self.control.faults.to_json())


async def _health(request: Request) -> Response:
    return json_response({"status": "ok"})


# --- idempotency -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    fingerprint: str
    status: int
    body: bytes
    headers: dict[str, str]
    media_type: str | None
    at: float

    def replay(self) -> Response:
        return Response(self.body, status_code=self.status, headers=self.headers, media_type=self.media_type)


def fingerprint(method: str, path: str, body: Any) -> str:
    """What makes two calls "the same request": method, path and the body as JSON (keys sorted)."""
    encoded = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(f"{method} {path} ".encode() + encoded).hexdigest()


class IdempotencyStore:
    """First answers by key, kept for 24 h."""

    def __init__(self, ttl_s: float = IDEMPOTENCY_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._answers: dict[str, StoredAnswer] = {}

    def get(self, key: str) -> StoredAnswer | None:
        answer = self._answers.get(key)
        if answer is not None and time.time() - answer.at > self.ttl_s:
            del self._answers[key]
            return None
        return answer

    def put(self, key: str, fingerprint: str, response: Response) -> None:
        now = time.time()
        if len(self._answers) > 10000:
            self._answers = {k: v for k, v in self._answers.items() if now - v.at <= self.ttl_s}
        headers = {
            k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")
        }
        self._answers[key] = StoredAnswer(
            fingerprint, response.status_code, bytes(response.body), headers, response.media_type, now
        )
