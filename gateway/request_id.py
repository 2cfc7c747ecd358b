"""A request id on every request, and one log line at its end: ``RequestIdMiddleware``.

Pure ASGI. For each HTTP request (and WebSocket) it takes the caller's ``X-Request-Id`` when short
and plain (``accept_request_id``: the one rule), else makes one; makes it the id seen downstream (the
request's headers) and in the logs (``request_id_var``); returns it in the response headers; opens
the request's upstream deadline (``connectors.resilience.deadline_scope``, HTTP only); and logs one
line at the end: method, route path, status, duration, the GraphQL operation and the APQ outcome —
never a query string, body, header or token. A client that hung up is logged 499 at INFO.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from contextvars import ContextVar

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connectors.resilience import deadline_scope

__all__ = ["RequestIdMiddleware", "accept_request_id", "current_request_id", "request_id_var"]

log = logging.getLogger("customer_graph.gateway")
_OPERATION = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")

request_id_var: ContextVar[str | None] = ContextVar("customer_graph_request_id", default=None)

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def current_request_id() -> str | None:
    """The id of the request being served in this context, if any."""
    return request_id_var.get()


def accept_request_id(given: str | None) -> str:
    """The caller's id when it is short and plain (letters, digits, ``-_.:``, ≤ 128), else a new one."""
    if given and _REQUEST_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


_HEADER = b"x-request-id"
CLIENT_CLOSED = 499  # logged for a request whose client disconnected before the answer (nginx's code)


class RequestIdMiddleware:
    """Pure ASGI. For each HTTP request (and WebSocket): take the caller's ``X-Request-Id`` when
    short and plain, else make one; make it the id seen downstream (the request's headers) and in
    the logs (``request_id_var``); return it in the response headers; for HTTP, open the request's
    ``deadline`` (seconds; ``None``: none); and log one line at the end: method, route path,
    status, duration_ms."""

    def __init__(
        self, app: ASGIApp, *, deadline: float | None = None, logger: logging.Logger | None = None
    ) -> None:
        self.app = app
        self.deadline = deadline
        self.log = logger or log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = None
        headers: list[tuple[bytes, bytes]] = []
        for name, value in scope.get("headers", ()):
            if name == _HEADER:
                given = value.decode("latin-1")
            else:
                headers.append((name, value))
        request_id = accept_request_id(given)
        encoded = request_id.encode("ascii")
        headers.append((_HEADER, encoded))
        inner: Scope = {**scope, "headers": headers}
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            kind_ = message["type"]
            if kind_ in ("http.response.start", "websocket.accept", "websocket.http.response.start"):
                status = message.get("status", 101)
                out = [(k, v) for k, v in message.get("headers", ()) if k.lower() != _HEADER]
                out.append((_HEADER, encoded))
                message = {**message, "headers": out}
            elif kind_ == "websocket.close" and not status:
                status = 403
            await send(message)

        token = request_id_var.set(request_id)
        started = time.perf_counter()
        try:
            with deadline_scope(self.deadline if kind == "http" else None):
                await self.app(inner, receive, send_with_id)
        except ClientDisconnect:
            status = status or CLIENT_CLOSED  # the client went away: nothing failed here, nothing to send
        except BaseException:
            status = status or 500
            raise
        finally:
            route = inner.get("route")
            path = getattr(route, "path", None)
            extra: dict[str, object] = {
                "method": scope.get("method", "WS") if kind == "http" else "WS",
                "path": path if isinstance(path, str) else "unmatched",
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            }
            state = inner.get("state") or {}
            operation = state.get("operation")
            if isinstance(operation, str):  # a GraphQL name (a plain identifier), never a value
                extra["operation"] = operation if _OPERATION.fullmatch(operation) else "other"
            if state.get("apq"):
                extra["apq"] = state["apq"]  # hit | miss | registered | unsupported
            level = logging.ERROR if status >= 500 else logging.INFO
            self.log.log(level, "request", extra=extra)
            request_id_var.reset(token)
