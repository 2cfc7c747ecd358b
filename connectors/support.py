"""The helpdesk: tickets, requesters and satisfaction, all keyed by requester e-mail.

Epoch-second times, integer ids, cursor paging, and a per-token rate limit answered with
``429`` + ``Retry-After``. Every e-mail it is asked about or answers with is lower-cased, so
results are keyed by ``normalize_email(email)``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any, Unpack
from urllib.parse import quote

from .base import Connector, ConnectorOptions, in_chunks, unique
from .errors import UpstreamUnavailable
from .models import Requester, Satisfaction, System, Ticket, TicketComment, TicketDetail, TicketRating
from .normalize import epoch_seconds, normalize_email, normalize_phone, opt, parse_epoch, round2

__all__ = ["SupportConnector"]

API = "/v2"
MAX_EMAILS = 200  # per search body, per requesters/satisfaction call
PAGE_LIMIT = 500  # tickets per search page


class SupportConnector(Connector):
    system = System.SUPPORT
    idempotency_header = "X-Request-Id"

    def __init__(self, base_url: str, token: str, **options: Unpack[ConnectorOptions]) -> None:
        """``options``: see ``Connector.__init__``. A ``429`` is retried after its ``Retry-After``
        while the call has attempts left (``max_attempts`` in all), its waits add up to at most
        ``max_retry_wait`` seconds and the wait fits the request deadline; otherwise it is
        ``UpstreamUnavailable(SUPPORT, "rate_limited")``. ``max_rate`` keeps the gateway under the
        system's own rate limit."""
        super().__init__(base_url, headers={"Authorization": f"Bearer {token}"}, **options)

    async def tickets(
        self,
        emails: Iterable[str],
        *,
        status: Collection[str] | None = None,
        updated_after: datetime | None = None,
    ) -> dict[str, list[Ticket]]:
        """Every asked e-mail (lower-cased) → its tickets, newest first; ``[]`` when none.

        ``status``: only tickets in one of these statuses. ``updated_after``: updated at or after.
        """
        keys = unique(normalize_email(email) for email in emails)
        query: dict[str, Any] = {"limit": PAGE_LIMIT}
        if status is not None:
            query["status"] = [status] if isinstance(status, str) else list(status)
        if updated_after is not None:
            query["updated_after"] = epoch_seconds(updated_after)

        async def fetch(batch: list[str]) -> list[Ticket]:
            body = {"requester_emails": batch, **query}
            found: list[Ticket] = []
            cursor: str | None = None
            seen: set[str] = set()
            while True:
                page, cursor = await self._call(
                    "POST",
                    f"{API}/tickets/search",
                    _ticket_page,
                    resource="tickets.search",
                    json={**body, "cursor": cursor},
                    retry=True,  # a search: a read, safe to repeat
                )
                found.extend(page)
                if cursor is None:
                    return found
                if cursor in seen:  # going round in circles: it would never end
                    raise UpstreamUnavailable(self.system, "bad_response")
                seen.add(cursor)

        grouped: dict[str, list[Ticket]] = {key: [] for key in keys}
        for ticket in await in_chunks(keys, MAX_EMAILS, fetch):
            grouped.setdefault(ticket.requester_email, []).append(ticket)
        return grouped

    async def ticket(self, id: str | int) -> TicketDetail:
        """One ticket with its conversation (private notes included: ``public=False``);
        ``UpstreamNotFound`` when unknown."""
        return await self._call(
            "GET", f"{API}/tickets/{quote(str(id), safe='')}", _ticket_detail, resource="ticket"
        )

    async def requesters(self, emails: Iterable[str]) -> dict[str, Requester]:
        """Requesters by lower-cased e-mail; unknown e-mails are absent."""

        async def fetch(batch: list[str]) -> list[Requester]:
            return await self._call(
                "GET",
                f"{API}/requesters",
                _requesters,
                resource="requesters",
                params={"emails": ",".join(batch)},
            )

        found = await in_chunks(unique(normalize_email(email) for email in emails), MAX_EMAILS, fetch)
        return {requester.email: requester for requester in found}

    async def satisfaction(self, emails: Iterable[str]) -> dict[str, Satisfaction]:
        """Every asked e-mail (lower-cased) → its satisfaction summary; ``rated=0, average=None``
        when nothing is rated or the e-mail is unknown."""

        async def fetch(batch: list[str]) -> list[Satisfaction]:
            return await self._call(
                "GET",
                f"{API}/satisfaction",
                _summaries,
                resource="satisfaction",
                params={"emails": ",".join(batch)},
            )

        keys = unique(normalize_email(email) for email in emails)
        summaries = {key: Satisfaction(email=key, rated=0, average=None, last_rated_at=None) for key in keys}
        summaries.update((summary.email, summary) for summary in await in_chunks(keys, MAX_EMAILS, fetch))
        return summaries

    async def create_ticket(
        self,
        requester_email: str,
        subject: str,
        category: str,
        priority: str,
        channel: str,
        body: str,
        *,
        request_id: str,
    ) -> Ticket:
        """Open a ticket; repeating ``request_id`` (within 24 h) creates no second one, which is why
        it may be retried."""
        payload = {
            "requester_email": normalize_email(requester_email),
            "subject": subject,
            "category": category,
            "priority": priority,
            "channel": channel,
            "body": body,
        }
        return await self._call(
            "POST",
            f"{API}/tickets",
            _ticket_envelope,
            resource="tickets.create",
            json=payload,
            headers={"X-Request-Id": request_id},
        )


# --- wire → domain ---------------------------------------------------------------------------


def _ticket(raw: Any) -> Ticket:
    rating = raw.get("satisfaction")
    return Ticket(
        id=str(raw["id"]),
        requester_email=normalize_email(raw["requester_email"]),
        subject=raw["subject"],
        category=raw["category"],
        priority=raw["priority"],
        status=raw["status"],
        channel=raw["channel"],
        assignee=raw.get("assignee"),
        created_at=parse_epoch(raw["created_at"]),
        updated_at=parse_epoch(raw["updated_at"]),
        satisfaction=None
        if rating is None
        else TicketRating(score=int(rating["score"]), comment=rating.get("comment")),
    )


def _ticket_page(body: Any) -> tuple[list[Ticket], str | None]:
    cursor = body["next_cursor"]
    if cursor is not None and not isinstance(cursor, str):
        raise TypeError("next_cursor must be a string or null")
    return [_ticket(raw) for raw in body["tickets"]], cursor


def _ticket_envelope(body: Any) -> Ticket:
    return _ticket(body["ticket"])


def _ticket_detail(body: Any) -> TicketDetail:
    return TicketDetail(
        ticket=_ticket(body["ticket"]),
        comments=[
            TicketComment(
                id=str(raw["id"]),
                author=raw["author"],
                body=raw["body"],
                public=bool(raw["public"]),
                created_at=parse_epoch(raw["created_at"]),
            )
            for raw in body["comments"]
        ],
    )


def _requesters(body: Any) -> list[Requester]:
    return [
        Requester(
            email=normalize_email(raw["email"]),
            display_name=raw.get("display_name"),
            phone=opt(normalize_phone, raw.get("phone")),
            vip=bool(raw["vip"]),
            language=raw.get("language"),
            created_at=parse_epoch(raw["created_at"]),
        )
        for raw in body["requesters"]
    ]


def _summaries(body: Any) -> list[Satisfaction]:
    return [
        Satisfaction(
            email=normalize_email(raw["email"]),
            rated=int(raw["rated"]),
            average=None if not raw["rated"] else opt(round2, raw.get("average")),
            last_rated_at=opt(parse_epoch, raw.get("last_rated_at")),
        )
        for raw in body["summaries"]
    ]
