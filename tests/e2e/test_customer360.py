"""The gateway's customer-360 answer equals what the three systems hold, field by field.

The expected values are built here from direct HTTP calls to the demo systems, converted by the
graph's documented rules (camelCase, cents → Money, epochs → ISO UTC, upper-cased enums)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from connectors.normalize import normalize_phone
from demo.data import DemoExamples
from demo.servers import DemoSystems

from .conftest import ALL_SEEING, Graph, customer_id

QUERY = """
query Customer360($id: ID!) {
  customer(id: $id) {
    id accountNo kind name contactName title email phone address taxId region status inPool createdAt
    owner { userId name email region role }
    orders(first: 100) { orderNo accountNo orderedAt status total { amount currency }
                          items { sku name qty unitPrice { amount currency } } }
    payments(first: 100) { paymentId accountNo orderNo paidAt amount { amount currency } method
                            cardLast4 bankAccount invoiceNo }
    opportunities { opportunityId accountNo title stage amount { amount currency } expectedClose updatedAt }
    activities(first: 100) { activityId accountNo type occurredAt subject notes byUser }
    tickets(first: 100) { id requesterEmail subject category priority status channel assignee
                          createdAt updatedAt satisfaction { score comment } }
    satisfaction { rated average lastRatedAt }
    contracts { contractId partyTaxId partyName type status signedOn startsOn endsOn autoRenew
                value { amount currency } paymentTerms confidential updatedOn }
    lastContactAt dormant
  }
}
"""


def money_cents(cents: int, currency: str) -> dict[str, str]:
    return {"amount": f"{Decimal(cents) / 100:.2f}", "currency": currency}


def epoch(seconds: int | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def enum(value: str | None) -> str | None:
    return None if value is None else value.upper()


class Oracle:
    """Reads the three systems directly, as an app team would without the graph."""

    def __init__(self, systems: DemoSystems) -> None:
        self.systems = systems

    def get(self, system: str, path: str, **params: Any) -> Any:
        response = httpx.get(
            self.systems.urls[system] + path,
            params=params,
            headers=self.systems.auth_headers(system),
            timeout=10,
        )
        response.raise_for_status()
        return response.json()

    def tickets(self, email: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        body: dict[str, Any] = {"requester_emails": [email], "limit": 500, "cursor": None}
        while True:
            response = httpx.post(
                self.systems.support_url + "/v2/tickets/search",
                json=body,
                headers=self.systems.auth_headers("support"),
                timeout=10,
            )
            response.raise_for_status()
            page = response.json()
            found.extend(page["tickets"])
            if page["next_cursor"] is None:
                return found
            body["cursor"] = page["next_cursor"]

    def expected(self, account_no: str) -> dict[str, Any]:
        [account] = self.get("sales", "/api/v1/accounts", ids=account_no)["data"]
        by_account = {"account_nos": account_no}
        orders = self.get("sales", "/api/v1/orders", **by_account)["data"]
        payments = self.get("sales", "/api/v1/payments", **by_account)["data"]
        opportunities = self.get("sales", "/api/v1/opportunities", **by_account)["data"]
        activities = self.get("sales", "/api/v1/activities", **by_account)["data"]
        owner = None
        if account["owner_id"]:
            [user] = self.get("sales", "/api/v1/users", ids=account["owner_id"])["data"]
            owner = {**{k: user[k] for k in ("name", "email")}, "userId": user["user_id"]}
            owner["role"] = enum(user["role"])
            owner["region"] = enum(user["region"]) if user["region"] else None  # graph.md: enums upper-cased
        email = account["email"].strip().lower() if account["email"] else None
        tickets = self.tickets(email) if email else []
        satisfaction: dict[str, Any] | None = {
            "rated": 0,
            "average": None,
            "lastRatedAt": None,
        }  # no e-mail: nothing rated
        if email:
            [summary] = self.get("support", "/v2/satisfaction", emails=email)["summaries"]
            average = summary["average"]
            satisfaction = {
                "rated": summary["rated"],
                "average": None if average is None else float(round(Decimal(str(average)), 2)),
                "lastRatedAt": epoch(summary["last_rated_at"]),
            }
        contracts = (
            self.get("contracts", "/contracts", party_tax_id=account["tax_id"]) if account["tax_id"] else []
        )

        contact_times = [a["occurred_at"] for a in activities]
        contact_times += [epoch(max(t["created_at"], t["updated_at"])) for t in tickets]
        contact_times += [
            f"{c['signed_on']}T00:00:00Z" for c in contracts if c["signed_on"] and not c["confidential"]
        ]
        last_contact = max(contact_times) if contact_times else None
        dormant = (
            last_contact is None
            or (datetime.now(UTC) - datetime.fromisoformat(last_contact)).total_seconds() > 365 * 86400
        )

        return {
            "id": customer_id(account_no),
            "accountNo": account["account_no"],
            "kind": enum(account["kind"]),
            "name": account["name"],
            "contactName": account["contact_name"],
            "title": account["title"],
            "email": email,
            "phone": normalize_phone(account["phone"]) if account["phone"] else None,
            "address": account["address"],
            "taxId": account["tax_id"],
            "region": enum(account["region"]),
            "status": enum(account["status"]),
            "inPool": account["owner_id"] is None,
            "createdAt": account["created_at"],
            "owner": owner,
            "orders": [
                {
                    "orderNo": o["order_no"],
                    "accountNo": o["account_no"],
                    "orderedAt": o["ordered_at"],
                    "status": enum(o["status"]),
                    "total": money_cents(o["total_cents"], o["currency"]),
                    "items": [
                        {
                            "sku": i["sku"],
                            "name": i["name"],
                            "qty": i["qty"],
                            "unitPrice": money_cents(i["unit_price_cents"], o["currency"]),
                        }
                        for i in o["items"]
                    ],
                }
                for o in orders[:100]
            ],
            "payments": [
                {
                    "paymentId": p["payment_id"],
                    "accountNo": p["account_no"],
                    "orderNo": p["order_no"],
                    "paidAt": p["paid_at"],
                    "amount": money_cents(p["amount_cents"], p["currency"]),
                    "method": enum(p["method"]),
                    "cardLast4": p["card_last4"],
                    "bankAccount": p["bank_account"],
                    "invoiceNo": p["invoice_no"],
                }
                for p in payments[:100]
            ],
            "opportunities": [
                {
                    "opportunityId": o["opportunity_id"],
                    "accountNo": o["account_no"],
                    "title": o["title"],
                    "stage": enum(o["stage"]),
                    "amount": money_cents(o["amount_cents"], o["currency"]),
                    "expectedClose": o["expected_close"],
                    "updatedAt": o["updated_at"],
                }
                for o in opportunities
            ],
            "activities": [
                {
                    "activityId": a["activity_id"],
                    "accountNo": a["account_no"],
                    "type": enum(a["type"]),
                    "occurredAt": a["occurred_at"],
                    "subject": a["subject"],
                    "notes": a["notes"],
                    "byUser": a["by_user"],
                }
                for a in activities[:100]
            ],
            "tickets": [
                {
                    "id": str(t["id"]),
                    "requesterEmail": t["requester_email"],
                    "subject": t["subject"],
                    "category": enum(t["category"]),
                    "priority": enum(t["priority"]),
                    "status": enum(t["status"]),
                    "channel": enum(t["channel"]),
                    "assignee": t["assignee"],
                    "createdAt": epoch(t["created_at"]),
                    "updatedAt": epoch(t["updated_at"]),
                    "satisfaction": t["satisfaction"],
                }
                for t in tickets[:100]
            ],
            "satisfaction": satisfaction,
            "contracts": [
                {
                    "contractId": c["contract_id"],
                    "partyTaxId": c["party_tax_id"],
                    "partyName": c["party_name"],
                    "type": enum(c["type"]),
                    "status": enum(c["status"]),
                    "signedOn": c["signed_on"],
                    "startsOn": c["starts_on"],
                    "endsOn": c["ends_on"],
                    "autoRenew": c["auto_renew"],
                    "value": None
                    if c["value"] is None
                    else {"amount": c["value"], "currency": c["currency"]},
                    "paymentTerms": c["payment_terms"],
                    "confidential": c["confidential"],
                    "updatedOn": c["updated_on"],
                }
                for c in contracts
            ],
            "lastContactAt": last_contact,
            "dormant": dormant,
        }


@pytest.mark.parametrize(
    "kind", ["company", "person", "pool", "paged_tickets", "mixed_case_email", "no_email", "dormant"]
)
async def test_customer_360_equals_the_systems(
    graph: Graph, systems: DemoSystems, examples: DemoExamples, kind: str
) -> None:
    account_no = getattr(examples, kind)
    result = await graph.query(QUERY, {"id": customer_id(account_no)}, roles=ALL_SEEING)
    assert "errors" not in result, result.get("errors")
    got = result["data"]["customer"]
    want = Oracle(systems).expected(account_no)
    for field, value in want.items():
        assert got[field] == value, f"{kind} {account_no}: {field} differs"
    assert set(got) == set(want)


async def test_person_customer_has_no_tax_id_and_no_contracts(graph: Graph, examples: DemoExamples) -> None:
    result = await graph.query(
        "query($id: ID!) { customer(id: $id) { kind taxId contactName contracts { contractId } } }",
        {"id": customer_id(examples.person)},
        roles=ALL_SEEING,
    )
    assert result["data"]["customer"] == {
        "kind": "PERSON",
        "taxId": None,
        "contactName": None,
        "contracts": [],
    }


async def test_paged_tickets_customer_gets_every_ticket_in_order(
    graph: Graph, systems: DemoSystems, examples: DemoExamples
) -> None:
    oracle = Oracle(systems)
    [account] = oracle.get("sales", "/api/v1/accounts", ids=examples.paged_tickets)["data"]
    raw = oracle.tickets(account["email"].lower())
    assert len(raw) > 500
    result = await graph.query(
        "query($id: ID!) { customer(id: $id) { tickets(first: 100) { id createdAt } "
        "open: tickets(first: 100, status: [OPEN]) { id status } } }",
        {"id": customer_id(examples.paged_tickets)},
        roles=ALL_SEEING,
    )
    customer = result["data"]["customer"]
    assert [t["id"] for t in customer["tickets"]] == [str(t["id"]) for t in raw[:100]]
    assert [t["id"] for t in customer["open"]] == [str(t["id"]) for t in raw if t["status"] == "open"][:100]
