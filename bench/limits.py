"""The limit (fastest possible time) and the minimum upstream calls of S1 and S2, from the data.

The limit counts only the systems' latencies and their constraints, nothing for the gateway's own
work or the network: what the data dictates runs in sequence (the account before what needs its
e-mail, tax id or owner; a ticket search's cursor pages one after the other; the register's 4 calls
in flight), everything else at once.

- S1: ``sales`` (the account, with its orders, payments, opportunities and activities), then the
  longest of ``sales`` (the owner), ``pages × support`` (ticket search), ``support`` (satisfaction)
  and ``contracts`` (one tax id). The issue's figure: 20 + 50 = 70 ms.
- S2: ``sales`` (the list call), then the longest of ``sales`` (one batch per resource),
  ``pages × support``, ``support`` and ``ceil(tax ids / 4) × contracts``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import httpx

REGISTER_WIDTH = 4
TICKET_PAGE = 500
SALES_BATCH = 100  # ids / account_nos per sales call


@dataclass(frozen=True, slots=True)
class Latencies:
    sales: float
    support: float
    contracts: float


@dataclass(frozen=True, slots=True)
class Bound:
    """A scenario's limit (ms) and minimum upstream calls, with how they were derived."""

    limit_ms: float
    min_calls: dict[str, int]
    detail: str
    facts: dict[str, Any]

    @property
    def min_total(self) -> int:
        return sum(self.min_calls.values())

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "min_total": self.min_total}


class Oracle:
    """Asks the systems directly what the data is (before the measurements; stats reset after)."""

    def __init__(self, urls: dict[str, str], headers: dict[str, dict[str, str]]) -> None:
        self.urls = urls
        self.headers = headers
        self.http = httpx.Client(timeout=30)

    def close(self) -> None:
        self.http.close()

    def accounts(self, *, page: int = 1, per_page: int = 200) -> tuple[list[dict[str, Any]], int]:
        response = self.http.get(
            self.urls["sales"] + "/api/v1/accounts",
            params={"page": page, "per_page": per_page},
            headers=self.headers["sales"],
        )
        response.raise_for_status()
        body = response.json()
        return body["data"], int(body["meta"]["total"])

    def all_accounts(self) -> list[dict[str, Any]]:
        found, total = self.accounts()
        page = 1
        while len(found) < total:
            page += 1
            more, total = self.accounts(page=page)
            if not more:
                break
            found += more
        return found

    def ticket_pages(self, emails: Sequence[str]) -> tuple[int, int]:
        """(search pages, tickets) for these e-mails at the largest page size."""
        pages, tickets, cursor = 0, 0, None
        while True:
            response = self.http.post(
                self.urls["support"] + "/v2/tickets/search",
                json={"requester_emails": list(emails), "limit": TICKET_PAGE, "cursor": cursor},
                headers=self.headers["support"],
            )
            response.raise_for_status()
            body = response.json()
            pages += 1
            tickets += len(body["tickets"])
            cursor = body["next_cursor"]
            if cursor is None:
                return pages, tickets


def s1_bound(oracle: Oracle, account: dict[str, Any], lat: Latencies) -> Bound:
    email = (account.get("email") or "").lower()
    pages, tickets = oracle.ticket_pages([email]) if email else (0, 0)
    owner = 1 if account.get("owner_id") else 0
    contracts = 1 if account.get("tax_id") else 0
    sales_calls = 5 + owner  # account, orders, payments, opportunities, activities (+ owner)
    support_calls = pages + (1 if email else 0)
    second = [
        lat.sales * owner,
        lat.support * pages,
        lat.support * (1 if email else 0),
        lat.contracts * contracts,
    ]
    limit = lat.sales + max(second)
    return Bound(
        limit_ms=limit,
        min_calls={"sales": sales_calls, "support": support_calls, "contracts": contracts},
        detail=(
            f"sales {lat.sales:g} + max(owner {second[0]:g}, ticket search {pages} × {lat.support:g},"
            f" satisfaction {second[2]:g}, register {second[3]:g}) = {limit:g} ms"
        ),
        facts={"account_no": account["account_no"], "ticket_pages": pages, "tickets": tickets},
    )


def s2_bound(oracle: Oracle, first: int, lat: Latencies) -> Bound:
    accounts, _ = oracle.accounts(page=1, per_page=first)
    emails = sorted({a["email"].lower() for a in accounts if a.get("email")})
    owners = {a["owner_id"] for a in accounts if a.get("owner_id")}
    tax_ids = {a["tax_id"] for a in accounts if a.get("tax_id")}
    companies = sum(1 for a in accounts if a["kind"] == "company")
    pages, tickets = oracle.ticket_pages(emails) if emails else (0, 0)
    batches = math.ceil(len(accounts) / SALES_BATCH)
    sales_calls = 1 + 4 * batches + math.ceil(len(owners) / SALES_BATCH)
    waves = math.ceil(len(tax_ids) / REGISTER_WIDTH)
    support_calls = pages + (1 if emails else 0)
    second = [lat.sales, lat.support * pages, lat.support * (1 if emails else 0), lat.contracts * waves]
    limit = lat.sales + max(second)
    return Bound(
        limit_ms=limit,
        min_calls={"sales": sales_calls, "support": support_calls, "contracts": len(tax_ids)},
        detail=(
            f"list {lat.sales:g} + max(sales batch {second[0]:g}, ticket search {pages} × {lat.support:g},"
            f" satisfaction {second[2]:g}, register ceil({len(tax_ids)}/{REGISTER_WIDTH}) = {waves}"
            f" × {lat.contracts:g}) = {limit:g} ms"
        ),
        facts={
            "customers": len(accounts),
            "companies": companies,
            "tax_ids": len(tax_ids),
            "emails": len(emails),
            "owners": len(owners),
            "ticket_pages": pages,
            "tickets": tickets,
            "register_waves": waves,
        },
    )
