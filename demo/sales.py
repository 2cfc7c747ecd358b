"""The sales system (CRM) demo, following ``demo/openapi/sales.md``.

Base path ``/api/v1``, ``X-Api-Key`` auth, ``{"data": [...]}`` envelopes, ISO 8601 UTC times,
integer cents. Choices where the contract is silent: a repeated ``Idempotency-Key`` with a
different request (method, path or body) is ``409 conflict``; ``version`` and ``updated_at`` move
only when a write changes something; an unknown ``owner_id`` or ``by_user`` is 422.
"""

from __future__ import annotations

import re
import secrets
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
    fingerprint,
    is_open_path,
    iso_utc,
    json_response,
    now_epoch,
    open_db,
    parse_time,
    read_json,
    split_csv,
)

DEFAULT_API_KEY = "demo-sales-key"
MAX_IDS = 100
MAX_PER_PAGE = 200
DEFAULT_PER_PAGE = 50
REGIONS = ("east", "north", "south", "west", "central")
STATUSES = ("lead", "prospect", "customer", "churned")
ACTIVITY_TYPES = ("call", "email", "meeting", "visit", "wechat")
PATCHABLE = ("contact_name", "title", "email", "phone", "address", "region", "status")
LIST_PARAMS = ("page", "per_page", "region", "status", "owner_id", "unowned", "q", "updated_since")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_TEXT = 500

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "bad_request",
    409: "conflict",
    412: "precondition_failed",
    422: "invalid",
}


def error(status: int, message: str, fields: dict[str, str] | None = None) -> Response:
    """The sales error shape ``{"error": {"code", "message"[, "fields"]}}``."""
    code = _CODES.get(status, "unavailable" if status >= 500 else "bad_request")
    body: dict[str, Any] = {"code": code, "message": message}
    if fields is not None:
        body["fields"] = fields
    return json_response({"error": body}, status)


class _BadRequest(Exception):
    pass


class ApiKeyGuard:
    """``X-Api-Key`` on every call but ``/health`` and ``/_demo/*``."""

    def __init__(self, app: ASGIApp, keys: frozenset[str]) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not is_open_path(scope["path"]):
            key = dict(scope["headers"]).get(b"x-api-key", b"").decode("latin-1")
            if key not in self.keys:
                message = "missing X-Api-Key" if not key else "invalid X-Api-Key"
                await error(401, message)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _etag(version: int) -> dict[str, str]:
    return {"ETag": f'"{version}"'}


def _if_match_ok(header: str | None, version: int) -> bool:
    if header is None:
        return True
    for tag in header.split(","):
        value = tag.strip()
        if value == "*":
            return True
        value = value.removeprefix("W/").strip('"')
        if value == str(version):
            return True
    return False


class _Sales:
    def __init__(self, db_path: Path | str, *, in_memory: bool, control: DemoControl) -> None:
        self.db = open_db(db_path, in_memory=in_memory)
        self.control = control
        self.idempotency = IdempotencyStore()
        row = self.db.execute(
            "SELECT max(CAST(substr(activity_id, 3) AS INTEGER)) AS n FROM activities"
        ).fetchone()
        self.next_activity = int(row["n"] or 0) + 1

    # -- helpers --

    def account(self, account_no: str) -> dict[str, Any] | None:
        row: dict[str, Any] | None = self.db.execute(
            "SELECT * FROM accounts WHERE account_no = ?", (account_no,)
        ).fetchone()
        return row

    def user_exists(self, user_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM users WHERE user_id = ?", (user_id,)).fetchone() is not None

    @staticmethod
    def account_nos(request: Request) -> list[str]:
        raw = request.query_params.get("account_nos")
        values = split_csv(raw or "")
        if not values:
            raise _BadRequest("account_nos is required")
        if len(values) > MAX_IDS:
            raise _BadRequest(f"at most {MAX_IDS} account_nos per call")
        return dedupe(values)

    @staticmethod
    def since(request: Request) -> str | None:
        raw = request.query_params.get("since")
        if raw is None:
            return None
        ts = parse_time(raw)
        if ts is None:
            raise _BadRequest("since must be an ISO 8601 time")
        return iso_utc(ts)

    def by_accounts(self, sql: str, account_nos: list[str], *args: Any) -> list[dict[str, Any]]:
        marks = ", ".join("?" * len(account_nos))
        return self.db.execute(sql.format(marks=marks), (*account_nos, *args)).fetchall()

    async def idempotent(self, request: Request, body: Any, handle: Any) -> Response:
        """Run ``handle(body)`` once per ``Idempotency-Key``; a repeat gets the first answer."""
        key = request.headers.get("idempotency-key")
        if not key:
            response: Response = handle(body)
            return response
        scoped = f"{request.headers.get('x-api-key', '')}\x00{key}"
        print_ = fingerprint(request.method, request.url.path, body)
        stored = self.idempotency.get(scoped)
        if stored is not None:
            if stored.fingerprint != print_:
                return error(409, "Idempotency-Key was already used for a different request")
            return stored.replay()
        response = handle(body)
        self.idempotency.put(scoped, print_, response)
        return response

    def emit(self, kind: str, account_no: str, at: int) -> None:
        self.control.emit(
            {
                "event_id": f"ev_{secrets.token_hex(12)}",
                "type": kind,
                "account_no": account_no,
                "occurred_at": iso_utc(at),
            }
        )

    # -- endpoints --

    async def list_accounts(self, request: Request) -> Response:
        qp = request.query_params
        try:
            if "ids" in qp:
                return self._batch(qp["ids"], [k for k in LIST_PARAMS if k in qp])
            return self._page(request)
        except _BadRequest as exc:
            return error(400, str(exc))

    def _batch(self, raw: str, list_params: list[str]) -> Response:
        if list_params:
            raise _BadRequest(f"ids is not combined with list parameters ({', '.join(list_params)})")
        ids = split_csv(raw)
        if not ids:
            raise _BadRequest("ids is empty")
        if len(ids) > MAX_IDS:
            raise _BadRequest(f"at most {MAX_IDS} ids per call")
        wanted = dedupe(ids)
        rows = self.by_accounts("SELECT * FROM accounts WHERE account_no IN ({marks})", wanted)
        found = {row["account_no"]: row for row in rows}
        return json_response({"data": [found[i] for i in wanted if i in found]})

    def _page(self, request: Request) -> Response:
        qp = request.query_params
        page = _int_param(qp.get("page"), "page", 1, 1, None)
        per_page = _int_param(qp.get("per_page"), "per_page", DEFAULT_PER_PAGE, 1, MAX_PER_PAGE)
        where: list[str] = []
        args: list[Any] = []
        for name, allowed in (("region", REGIONS), ("status", STATUSES)):
            value = qp.get(name)
            if value is not None:
                if value not in allowed:
                    raise _BadRequest(f"{name} must be one of {', '.join(allowed)}")
                where.append(f"{name} = ?")
                args.append(value)
        unowned = qp.get("unowned")
        if unowned is not None and unowned not in ("true", "false"):
            raise _BadRequest("unowned must be true or false")
        owner_id = qp.get("owner_id")
        if owner_id is not None and unowned == "true":
            raise _BadRequest("owner_id and unowned=true are alternatives: send one")
        if owner_id is not None:
            where.append("owner_id = ?")
            args.append(owner_id)
        if unowned == "true":
            where.append("owner_id IS NULL")
        q = qp.get("q")
        if q:
            pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append(
                "(name LIKE ? ESCAPE '\\' OR contact_name LIKE ? ESCAPE '\\' OR email LIKE ? ESCAPE '\\')"
            )
            args += [pattern] * 3
        updated_since = qp.get("updated_since")
        if updated_since is not None:
            ts = parse_time(updated_since)
            if ts is None:
                raise _BadRequest("updated_since must be an ISO 8601 time")
            where.append("updated_at >= ?")
            args.append(iso_utc(ts))
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        total = self.db.execute(f"SELECT count(*) AS n FROM accounts{clause}", args).fetchone()["n"]
        rows = self.db.execute(
            f"SELECT * FROM accounts{clause} ORDER BY account_no LIMIT ? OFFSET ?",
            (*args, per_page, (page - 1) * per_page),
        ).fetchall()
        return json_response({"data": rows, "meta": {"page": page, "per_page": per_page, "total": total}})

    async def get_account(self, request: Request) -> Response:
        row = self.account(request.path_params["account_no"])
        if row is None:
            return error(404, "no such account")
        return json_response(row, headers=_etag(row["version"]))

    async def patch_account(self, request: Request) -> Response:
        try:
            body = await read_json(request)
        except ValueError as exc:
            return error(400, str(exc))
        account_no = request.path_params["account_no"]
        if_match = request.headers.get("if-match")
        return await self.idempotent(request, body, lambda b: self._patch(account_no, b, if_match))

    def _patch(self, account_no: str, body: Any, if_match: str | None) -> Response:
        if not isinstance(body, dict):
            return error(400, "the body must be a JSON object")
        row = self.account(account_no)
        if row is None:
            return error(404, "no such account")
        if not _if_match_ok(if_match, row["version"]):
            return error(412, f"If-Match is stale: the account is at version {row['version']}")
        problems: dict[str, str] = {}
        for name, value in body.items():
            reason = _patch_problem(name, value, row["kind"])
            if reason:
                problems[name] = reason
        if problems:
            return error(422, "invalid value", problems)
        changes = {k: v for k, v in body.items() if row[k] != v}
        if changes:
            now = now_epoch()
            sets = ", ".join(f"{k} = ?" for k in changes)
            self.db.execute(
                f"UPDATE accounts SET {sets}, version = version + 1, updated_at = ? WHERE account_no = ?",
                (*changes.values(), iso_utc(now), account_no),
            )
            self.db.commit()
            self.emit("account.updated", account_no, now)
            row = self.account(account_no)
            assert row is not None
        return json_response(row, headers=_etag(row["version"]))

    async def put_owner(self, request: Request) -> Response:
        try:
            body = await read_json(request)
        except ValueError as exc:
            return error(400, str(exc))
        if not isinstance(body, dict):
            return error(400, "the body must be a JSON object")
        row = self.account(request.path_params["account_no"])
        if row is None:
            return error(404, "no such account")
        if not _if_match_ok(request.headers.get("if-match"), row["version"]):
            return error(412, f"If-Match is stale: the account is at version {row['version']}")
        extra = sorted(set(body) - {"owner_id"})
        if "owner_id" not in body or extra:
            fields = {"owner_id": "required"} if "owner_id" not in body else {}
            fields.update({name: "unknown field" for name in extra})
            return error(422, "invalid value", fields)
        owner = body["owner_id"]
        if owner is not None and (not isinstance(owner, str) or not self.user_exists(owner)):
            return error(422, "invalid value", {"owner_id": "not a sales user"})
        if owner != row["owner_id"]:
            now = now_epoch()
            stamp = iso_utc(now)
            self.db.execute(
                "UPDATE accounts SET owner_id = ?, owner_since = ?, pool_since = ?, version = version + 1,"
                " updated_at = ? WHERE account_no = ?",
                (owner, stamp if owner else None, None if owner else stamp, stamp, row["account_no"]),
            )
            self.db.commit()
            self.emit("account.owner_changed", row["account_no"], now)
            row = self.account(row["account_no"])
            assert row is not None
        return json_response(row, headers=_etag(row["version"]))

    async def list_orders(self, request: Request) -> Response:
        try:
            nos, since = self.account_nos(request), self.since(request)
        except _BadRequest as exc:
            return error(400, str(exc))
        sql = "SELECT * FROM orders WHERE account_no IN ({marks})"
        if since is not None:
            sql += " AND ordered_at >= ?"
        rows = self.by_accounts(
            sql + " ORDER BY account_no, ordered_at DESC, order_no DESC", nos, *([since] if since else [])
        )
        for row in rows:
            row["items"] = orjson.Fragment(row["items"])
        return json_response({"data": rows})

    async def list_payments(self, request: Request) -> Response:
        try:
            nos = self.account_nos(request)
        except _BadRequest as exc:
            return error(400, str(exc))
        rows = self.by_accounts(
            "SELECT * FROM payments WHERE account_no IN ({marks})"
            " ORDER BY account_no, paid_at DESC, payment_id DESC",
            nos,
        )
        return json_response({"data": rows})

    async def list_opportunities(self, request: Request) -> Response:
        try:
            nos = self.account_nos(request)
        except _BadRequest as exc:
            return error(400, str(exc))
        rows = self.by_accounts(
            "SELECT * FROM opportunities WHERE account_no IN ({marks}) ORDER BY account_no, opportunity_id",
            nos,
        )
        return json_response({"data": rows})

    async def list_activities(self, request: Request) -> Response:
        try:
            nos, since = self.account_nos(request), self.since(request)
        except _BadRequest as exc:
            return error(400, str(exc))
        sql = "SELECT * FROM activities WHERE account_no IN ({marks})"
        if since is not None:
            sql += " AND occurred_at >= ?"
        rows = self.by_accounts(
            sql + " ORDER BY account_no, occurred_at DESC, activity_id DESC", nos, *([since] if since else [])
        )
        return json_response({"data": rows})

    async def create_activity(self, request: Request) -> Response:
        try:
            body = await read_json(request)
        except ValueError as exc:
            return error(400, str(exc))
        return await self.idempotent(request, body, self._create_activity)

    def _create_activity(self, body: Any) -> Response:
        if not isinstance(body, dict):
            return error(400, "the body must be a JSON object")
        problems: dict[str, str] = {}
        for name in ("account_no", "type", "occurred_at", "subject", "notes", "by_user"):
            value = body.get(name)
            if not isinstance(value, str):
                problems[name] = "required, a string"
            elif len(value) > MAX_TEXT * 4:
                problems[name] = "too long"
        for name in sorted(set(body) - {"account_no", "type", "occurred_at", "subject", "notes", "by_user"}):
            problems[name] = "unknown field"
        occurred: int | None = None
        if "type" not in problems and body["type"] not in ACTIVITY_TYPES:
            problems["type"] = f"one of {', '.join(ACTIVITY_TYPES)}"
        if "occurred_at" not in problems:
            occurred = parse_time(body["occurred_at"])
            if occurred is None:
                problems["occurred_at"] = "not an ISO 8601 time"
        if "account_no" not in problems and self.account(body["account_no"]) is None:
            problems["account_no"] = "unknown account"
        # by_user is whoever logged it (a support agent too); the contract does not tie it to sales users.
        if problems or occurred is None:
            return error(422, "invalid value", problems)
        activity_id = f"AC{self.next_activity:06d}"
        self.next_activity += 1
        row = {
            "activity_id": activity_id,
            "account_no": body["account_no"],
            "type": body["type"],
            "occurred_at": iso_utc(occurred),
            "subject": body["subject"],
            "notes": body["notes"],
            "by_user": body["by_user"],
        }
        self.db.execute("INSERT INTO activities VALUES (?, ?, ?, ?, ?, ?, ?)", tuple(row.values()))
        self.db.commit()
        self.emit("activity.created", row["account_no"], now_epoch())
        return json_response(row, 201)

    async def list_users(self, request: Request) -> Response:
        ids = dedupe(split_csv(request.query_params.get("ids") or ""))
        if not ids:
            return error(400, "ids is required")
        marks = ", ".join("?" * len(ids))
        rows = self.db.execute(
            f"SELECT * FROM users WHERE user_id IN ({marks}) ORDER BY user_id", ids
        ).fetchall()
        return json_response({"data": rows})


def _int_param(raw: str | None, name: str, default: int, low: int, high: int | None) -> int:
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _BadRequest(f"{name} must be an integer") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise _BadRequest(f"{name} must be {bound}")
    return value


def _patch_problem(name: str, value: Any, kind: str) -> str | None:
    """Why ``value`` cannot be PATCHed into ``name``, or None when it can."""
    if name not in PATCHABLE:
        return "cannot be changed" if name in _READ_ONLY else "unknown field"
    if name in ("region", "status"):
        allowed = REGIONS if name == "region" else STATUSES
        return None if value in allowed else f"one of {', '.join(allowed)}"
    if value is None:
        return None
    if not isinstance(value, str):
        return "must be a string or null"
    if len(value) > MAX_TEXT:
        return "too long"
    if name == "email" and not EMAIL_RE.match(value):
        return "not an e-mail address"
    if name == "contact_name" and kind == "person":
        return "a person account has no contact_name"
    return None


_READ_ONLY = frozenset(
    {
        "account_no",
        "kind",
        "name",
        "tax_id",
        "owner_id",
        "owner_since",
        "pool_since",
        "created_at",
        "updated_at",
    }
    | {"version"}
)


def create_app(
    db_path: Path | str,
    *,
    api_keys: Iterable[str] = (DEFAULT_API_KEY,),
    in_memory: bool = False,
    on_change: ChangeHook | None = None,
) -> DemoApp:
    """The sales system over ``db_path`` (``sales.sqlite``). ``on_change`` receives each change event."""
    control = DemoControl("sales", error, on_change)
    sales = _Sales(db_path, in_memory=in_memory, control=control)
    routes = [
        Route("/api/v1/accounts", sales.list_accounts, methods=["GET"]),
        Route("/api/v1/accounts/{account_no}", sales.get_account, methods=["GET"]),
        Route("/api/v1/accounts/{account_no}", sales.patch_account, methods=["PATCH"]),
        Route("/api/v1/accounts/{account_no}/owner", sales.put_owner, methods=["PUT"]),
        Route("/api/v1/orders", sales.list_orders, methods=["GET"]),
        Route("/api/v1/payments", sales.list_payments, methods=["GET"]),
        Route("/api/v1/opportunities", sales.list_opportunities, methods=["GET"]),
        Route("/api/v1/activities", sales.list_activities, methods=["GET"]),
        Route("/api/v1/activities", sales.create_activity, methods=["POST"]),
        Route("/api/v1/users", sales.list_users, methods=["GET"]),
    ]
    guard = Middleware(ApiKeyGuard, keys=frozenset(api_keys))
    app = DemoApp(control, routes, guards=[guard])
    app.state.db = sales.db
    return app
