"""Legal's contract register: contracts by party tax id, bare JSON arrays, dates, decimal strings.

It takes exactly one tax id per call and serves at most 4 calls in flight per client (a fifth is
answered ``503 busy``). The connector's in-flight bound (``max_in_flight``, default 4) holds
however many callers share it; a ``busy`` that still comes back (another client on the same
credentials) is retried after a jittered back-off. Any other 503 (maintenance) is not retried.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any, Unpack
from urllib.parse import quote

import httpx

from .base import Connector, ConnectorOptions, basic_auth, in_chunks
from .models import Contract, ContractDocument, System
from .normalize import money_from_decimal, opt, parse_date

__all__ = ["ContractsConnector"]

MAX_IN_FLIGHT = 4


class ContractsConnector(Connector):
    system = System.CONTRACTS

    def __init__(self, base_url: str, user: str, password: str, **options: Unpack[ConnectorOptions]) -> None:
        """``options``: see ``Connector.__init__``; ``max_in_flight`` defaults to the register's 4."""
        options.setdefault("max_in_flight", MAX_IN_FLIGHT)
        super().__init__(base_url, headers={"Authorization": basic_auth(user, password)}, **options)

    async def contracts(self, tax_id: str, *, status: str | None = None) -> list[Contract]:
        """One party's contracts, latest start first; ``[]`` when it has none.

        Raises ``ValueError`` for a blank tax id or one holding a comma (the register reads a comma
        as a list, which it refuses).
        """
        _check_tax_id(tax_id)
        params = {"party_tax_id": tax_id} if status is None else {"party_tax_id": tax_id, "status": status}
        return await self._call("GET", "/contracts", _contract_list, resource="contracts", params=params)

    async def contracts_many(
        self, tax_ids: Iterable[str], *, status: str | None = None
    ) -> dict[str, list[Contract]]:
        """Every asked tax id → its contracts (``[]`` when none): one call per tax id, at most
        ``max_in_flight`` at a time. Every tax id is checked as for ``contracts`` before any call."""
        keys = list(dict.fromkeys(tax_ids))
        for tax_id in keys:
            _check_tax_id(tax_id)

        async def fetch(batch: list[str]) -> list[tuple[str, list[Contract]]]:
            return [(batch[0], await self.contracts(batch[0], status=status))]

        return dict(await in_chunks(keys, 1, fetch))

    async def updated_since(self, day: date) -> list[Contract]:
        """Every contract changed on or after ``day``, by contract id (the register has no events)."""
        return await self._call(
            "GET",
            "/contracts",
            _contract_list,
            resource="contracts.updated_since",
            params={"updated_since": day.isoformat()},
        )

    async def contract(self, contract_id: str) -> Contract:
        """One contract with its ``documents``; ``UpstreamNotFound`` when unknown."""
        return await self._call(
            "GET", f"/contracts/{quote(contract_id, safe='')}", _contract, resource="contract"
        )

    def _retryable(self, response: httpx.Response) -> bool:
        if response.status_code == 503:  # only "busy" passes soon; maintenance does not
            return response.text.strip() == "busy"
        return super()._retryable(response)


def _check_tax_id(tax_id: str) -> None:
    if not isinstance(tax_id, str) or not tax_id.strip() or "," in tax_id:
        raise ValueError("a tax id is one non-blank value without a comma")


# --- wire → domain ---------------------------------------------------------------------------


def _contract(raw: Any) -> Contract:
    value = raw.get("value")
    documents = raw.get("documents")
    return Contract(
        contract_id=raw["contract_id"],
        party_tax_id=raw["party_tax_id"],
        party_name=raw["party_name"],
        type=raw["type"],
        status=raw["status"],
        signed_on=opt(parse_date, raw.get("signed_on")),
        starts_on=parse_date(raw["starts_on"]),
        ends_on=opt(parse_date, raw.get("ends_on")),
        auto_renew=bool(raw["auto_renew"]),
        value=None if value is None else money_from_decimal(value, raw["currency"]),
        payment_terms=raw.get("payment_terms"),
        confidential=bool(raw["confidential"]),
        updated_on=parse_date(raw["updated_on"]),
        documents=None
        if documents is None
        else [
            ContractDocument(
                name=doc["name"], pages=int(doc["pages"]), uploaded_on=parse_date(doc["uploaded_on"])
            )
            for doc in documents
        ],
    )


def _contract_list(body: Any) -> list[Contract]:
    if not isinstance(body, list):
        raise TypeError("expected a JSON array")
    return [_contract(raw) for raw in body]
