"""The baseline: what an app team would write by hand instead of using the gateway.

A straightforward direct client of the three systems: one ``httpx.AsyncClient`` per system,
``asyncio.gather`` for what can run at once, and the two waves the data dictates — the account (and
everything keyed by its number) first, then what needs its e-mail, tax id and owner. It honours the
systems' contracts (e-mails lower-cased for the helpdesk, one tax id per register call, at most 4
register calls in flight per process, ticket-search cursors) but does no authentication of a caller,
no access policy, no masking and no normalisation beyond what the answer needs (cents → decimal
strings). It makes the same upstream calls as the gateway's minimum.

One thing it does that the very first version an app team writes would not: it bounds the calls in
flight per system (``max_in_flight``, 16 like the gateway's connectors) and sizes httpx's pool to
match. Without that, once more requests wait for a connection than the pool holds, httpx's pool
(httpcore) spends its CPU on bookkeeping that grows with waiting × connections: at 64 concurrent
S1 clients the unbounded client completed no request at all in a 3-second window. Comparing the
gateway with that would measure an httpx pitfall, not the gateway.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import httpx

REGISTER_MAX_IN_FLIGHT = 4  # the register's contract: a fifth concurrent call gets "503 busy"
MAX_IN_FLIGHT = 16  # per system, as the gateway's connectors (connectors.base.DEFAULT_MAX_IN_FLIGHT)
TICKET_PAGE = 500  # the helpdesk's largest search page
DORMANT_DAYS = 365

Json = dict[str, Any]


class DirectClient:
    """Calls sales, support and contracts directly; one instance per process (shared pools)."""

    def __init__(
        self,
        urls: dict[str, str],
        *,
        sales_api_key: str,
        support_token: str,
        contracts_auth: tuple[str, str],
        timeout: float = 10.0,
        nested_first: int = 5,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        pool = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
        self.sales = httpx.AsyncClient(
            base_url=urls["sales"] + "/api/v1",
            headers={"X-Api-Key": sales_api_key},
            timeout=timeout,
            limits=pool,
        )
        self.support = httpx.AsyncClient(
            base_url=urls["support"] + "/v2",
            headers={"Authorization": f"Bearer {support_token}"},
            timeout=timeout,
            limits=pool,
        )
        self.contracts = httpx.AsyncClient(
            base_url=urls["contracts"], auth=httpx.BasicAuth(*contracts_auth), timeout=timeout, limits=pool
        )
        self.sales_slots = asyncio.Semaphore(max_in_flight)
        self.support_slots = asyncio.Semaphore(max_in_flight)
        self.register_slots = asyncio.Semaphore(min(REGISTER_MAX_IN_FLIGHT, max_in_flight))
        self.first = nested_first

    async def aclose(self) -> None:
        await asyncio.gather(self.sales.aclose(), self.support.aclose(), self.contracts.aclose())

    # --- the two scenarios -------------------------------------------------------------------

    async def customer(self, account_no: str) -> Json | None:
        """S1: one customer, every field (two waves)."""
        accounts, orders, payments, opportunities, activities = await asyncio.gather(
            self._sales("accounts", ids=account_no),
            self._sales("orders", account_nos=account_no),
            self._sales("payments", account_nos=account_no),
            self._sales("opportunities", account_nos=account_no),
            self._sales("activities", account_nos=account_no),
        )
        if not accounts:
            return None
        account = accounts[0]
        email = (account.get("email") or "").lower()
        tax_id = account.get("tax_id")
        owner_id = account.get("owner_id")
        users, tickets, satisfaction, contracts = await asyncio.gather(
            self._sales("users", ids=owner_id) if owner_id else _nothing(),
            self._tickets([email]) if email else _nothing(),
            self._satisfaction([email]) if email else _nothing(),
            self._contracts(tax_id) if tax_id else _nothing(),
        )
        return self._shape(
            account,
            owners={u["user_id"]: u for u in users},
            orders=orders,
            payments=payments,
            opportunities=opportunities,
            activities=activities,
            tickets=tickets,
            satisfaction={s["email"].lower(): s for s in satisfaction},
            contracts=contracts,
        )

    async def page(self, first: int = 50) -> list[Json]:
        """S2: the first page of ``first`` customers, every field (the list call, then one wave)."""
        async with self.sales_slots:
            listed = await self.sales.get("/accounts", params={"page": 1, "per_page": first})
        listed.raise_for_status()
        accounts: list[Json] = listed.json()["data"]
        numbers = ",".join(a["account_no"] for a in accounts)
        emails = sorted({a["email"].lower() for a in accounts if a.get("email")})
        owners = ",".join(sorted({a["owner_id"] for a in accounts if a.get("owner_id")}))
        tax_ids = list(dict.fromkeys(a["tax_id"] for a in accounts if a.get("tax_id")))
        (
            orders,
            payments,
            opportunities,
            activities,
            users,
            tickets,
            satisfaction,
            *contracts,
        ) = await asyncio.gather(
            self._sales("orders", account_nos=numbers),
            self._sales("payments", account_nos=numbers),
            self._sales("opportunities", account_nos=numbers),
            self._sales("activities", account_nos=numbers),
            self._sales("users", ids=owners) if owners else _nothing(),
            self._tickets(emails) if emails else _nothing(),
            self._satisfaction(emails) if emails else _nothing(),
            *(self._contracts(tax_id) for tax_id in tax_ids),
        )
        by_tax_id = dict(zip(tax_ids, contracts, strict=True))
        owner_map = {u["user_id"]: u for u in users}
        ratings = {s["email"].lower(): s for s in satisfaction}
        result = []
        for account in accounts:
            number = account["account_no"]
            email = (account.get("email") or "").lower()
            result.append(
                self._shape(
                    account,
                    owners=owner_map,
                    orders=[o for o in orders if o["account_no"] == number],
                    payments=[p for p in payments if p["account_no"] == number],
                    opportunities=[o for o in opportunities if o["account_no"] == number],
                    activities=[a for a in activities if a["account_no"] == number],
                    tickets=[t for t in tickets if email and t["requester_email"].lower() == email],
                    satisfaction=ratings,
                    contracts=by_tax_id.get(account.get("tax_id") or "", []),
                )
            )
        return result

    # --- calls -------------------------------------------------------------------------------

    async def _sales(self, resource: str, **params: str) -> list[Json]:
        async with self.sales_slots:
            response = await self.sales.get(f"/{resource}", params=params)
        response.raise_for_status()
        data: list[Json] = response.json()["data"]
        return data

    async def _tickets(self, emails: Sequence[str]) -> list[Json]:
        found: list[Json] = []
        cursor: str | None = None
        while True:
            body = {"requester_emails": list(emails), "limit": TICKET_PAGE, "cursor": cursor}
            async with self.support_slots:
                response = await self.support.post("/tickets/search", json=body)
            response.raise_for_status()
            page = response.json()
            found.extend(page["tickets"])
            cursor = page["next_cursor"]
            if cursor is None:
                return found

    async def _satisfaction(self, emails: Sequence[str]) -> list[Json]:
        async with self.support_slots:
            response = await self.support.get("/satisfaction", params={"emails": ",".join(emails)})
        response.raise_for_status()
        summaries: list[Json] = response.json()["summaries"]
        return summaries

    async def _contracts(self, tax_id: str) -> list[Json]:
        async with self.register_slots:
            response = await self.contracts.get("/contracts", params={"party_tax_id": tax_id})
        response.raise_for_status()
        contracts: list[Json] = response.json()
        return contracts

    # --- the answer ----------------------------------------------------------------------------

    def _shape(
        self,
        account: Json,
        *,
        owners: dict[str, Json],
        orders: list[Json],
        payments: list[Json],
        opportunities: list[Json],
        activities: list[Json],
        tickets: list[Json],
        satisfaction: dict[str, Json],
        contracts: list[Json],
    ) -> Json:
        n = self.first
        email = (account.get("email") or "").lower() or None
        contacts = [_epoch(a["occurred_at"]) for a in activities]
        contacts += [max(t["created_at"], t["updated_at"]) for t in tickets]
        contacts += [
            _epoch(c["signed_on"] + "T00:00:00Z")
            for c in contracts
            if c.get("signed_on") and not c.get("confidential")
        ]
        last_contact = max(contacts) if contacts else None
        now = datetime.now(UTC).timestamp()
        return {
            **account,
            "email": email,
            "owner": owners.get(account.get("owner_id") or ""),
            "orders": [_money(o, "total_cents") for o in orders[:n]],
            "payments": [_money(p, "amount_cents") for p in payments[:n]],
            "opportunities": [_money(o, "amount_cents") for o in opportunities],
            "activities": activities[:n],
            "tickets": tickets[:n],
            "satisfaction": satisfaction.get(email or ""),
            "contracts": contracts,
            "last_contact_at": last_contact,
            "dormant": last_contact is None or now - last_contact > DORMANT_DAYS * 86400,
        }


async def _nothing() -> list[Json]:
    return []


def _money(row: Json, key: str) -> Json:
    return {**row, key.removesuffix("_cents"): str(Decimal(row[key]) / 100)}


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


R = TypeVar("R")


def run_on_gateway_loop(main: Coroutine[Any, Any, R]) -> R:
    """Run ``main`` on the event loop the gateway runs on (uvicorn's choice: uvloop when installed),
    so the baseline and the gateway are compared as code, not as event loops."""
    from uvicorn.config import Config

    loop_factory = Config(app="gateway.app:app_from_environment").get_loop_factory()  # the app is not loaded
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main)
