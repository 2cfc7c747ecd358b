import asyncio
import base64
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import pytest

from connectors import ContractsConnector, UpstreamNotFound, UpstreamUnavailable
from connectors.models import Contract, ContractDocument, Money, System
from tests.connectors.fakes import Handler, Recorder, raw_contract

BASE_URL = "http://register.internal:8003"
USER, PASSWORD = "gateway", "pw-contracts-90d1"


def contracts(handler: Handler, **options: Any) -> tuple[ContractsConnector, Recorder]:
    recorder = Recorder(handler)
    return ContractsConnector(BASE_URL, USER, PASSWORD, transport=recorder.transport, **options), recorder


class Register:
    """A slow register that answers 503 busy past 4 calls in flight, and measures the peak."""

    def __init__(self, limit: int = 4) -> None:
        self.limit = limit
        self.in_flight = 0
        self.peak = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.in_flight >= self.limit:
            return httpx.Response(503, text="busy")
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(0.01)
        finally:
            self.in_flight -= 1
        if request.url.path.startswith("/contracts/"):
            return httpx.Response(200, json={**raw_contract(), "documents": []})
        tax_id = request.url.params.get("party_tax_id", "")
        return httpx.Response(200, json=[raw_contract(f"HT-2024-{tax_id[-5:]}", party_tax_id=tax_id)])


async def test_contract_maps_every_field_with_documents() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        documents = [{"name": "主合同.pdf", "pages": 12, "uploaded_on": "2024-01-16"}]
        return httpx.Response(200, json={**raw_contract(), "documents": documents})

    connector, recorder = contracts(handler)
    async with connector:
        contract = await connector.contract("HT-2024-00123")

    assert recorder.last.url.path == "/contracts/HT-2024-00123"
    assert recorder.last.headers["Authorization"] == "Basic " + base64.b64encode(
        f"{USER}:{PASSWORD}".encode()
    ).decode("ascii")
    assert contract == Contract(
        contract_id="HT-2024-00123",
        party_tax_id="91310115MA1K4Q2X3L",
        party_name="上海澄川科技有限公司",
        type="sales",
        status="active",
        signed_on=date(2024, 1, 15),
        starts_on=date(2024, 2, 1),
        ends_on=date(2025, 1, 31),
        auto_renew=True,
        value=Money(Decimal("125000.00"), "CNY"),
        payment_terms="NET30",
        confidential=False,
        updated_on=date(2024, 6, 30),
        documents=[ContractDocument(name="主合同.pdf", pages=12, uploaded_on=date(2024, 1, 16))],
    )


async def test_party_contracts_in_register_order_with_nulls() -> None:
    nda = raw_contract(
        "HT-2024-00200",
        type="nda",
        status="draft",
        value=None,
        signed_on=None,
        ends_on=None,
        payment_terms=None,
        confidential=True,
    )

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=[nda, raw_contract()])

    connector, recorder = contracts(handler)
    async with connector:
        found = await connector.contracts("91310115MA1K4Q2X3L", status="draft")

    assert dict(recorder.last.url.params) == {"party_tax_id": "91310115MA1K4Q2X3L", "status": "draft"}
    assert [c.contract_id for c in found] == ["HT-2024-00200", "HT-2024-00123"]
    first = found[0]
    assert (first.value, first.signed_on, first.ends_on, first.payment_terms) == (None, None, None, None)
    assert first.confidential is True
    assert first.documents is None  # only the single-contract read carries documents


async def test_party_without_contracts_is_empty() -> None:
    connector, _ = contracts(lambda request: httpx.Response(200, json=[]))
    async with connector:
        assert await connector.contracts("91310115MA1K4Q2X3L") == []


@pytest.mark.parametrize("tax_id", ["91310115MA1K4Q2X3L,91310115MA1K4Q2X3M", "", "  ", ","])
async def test_never_sends_a_comma_or_a_blank(tax_id: str) -> None:
    connector, recorder = contracts(lambda request: httpx.Response(200, json=[]))
    async with connector:
        with pytest.raises(ValueError):
            await connector.contracts(tax_id)
        with pytest.raises(ValueError):
            await connector.contracts_many(["91310115MA1K4Q2X3L", tax_id])
    assert recorder.requests == []


async def test_many_sends_exactly_one_tax_id_per_call() -> None:
    tax_ids = [f"9131011500000{n:05d}" for n in range(10)]
    register = Register()
    connector, recorder = contracts(register)
    async with connector:
        found = await connector.contracts_many([*tax_ids, tax_ids[0]])

    sent = [request.url.params.get_list("party_tax_id") for request in recorder.requests]
    assert sorted(sent) == sorted([tax_id] for tax_id in tax_ids)
    assert list(found) == tax_ids
    assert all(found[tax_id][0].party_tax_id == tax_id for tax_id in tax_ids)


async def test_never_more_than_four_in_flight() -> None:
    register = Register(limit=100)  # would accept more: the connector must hold back by itself
    connector, recorder = contracts(register)
    async with connector:
        found = await connector.contracts_many([f"9131011500000{n:05d}" for n in range(30)])
    assert len(found) == 30
    assert register.peak == 4
    assert len(recorder.requests) == 30  # nothing had to be retried


async def test_limit_holds_across_concurrent_callers() -> None:
    register = Register(limit=100)
    connector, recorder = contracts(register)
    async with connector:
        await asyncio.gather(
            connector.contracts_many([f"9131011500000{n:05d}" for n in range(12)]),
            connector.contracts_many([f"9131011500001{n:05d}" for n in range(12)]),
            *(connector.contract(f"HT-2024-{n:05d}") for n in range(6)),
            *(connector.contracts(f"9131011500002{n:05d}") for n in range(6)),
            connector.updated_since(date(2024, 6, 1)),
        )
    assert register.peak == 4
    assert len(recorder.requests) == 37


async def test_custom_in_flight_limit() -> None:
    register = Register(limit=100)
    connector, _ = contracts(register, max_in_flight=2)
    async with connector:
        await connector.contracts_many([f"9131011500000{n:05d}" for n in range(8)])
    assert register.peak == 2


async def test_busy_is_retried_after_a_short_back_off() -> None:
    answers = [httpx.Response(503, text="busy"), httpx.Response(200, json=[raw_contract()])]
    connector, recorder = contracts(lambda request: answers.pop(0))
    async with connector:
        found = await connector.contracts("91310115MA1K4Q2X3L")
    assert len(recorder.requests) == 2
    assert [c.contract_id for c in found] == ["HT-2024-00123"]


async def test_busy_past_the_attempt_budget_is_overloaded() -> None:
    connector, recorder = contracts(lambda request: httpx.Response(503, text="busy"), max_attempts=3)
    async with connector:
        with pytest.raises(UpstreamUnavailable) as caught:
            await connector.contracts("91310115MA1K4Q2X3L")
    assert (caught.value.system, caught.value.kind) == (System.CONTRACTS, "overloaded")
    assert len(recorder.requests) == 3


async def test_other_503_is_not_retried() -> None:
    connector, recorder = contracts(lambda request: httpx.Response(503, text="maintenance"))
    async with connector:
        with pytest.raises(UpstreamUnavailable) as caught:
            await connector.updated_since(date(2024, 6, 1))
    assert caught.value.kind == "overloaded"
    assert len(recorder.requests) == 1


async def test_updated_since_sends_the_day() -> None:
    connector, recorder = contracts(lambda request: httpx.Response(200, json=[raw_contract()]))
    async with connector:
        found = await connector.updated_since(date(2024, 6, 30))
    assert dict(recorder.last.url.params) == {"updated_since": "2024-06-30"}
    assert len(found) == 1


async def test_unknown_contract_is_not_found() -> None:
    connector, _ = contracts(lambda request: httpx.Response(404, text="no such contract HT-2024-99999"))
    async with connector:
        with pytest.raises(UpstreamNotFound) as caught:
            await connector.contract("HT-2024-99999")
    assert "HT-2024-99999" not in str(caught.value)


@pytest.mark.parametrize(
    ("response", "kind"),
    [
        (httpx.Response(401, text="unauthorized"), "unauthorized"),
        (httpx.Response(500, text="internal error"), "error"),
        (httpx.Response(200, json={"data": []}), "bad_response"),
        (httpx.Response(200, json=[raw_contract(value="12,5")]), "bad_response"),
        (httpx.Response(200, json=[raw_contract(starts_on="01/02/2024")]), "bad_response"),
    ],
)
async def test_failures(response: httpx.Response, kind: str) -> None:
    connector, _ = contracts(lambda request: response)
    async with connector:
        with pytest.raises(UpstreamUnavailable) as caught:
            await connector.contracts("91310115MA1K4Q2X3L")
    assert caught.value.kind == kind
    for secret in (USER, PASSWORD, BASE_URL, "register.internal", "91310115MA1K4Q2X3L"):
        assert secret not in f"{caught.value} {caught.value!r}"


async def test_one_failure_fails_the_batch() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.params["party_tax_id"].endswith("3"):
            return httpx.Response(500, text="boom")
        return httpx.Response(200, json=[])

    connector, _ = contracts(handler)
    async with connector:
        with pytest.raises(UpstreamUnavailable) as caught:
            await connector.contracts_many([f"9131011500000{n:05d}" for n in range(8)])
    assert caught.value.kind == "error"


async def test_health_needs_no_tax_id() -> None:
    connector, recorder = contracts(lambda request: httpx.Response(200, json={"status": "ok"}))
    async with connector:
        assert await connector.health() is True
    assert recorder.last.url.path == "/health"
