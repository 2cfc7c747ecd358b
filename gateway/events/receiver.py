"""Webhook receivers: ``POST /hooks/sales`` and ``POST /hooks/support``.

Each request is checked in this order, and answered as soon as one check decides:

1. the source is configured (``CG_SALES_WEBHOOK_SECRET`` / ``CG_SUPPORT_WEBHOOK_SECRET``), else 404;
2. the body is at most ``MAX_BODY`` bytes, else 413;
3. the HMAC-SHA256 of the raw body with the shared secret matches the signature header, compared in
   constant time — sales ``X-Sales-Signature: sha256=<hex>``, support ``X-Helpdesk-Signature: <hex>`` —
   else 401 and nothing is stored;
4. the body is the system's event (JSON, the documented fields), else 400;
5. the event is stored in the inbox and committed, then acknowledged: 202 ``accepted``, or 200
   ``duplicate`` for an event id already stored (acknowledged again, published once). When the gateway's
   database cannot store it the answer is 503, so the system delivers it again later.

Publishing happens after the answer (the publisher is woken), so the answer is fast.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from features.store.db import StoreUnavailable

from ..body import BodyTooLarge, BodyTooSlow, read_body
from .model import InboxEvent

log = logging.getLogger("customer_graph.events")

MAX_BODY = 64 * 1024  # bytes; an event is a few hundred
BODY_SECONDS = 10.0  # a system sends its event at once
SIGNATURE_HEADERS = {"sales": "x-sales-signature", "support": "x-helpdesk-signature"}
_ACCOUNT_NO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@#-]{0,199}$")  # event ids and types
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")

__all__ = ["MAX_BODY", "SIGNATURE_HEADERS", "BadEvent", "WebhookReceiver", "parse_event", "signature"]


class BadEvent(ValueError):
    """The body is not the system's change event; the message says which field."""


def signature(source: str, secret: str, body: bytes) -> str:
    """The signature header's value the system sends for ``body``."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}" if source == "sales" else digest


def verify(source: str, secret: str, body: bytes, given: str | None) -> bool:
    if not given:
        return False
    expected = signature(source, secret, body).encode()
    return hmac.compare_digest(given.strip().lower().encode("utf-8", "replace"), expected)


def _text(data: Mapping[str, Any], name: str, pattern: re.Pattern[str] = _TOKEN) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise BadEvent(f"'{name}' is missing or malformed")
    return value


def _time(data: Mapping[str, Any], name: str) -> datetime | None:
    value = data.get(name)
    if value is None:
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value, UTC)
        if isinstance(value, str):
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        pass
    raise BadEvent(f"'{name}' is not a time")


def parse_event(source: str, data: Any) -> InboxEvent:
    """The inbox event of a sales or support webhook body; ``BadEvent`` when it is not one."""
    if not isinstance(data, dict):
        raise BadEvent("the body must be a JSON object")
    if source == "sales":
        return InboxEvent(
            source="sales",
            event_id=_text(data, "event_id"),
            type=_text(data, "type"),
            account_no=_text(data, "account_no", _ACCOUNT_NO),
            occurred_at=_time(data, "occurred_at"),
        )
    ticket_id = data.get("ticket_id")
    if isinstance(ticket_id, bool) or not isinstance(ticket_id, int | str) or not str(ticket_id).isdigit():
        raise BadEvent("'ticket_id' is missing or malformed")
    email = _text(data, "requester_email", _EMAIL).strip().lower()
    return InboxEvent(
        source="support",
        event_id=_text(data, "id"),
        type=_text(data, "kind"),
        email=email,
        occurred_at=_time(data, "at"),
        detail={"ticket_id": str(ticket_id)},
    )


def _answer(code: int, **body: Any) -> Response:
    return JSONResponse(body, status_code=code)


class WebhookReceiver:
    def __init__(
        self,
        secrets: Mapping[str, str],
        accept: Callable[[InboxEvent], Awaitable[bool]],
        on_accepted: Callable[[], None],
    ) -> None:
        self.secrets = {source: secret for source, secret in secrets.items() if secret}
        self.accept = accept
        self.on_accepted = on_accepted
        self.counts: dict[str, int] = {"accepted": 0, "duplicate": 0, "refused": 0}

    async def sales(self, request: Request) -> Response:
        return await self.receive(request, "sales")

    async def support(self, request: Request) -> Response:
        return await self.receive(request, "support")

    async def receive(self, request: Request, source: str) -> Response:
        secret = self.secrets.get(source)
        if secret is None:
            return _answer(404, error=f"webhooks from {source} are not configured")
        try:
            body = await read_body(request, MAX_BODY, BODY_SECONDS)
        except BodyTooLarge:
            self.counts["refused"] += 1
            return _answer(413, error=f"the body is larger than {MAX_BODY} bytes")
        except BodyTooSlow:
            self.counts["refused"] += 1
            return _answer(408, error=f"the body did not arrive within {BODY_SECONDS:g} s")
        if not verify(source, secret, body, request.headers.get(SIGNATURE_HEADERS[source])):
            self.counts["refused"] += 1
            log.warning("webhook refused: bad or missing signature", extra={"source": source})
            return _answer(401, error="bad or missing signature")
        try:
            event = parse_event(source, orjson.loads(body))
        except orjson.JSONDecodeError:
            self.counts["refused"] += 1
            return _answer(400, error="the body is not JSON")
        except BadEvent as exc:
            self.counts["refused"] += 1
            return _answer(400, error=str(exc))
        try:
            new = await self.accept(event)
        except StoreUnavailable:
            log.error("webhook not stored: the gateway database is unavailable", extra={"source": source})
            return JSONResponse(
                {"error": "cannot store the event now"}, status_code=503, headers={"Retry-After": "5"}
            )
        if new:
            self.counts["accepted"] += 1
            self.on_accepted()
            return _answer(202, status="accepted", event_id=event.event_id)
        self.counts["duplicate"] += 1
        return _answer(200, status="duplicate", event_id=event.event_id)
