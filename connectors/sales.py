"""The sales CRM: accounts (the customer master record), their orders, payments, opportunities,
activities, and the sales staff. Envelope ``{"data": [...]}``, ISO times, integer cents."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, TypeVar, Unpack
from urllib.parse import quote

import httpx
import orjson

from .base import Connector, ConnectorOptions, in_chunks, unique
from .models import (
    Account,
    AccountPage,
    Activity,
    Opportunity,
    Order,
    OrderItem,
    Payment,
    SalesUser,
    System,
)
from .normalize import (
    format_time,
    money_from_cents,
    normalize_email,
    normalize_phone,
    opt,
    parse_time,
)

__all__ = ["SalesConnector"]

T = TypeVar("T")

API = "/api/v1"
MAX_IDS = 100  # per call, for ids= and account_nos=


class SalesConnector(Connector):
    system = System.SALES
    idempotency_header = "Idempotency-Key"

    def __init__(self, base_url: str, api_key: str, **options: Unpack[ConnectorOptions]) -> None:
        """``options``: see ``Connector.__init__`` (timeouts, retries, breaker, in-flight bound)."""
        super().__init__(base_url, headers={"X-Api-Key": api_key}, **options)

    # --- accounts --------------------------------------------------------------------------

    async def accounts(self, account_nos: Iterable[str]) -> dict[str, Account]:
        """The accounts by number; unknown numbers are absent."""

        async def fetch(batch: list[str]) -> list[Account]:
            return await self._call(
                "GET", f"{API}/accounts", _accounts, resource="accounts", params={"ids": ",".join(batch)}
            )

        found = await in_chunks(unique(account_nos), MAX_IDS, fetch)
        return {account.account_no: account for account in found}

    async def list_accounts(
        self,
        *,
        page: int = 1,
        per_page: int = 50,
        region: str | None = None,
        status: str | None = None,
        owner_id: str | None = None,
        unowned: bool | None = None,
        q: str | None = None,
        updated_since: datetime | None = None,
    ) -> AccountPage:
        """One page of accounts, ordered by account number. ``owner_id`` and ``unowned`` are
        alternatives (the system refuses both: ``UpstreamInvalid``)."""
        params: dict[str, str | int] = {"page": page, "per_page": per_page}
        if region is not None:
            params["region"] = region
        if status is not None:
            params["status"] = status
        if owner_id is not None:
            params["owner_id"] = owner_id
        if unowned:
            params["unowned"] = "true"
        if q is not None:
            params["q"] = q
        if updated_since is not None:
            params["updated_since"] = format_time(updated_since)
        return await self._call(
            "GET", f"{API}/accounts", _account_page, resource="accounts.list", params=params
        )

    async def account(self, account_no: str) -> Account:
        """One account; ``UpstreamNotFound`` when unknown."""
        return await self._call("GET", _account_path(account_no), _account, resource="account")

    async def update_account(
        self,
        account_no: str,
        changes: dict[str, str | None],
        *,
        version: int | None,
        idempotency_key: str,
    ) -> Account:
        """Change any of contact_name, title, email, phone, address, region, status.

        With ``version`` the change only applies to that version (else ``UpstreamConflict``).
        A refused value is ``UpstreamInvalid`` with ``fields``. Retried (like a read) only because
        it carries ``idempotency_key``.
        """
        headers = {"Idempotency-Key": idempotency_key, **_if_match(version)}
        return await self._call(
            "PATCH",
            _account_path(account_no),
            _account,
            resource="account.update",
            json=changes,
            headers=headers,
        )

    async def set_owner(self, account_no: str, owner_id: str | None, *, version: int | None) -> Account:
        """Give the account to a rep, or back to the public pool with ``None``. Never retried: the
        system takes no idempotency key here, and a repeat after a lost answer would meet a new
        version."""
        path = f"{_account_path(account_no)}/owner"
        return await self._call(
            "PUT",
            path,
            _account,
            resource="account.owner",
            json={"owner_id": owner_id},
            headers=_if_match(version),
            retry=False,
        )

    # --- per-account histories -------------------------------------------------------------

    async def orders(
        self, account_nos: Iterable[str], since: datetime | None = None
    ) -> dict[str, list[Order]]:
        """Each account's orders, newest first (``since``: ordered at or after)."""
        return await self._by_account("orders", _order, account_nos, since)

    async def payments(self, account_nos: Iterable[str]) -> dict[str, list[Payment]]:
        """Each account's payments, newest first."""
        return await self._by_account("payments", _payment, account_nos)

    async def opportunities(self, account_nos: Iterable[str]) -> dict[str, list[Opportunity]]:
        """Each account's opportunities, in the system's order."""
        return await self._by_account("opportunities", _opportunity, account_nos)

    async def activities(
        self, account_nos: Iterable[str], since: datetime | None = None
    ) -> dict[str, list[Activity]]:
        """Each account's communication history, newest first (``since``: occurred at or after)."""
        return await self._by_account("activities", _activity, account_nos, since)

    async def create_activity(
        self,
        account_no: str,
        type: str,
        occurred_at: datetime,
        subject: str,
        notes: str | None,
        by_user: str,
        *,
        idempotency_key: str,
    ) -> Activity:
        """Record an activity; an unknown account is ``UpstreamInvalid``."""
        body = {
            "account_no": account_no,
            "type": type,
            "occurred_at": format_time(occurred_at),
            "subject": subject,
            "notes": notes or "",  # the contract requires a string
            "by_user": by_user,
        }
        headers = {"Idempotency-Key": idempotency_key}
        return await self._call(
            "POST", f"{API}/activities", _activity, resource="activities.create", json=body, headers=headers
        )

    # --- staff -----------------------------------------------------------------------------

    async def users(self, user_ids: Iterable[str]) -> dict[str, SalesUser]:
        """Sales staff by id; unknown ids are absent."""

        async def fetch(batch: list[str]) -> list[SalesUser]:
            return await self._call(
                "GET", f"{API}/users", _users, resource="users", params={"ids": ",".join(batch)}
            )

        found = await in_chunks(unique(user_ids), MAX_IDS, fetch)
        return {user.user_id: user for user in found}

    # --- plumbing --------------------------------------------------------------------------

    async def _by_account(
        self,
        resource: str,
        convert: Callable[[Any], T],
        account_nos: Iterable[str],
        since: datetime | None = None,
    ) -> dict[str, list[T]]:
        keys = unique(account_nos)
        extra = {} if since is None else {"since": format_time(since)}

        def parse(body: Any) -> list[tuple[str, T]]:
            return [(raw["account_no"], convert(raw)) for raw in body["data"]]

        async def fetch(batch: list[str]) -> list[tuple[str, T]]:
            params = {"account_nos": ",".join(batch), **extra}
            return await self._call("GET", f"{API}/{resource}", parse, resource=resource, params=params)

        grouped: dict[str, list[T]] = {key: [] for key in keys}
        for account_no, item in await in_chunks(keys, MAX_IDS, fetch):
            grouped.setdefault(account_no, []).append(item)
        return grouped

    def _invalid_fields(self, response: httpx.Response) -> dict[str, str]:
        try:
            fields = orjson.loads(response.content)["error"]["fields"]
            return {str(name): str(reason) for name, reason in fields.items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            return {}


def _account_path(account_no: str) -> str:
    return f"{API}/accounts/{quote(account_no, safe='')}"


def _if_match(version: int | None) -> dict[str, str]:
    return {} if version is None else {"If-Match": f'"{version}"'}


# --- wire → domain ---------------------------------------------------------------------------


def _account(raw: Any) -> Account:
    return Account(
        account_no=raw["account_no"],
        kind=raw["kind"],
        name=raw["name"],
        contact_name=raw.get("contact_name"),
        title=raw.get("title"),
        email=opt(normalize_email, raw.get("email")),
        phone=opt(normalize_phone, raw.get("phone")),
        address=raw.get("address"),
        tax_id=raw.get("tax_id"),
        region=raw["region"],
        status=raw["status"],
        owner_id=raw.get("owner_id"),
        owner_since=opt(parse_time, raw.get("owner_since")),
        pool_since=opt(parse_time, raw.get("pool_since")),
        created_at=parse_time(raw["created_at"]),
        updated_at=parse_time(raw["updated_at"]),
        version=int(raw["version"]),
    )


def _accounts(body: Any) -> list[Account]:
    return [_account(raw) for raw in body["data"]]


def _account_page(body: Any) -> AccountPage:
    meta = body["meta"]
    return AccountPage(
        accounts=_accounts(body),
        page=int(meta["page"]),
        per_page=int(meta["per_page"]),
        total=int(meta["total"]),
    )


def _order(raw: Any) -> Order:
    currency = raw["currency"]
    return Order(
        order_no=raw["order_no"],
        account_no=raw["account_no"],
        ordered_at=parse_time(raw["ordered_at"]),
        status=raw["status"],
        total=money_from_cents(raw["total_cents"], currency),
        items=[
            OrderItem(
                sku=item["sku"],
                name=item["name"],
                qty=int(item["qty"]),
                unit_price=money_from_cents(item["unit_price_cents"], currency),
            )
            for item in raw["items"]
        ],
    )


def _payment(raw: Any) -> Payment:
    return Payment(
        payment_id=raw["payment_id"],
        account_no=raw["account_no"],
        order_no=raw.get("order_no"),
        paid_at=parse_time(raw["paid_at"]),
        amount=money_from_cents(raw["amount_cents"], raw["currency"]),
        method=raw["method"],
        card_last4=raw.get("card_last4"),
        bank_account=raw.get("bank_account"),
        invoice_no=raw.get("invoice_no"),
    )


def _opportunity(raw: Any) -> Opportunity:
    return Opportunity(
        opportunity_id=raw["opportunity_id"],
        account_no=raw["account_no"],
        title=raw["title"],
        stage=raw["stage"],
        amount=money_from_cents(raw["amount_cents"], raw["currency"]),
        expected_close=opt(parse_time, raw.get("expected_close")),
        updated_at=parse_time(raw["updated_at"]),
    )


def _activity(raw: Any) -> Activity:
    return Activity(
        activity_id=raw["activity_id"],
        account_no=raw["account_no"],
        type=raw["type"],
        occurred_at=parse_time(raw["occurred_at"]),
        subject=raw["subject"],
        notes=raw.get("notes"),
        by_user=raw["by_user"],
    )


def _users(body: Any) -> list[SalesUser]:
    return [
        SalesUser(
            user_id=raw["user_id"],
            name=raw["name"],
            email=opt(normalize_email, raw.get("email")),
            region=raw.get("region"),
            role=raw["role"],
        )
        for raw in body["data"]
    ]
