"""The support system (helpdesk) demo, following ``demo/openapi/support.md``.

Base path ``/v2``, ``Authorization: Bearer`` auth, epoch-second times, ``{"errors": [...]}``
errors, opaque cursor paging, and a rate limit per token: at most ``rate`` calls in any one-second
window; past it ``429`` with ``Retry-After`` and nothing done (a refused call does not count).
Choices where the contract is silent: lists without a stated order (requesters, satisfaction) are
ordered by e-mail; ``satisfaction.average`` is rounded to two decimals; a repeated ``X-Request-Id``
always gets the first answer, whatever the body; bad bodies are 400.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import re
import secrets
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from demo.common import (
    ChangeHook,
    DemoApp,
    DemoControl,
    IdempotencyStore,
    dedupe,
    is_open_path,
    json_response,
    now_epoch,
    open_db,
    read_json,
    split_csv,
)

DEFAULT_TOKEN = "demo-support-token"
DEFAULT_RATE = 50.0
MAX_EMAILS = 200
MAX_LIMIT = 500
DEFAULT_LIMIT = 100
STATUSES = ("new", "open", "pending", "solved", "closed")
CATEGORIES = ("complaint", "question", "incident", "request")
PRIORITIES = ("low", "normal", "high", "urgent")
CHANNELS = ("email", "phone", "chat", "web")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def error(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    """The support error shape ``{"errors": [{"title", "detail"}]}``."""
    title = _TITLES.get(status, "Error")
    return json_response({"errors": [{"title": title, "detail": detail}]}, status, headers)


class RateLimiter:
    """At most ``rate`` calls per token in any one-second window."""

    def __init__(self, rate: float) -> None:
        self.limit = max(1, math.floor(rate))
        self.calls: dict[str, deque[float]] = {}

    def retry_after(self, token: str) -> int | None:
        """Admit a call (None) or say how many whole seconds to wait."""
        now = time.monotonic()
        calls = self.calls.setdefault(token, deque())
        while calls and now - calls[0] >= 1.0:
            calls.popleft()
        if len(calls) >= self.limit:
            return max(1, math.ceil(calls[0] + 1.0 - now))
        calls.append(now)
        return None


class BearerGuard:
    """``Authorization: Bearer <token>`` and the per-token rate limit."""

    def __init__(self, app: ASGIApp, tokens: frozenset[str], limiter: RateLimiter) -> None:
        self.app = app
        self.tokens = tokens
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not is_open_path(scope["path"]):
            header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            scheme, _, token = header.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or token not in self.tokens:
                detail = "missing bearer token" if not header else "invalid bearer token"
                await error(401, detail)(scope, receive, send)
                return
            wait = self.limiter.retry_after(token)
            if wait is not None:
                detail = f"more than {self.limiter.limit} calls a second; retry in {wait} s"
                await error(429, detail, {"Retry-After": str(wait)})(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _BadRequest(Exception):
    pass


def _emails(values: Any, name: str) -> list[str]:
    if isinstance(values, str):
        values = split_csv(values)
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise _BadRequest(f"{name} must list at least one e-mail")
    if len(values) > MAX_EMAILS:
        raise _BadRequest(f"at most {MAX_EMAILS} e-mails per call")
    return sorted(dedupe([v.strip().lower() for v in values]))


def _ticket(row: dict[str, Any]) -> dict[str, Any]:
    score = row.pop("sat_score")
    comment = row.pop("sat_comment")
    row.pop("rated_at")
    row["satisfaction"] = None if score is None else {"score": score, "comment": comment or ""}
    return row


class _Support:
    def __init__(self, db_path: Path | str, *, in_memory: bool, control: DemoControl) -> None:
        self.db = open_db(db_path, in_memory=in_memory)
        self.control = control
        self.requests = IdempotencyStore()

    def emit(self, kind: str, ticket: dict[str, Any]) -> None:
        self.control.emit(
            {
                "id": f"evt-{secrets.token_hex(12)}",
                "kind": kind,
                "ticket_id": ticket["id"],
                "requester_email": ticket["requester_email"],
                "at": ticket["updated_at"],
            }
        )

    async def search(self, request: Request) -> Response:
        try:
            body = await read_json(request)
            if not isinstance(body, dict):
                raise _BadRequest("the body must be a JSON object")
            return self._search(body)
        except (ValueError, _BadRequest) as exc:
            return error(400, str(exc))

    def _search(self, body: dict[str, Any]) -> Response:
        emails = _emails(body.get("requester_emails"), "requester_emails")
        statuses = body.get("status")
        if statuses is not None and (
            not isinstance(statuses, list) or not all(isinstance(s, str) and s in STATUSES for s in statuses)
        ):
            raise _BadRequest(f"status must list ticket statuses ({', '.join(STATUSES)})")
        updated_after = body.get("updated_after")
        if updated_after is not None and (
            isinstance(updated_after, bool) or not isinstance(updated_after, int)
        ):
            raise _BadRequest("updated_after must be epoch seconds")
        limit = body.get("limit", DEFAULT_LIMIT)
        if limit is None:
            limit = DEFAULT_LIMIT
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise _BadRequest(f"limit must be between 1 and {MAX_LIMIT}")
        query_key = hashlib.sha256(
            orjson.dumps([emails, sorted(set(statuses or [])), updated_after])
        ).hexdigest()[:16]
        where = [f"requester_email IN ({', '.join('?' * len(emails))})"]
        args: list[Any] = list(emails)
        if statuses:
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            args += statuses
        if updated_after is not None:
            where.append("updated_at >= ?")
            args.append(updated_after)
        cursor = body.get("cursor")
        if cursor is not None:
            email, created, ticket_id = _decode_cursor(cursor, query_key)
            where.append(
                "(requester_email > ? OR (requester_email = ? AND"
                " (created_at < ? OR (created_at = ? AND id < ?))))"
            )
            args += [email, email, created, created, ticket_id]
        rows = self.db.execute(
            f"SELECT * FROM tickets WHERE {' AND '.join(where)}"
            " ORDER BY requester_email, created_at DESC, id DESC LIMIT ?",
            (*args, limit + 1),
        ).fetchall()
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1]
            next_cursor = _encode_cursor(last["requester_email"], last["created_at"], last["id"], query_key)
        return json_response({"tickets": [_ticket(r) for r in rows], "next_cursor": next_cursor})

    async def get_ticket(self, request: Request) -> Response:
        raw = request.path_params["id"]
        ticket = None
        if raw.isdigit():
            ticket = self.db.execute("SELECT * FROM tickets WHERE id = ?", (int(raw),)).fetchone()
        if ticket is None:
            return error(404, f"no ticket {raw}")
        comments = self.db.execute(
            "SELECT id, author, body, public, created_at FROM comments WHERE ticket_id = ? ORDER BY id",
            (ticket["id"],),
        ).fetchall()
        for comment in comments:
            comment["public"] = bool(comment["public"])
        return json_response({"ticket": _ticket(ticket), "comments": comments})

    async def create_ticket(self, request: Request) -> Response:
        request_id = request.headers.get("x-request-id")
        scoped = f"{request.headers.get('authorization', '')}\x00{request_id}"
        try:
            body: Any = await read_json(request)
        except ValueError as exc:
            body = exc
        # From here on nothing awaits: a concurrent repeat sees the stored answer.
        if request_id:
            stored = self.requests.get(scoped)
            if stored is not None:
                return stored.replay()
        try:
            if isinstance(body, ValueError):
                raise body
            response = self._create(body)
        except (ValueError, _BadRequest) as exc:
            response = error(400, str(exc))
        if request_id:
            self.requests.put(scoped, "", response)
        return response

    def _create(self, body: Any) -> Response:
        if not isinstance(body, dict):
            raise _BadRequest("the body must be a JSON object")
        problems = []
        for name in ("requester_email", "subject", "category", "priority", "channel", "body"):
            if not isinstance(body.get(name), str) or not body[name].strip():
                problems.append(f"{name} is required")
        for name, allowed in (("category", CATEGORIES), ("priority", PRIORITIES), ("channel", CHANNELS)):
            if isinstance(body.get(name), str) and body[name] not in allowed:
                problems.append(f"{name} must be one of {', '.join(allowed)}")
        email = body.get("requester_email")
        if isinstance(email, str) and email and not EMAIL_RE.match(email.strip()):
            problems.append("requester_email is not an e-mail address")
        if problems:
            raise _BadRequest("; ".join(problems))
        email = str(email).strip().lower()
        now = now_epoch()
        self.db.execute(
            "INSERT OR IGNORE INTO requesters VALUES (?, ?, NULL, 0, 'zh-CN', ?)",
            (email, email.split("@")[0], now),
        )
        cursor = self.db.execute(
            "INSERT INTO tickets (requester_email, subject, category, priority, status, channel, assignee,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, 'new', ?, NULL, ?, ?)",
            (email, body["subject"], body["category"], body["priority"], body["channel"], now, now),
        )
        ticket_id = cursor.lastrowid
        self.db.execute(
            "INSERT INTO comments (ticket_id, author, body, public, created_at) VALUES (?, ?, ?, 1, ?)",
            (ticket_id, email, body["body"], now),
        )
        self.db.commit()
        ticket = _ticket(self.db.execute("SELECT * FROM tickets WHERE id = ?", (ticket_id,)).fetchone())
        self.emit("ticket.created", ticket)
        return json_response({"ticket": ticket}, 201)

    async def requesters(self, request: Request) -> Response:
        try:
            emails = _emails(request.query_params.get("emails", ""), "emails")
        except _BadRequest as exc:
            return error(400, str(exc))
        rows = self.db.execute(
            f"SELECT * FROM requesters WHERE email IN ({', '.join('?' * len(emails))}) ORDER BY email", emails
        ).fetchall()
        for row in rows:
            row["vip"] = bool(row["vip"])
        return json_response({"requesters": rows})

    async def satisfaction(self, request: Request) -> Response:
        try:
            emails = _emails(request.query_params.get("emails", ""), "emails")
        except _BadRequest as exc:
            return error(400, str(exc))
        rows = self.db.execute(
            "SELECT requester_email, count(*) AS rated, avg(sat_score) AS average, max(rated_at) AS last"
            f" FROM tickets WHERE requester_email IN ({', '.join('?' * len(emails))})"
            " AND sat_score IS NOT NULL GROUP BY requester_email",
            emails,
        ).fetchall()
        found = {r["requester_email"]: r for r in rows}
        summaries = []
        for email in emails:
            row = found.get(email)
            summaries.append(
                {
                    "email": email,
                    "rated": row["rated"] if row else 0,
                    "average": round(row["average"], 2) if row else None,
                    "last_rated_at": row["last"] if row else None,
                }
            )
        return json_response({"summaries": summaries})


def _encode_cursor(email: str, created: int, ticket_id: int, query_key: str) -> str:
    raw = orjson.dumps([email, created, ticket_id, query_key])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: Any, query_key: str) -> tuple[str, int, int]:
    if not isinstance(cursor, str):
        raise _BadRequest("cursor must be a string or null")
    try:
        email, created, ticket_id, key = orjson.loads(
            base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        )
    except (ValueError, TypeError, binascii.Error):
        raise _BadRequest("cursor is not one this system gave out") from None
    if key != query_key:
        raise _BadRequest("cursor belongs to a different search: repeat the same body with it")
    if not isinstance(email, str) or not isinstance(created, int) or not isinstance(ticket_id, int):
        raise _BadRequest("cursor is not one this system gave out")
    return email, created, ticket_id


def create_app(
    db_path: Path | str,
    *,
    tokens: Iterable[str] = (DEFAULT_TOKEN,),
    rate: float = DEFAULT_RATE,
    in_memory: bool = False,
    on_change: ChangeHook | None = None,
) -> DemoApp:
    """The support system over ``db_path`` (``support.sqlite``); ``rate`` calls a second per token."""
    control = DemoControl("support", error, on_change)
    support = _Support(db_path, in_memory=in_memory, control=control)
    routes = [
        Route("/v2/tickets/search", support.search, methods=["POST"]),
        Route("/v2/tickets/{id}", support.get_ticket, methods=["GET"]),
        Route("/v2/tickets", support.create_ticket, methods=["POST"]),
        Route("/v2/requesters", support.requesters, methods=["GET"]),
        Route("/v2/satisfaction", support.satisfaction, methods=["GET"]),
    ]
    limiter = RateLimiter(rate)
    app = DemoApp(
        control, routes, guards=[Middleware(BearerGuard, tokens=frozenset(tokens), limiter=limiter)]
    )
    app.state.db = support.db
    app.state.limiter = limiter
    return app
