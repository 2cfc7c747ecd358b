"""Every endpoint of the three demo systems, success and documented errors.

Each answer goes through the ``client`` fixture, which checks it against the OpenAPI document of
its system; the tests here assert what a caller relies on beyond the schema (order, filters, ...).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from demo.data import DemoExamples
from demo.servers import DemoSystems

from .conftest import ClientFactory


@pytest.fixture
def sales_db(demo: DemoSystems) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(demo.data.sales_db)
    yield conn
    conn.close()


@pytest.fixture
def support_db(demo: DemoSystems) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(demo.data.support_db)
    yield conn
    conn.close()


def sales_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    return error


def support_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    errors = response.json()["errors"]
    assert errors and errors[0]["title"] and errors[0]["detail"]
    return str(errors[0]["title"])


def plain_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text
    return response.text


# --- all systems -----------------------------------------------------------------------------


@pytest.mark.parametrize("system", ["sales", "support", "contracts"])
def test_health_needs_no_auth(client: ClientFactory, system: str) -> None:
    response = client(system, auth=False).get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


# --- sales -----------------------------------------------------------------------------------


def test_sales_auth(client: ClientFactory) -> None:
    anonymous = client("sales", auth=False)
    sales_error(anonymous.get("/api/v1/accounts/A100001"), 401, "unauthorized")
    wrong = anonymous.get("/api/v1/users?ids=u-1001", headers={"X-Api-Key": "nope"})
    sales_error(wrong, 401, "unauthorized")


def test_sales_batch_read(sales: httpx.Client, examples: DemoExamples) -> None:
    ids = [examples.person, examples.unknown_account, examples.company, examples.pool]
    response = sales.get("/api/v1/accounts", params={"ids": ",".join(ids)})
    assert response.status_code == 200
    body = response.json()
    assert "meta" not in body
    assert [a["account_no"] for a in body["data"]] == [examples.person, examples.company, examples.pool]


def test_sales_batch_read_errors(sales: httpx.Client) -> None:
    too_many = ",".join(f"A{100001 + i}" for i in range(101))
    sales_error(sales.get("/api/v1/accounts", params={"ids": too_many}), 400, "bad_request")
    mixed = sales.get("/api/v1/accounts", params={"ids": "A100001", "page": "1"})
    sales_error(mixed, 400, "bad_request")


def test_sales_list_pages(sales: httpx.Client, sales_db: sqlite3.Connection) -> None:
    # 300 generated customers, and the duplicates and look-alikes planted after them (demo/data.py Planter)
    total = sales_db.execute("SELECT count(*) FROM accounts").fetchone()[0]
    assert total > 300
    first = sales.get("/api/v1/accounts").json()
    assert first["meta"] == {"page": 1, "per_page": 50, "total": total}
    second = sales.get("/api/v1/accounts", params={"page": 2, "per_page": 200}).json()
    assert second["meta"] == {"page": 2, "per_page": 200, "total": total}
    assert len(second["data"]) == total - 200
    numbers = [a["account_no"] for a in second["data"]]
    assert numbers == sorted(numbers)
    beyond = sales.get("/api/v1/accounts", params={"page": 9, "per_page": 200}).json()
    assert beyond["data"] == [] and beyond["meta"]["total"] == total


def test_sales_list_filters(sales: httpx.Client, examples: DemoExamples) -> None:
    east = sales.get(
        "/api/v1/accounts", params={"region": "east", "status": "customer", "per_page": 200}
    ).json()
    assert east["data"] and all(a["region"] == "east" and a["status"] == "customer" for a in east["data"])
    owned = sales.get("/api/v1/accounts", params={"owner_id": examples.rep, "per_page": 200}).json()
    assert owned["data"] and all(a["owner_id"] == examples.rep for a in owned["data"])
    pool = sales.get("/api/v1/accounts", params={"unowned": "true", "per_page": 200}).json()
    assert pool["data"] and all(a["owner_id"] is None and a["pool_since"] for a in pool["data"])


def test_sales_list_search_is_case_insensitive(sales: httpx.Client, examples: DemoExamples) -> None:
    account = sales.get(f"/api/v1/accounts/{examples.mixed_case_email}").json()
    local = account["email"].split("@")[0]
    found = sales.get("/api/v1/accounts", params={"q": local.swapcase(), "per_page": 200}).json()
    assert examples.mixed_case_email in [a["account_no"] for a in found["data"]]
    by_name = sales.get("/api/v1/accounts", params={"q": account["name"][1:4]}).json()
    assert examples.mixed_case_email in [a["account_no"] for a in by_name["data"]]


def test_sales_list_updated_since_is_inclusive(sales: httpx.Client, sales_db: sqlite3.Connection) -> None:
    (latest,) = sales_db.execute("SELECT max(updated_at) FROM accounts").fetchone()
    found = sales.get("/api/v1/accounts", params={"updated_since": latest}).json()
    assert found["data"] and all(a["updated_at"] >= latest for a in found["data"])


def test_sales_list_errors(sales: httpx.Client, examples: DemoExamples) -> None:
    both = sales.get("/api/v1/accounts", params={"owner_id": examples.rep, "unowned": "true"})
    sales_error(both, 400, "bad_request")
    sales_error(sales.get("/api/v1/accounts", params={"per_page": 201}), 400, "bad_request")
    sales_error(sales.get("/api/v1/accounts", params={"region": "mars"}), 400, "bad_request")
    sales_error(sales.get("/api/v1/accounts", params={"updated_since": "yesterday"}), 400, "bad_request")


def test_sales_get_account(sales: httpx.Client, examples: DemoExamples) -> None:
    response = sales.get(f"/api/v1/accounts/{examples.person}")
    assert response.status_code == 200
    account = response.json()
    assert response.headers["ETag"] == f'"{account["version"]}"'
    assert account["kind"] == "person" and account["tax_id"] is None and account["contact_name"] is None
    sales_error(sales.get(f"/api/v1/accounts/{examples.unknown_account}"), 404, "not_found")


def test_sales_patch(sales: httpx.Client) -> None:
    before = sales.get("/api/v1/accounts/A100201").json()
    response = sales.patch("/api/v1/accounts/A100201", json={"title": "首席信息官", "region": "central"})
    assert response.status_code == 200
    after = response.json()
    assert after["title"] == "首席信息官" and after["region"] == "central"
    assert after["version"] == before["version"] + 1
    assert after["updated_at"] > before["updated_at"]
    assert response.headers["ETag"] == f'"{after["version"]}"'
    assert sales.get("/api/v1/accounts/A100201").json() == after


def test_sales_patch_errors(sales: httpx.Client, examples: DemoExamples) -> None:
    bad = sales.patch("/api/v1/accounts/A100202", json={"email": "not-an-email", "region": "mars"})
    error = sales_error(bad, 422, "invalid")
    assert set(error["fields"]) == {"email", "region"}
    sales_error(sales.patch("/api/v1/accounts/A100202", json={"name": "改名"}), 422, "invalid")
    person = sales.patch(f"/api/v1/accounts/{examples.person}", json={"contact_name": "某人"})
    sales_error(person, 422, "invalid")
    sales_error(
        sales.patch(f"/api/v1/accounts/{examples.unknown_account}", json={"title": "x"}), 404, "not_found"
    )
    not_json = sales.patch(
        "/api/v1/accounts/A100202", content=b"{", headers={"content-type": "application/json"}
    )
    sales_error(not_json, 400, "bad_request")
    stale = sales.patch("/api/v1/accounts/A100202", json={"title": "x"}, headers={"If-Match": '"999"'})
    sales_error(stale, 412, "precondition_failed")


def test_sales_put_owner(sales: httpx.Client, examples: DemoExamples) -> None:
    to_pool = sales.put("/api/v1/accounts/A100203/owner", json={"owner_id": None})
    assert to_pool.status_code == 200
    pooled = to_pool.json()
    assert pooled["owner_id"] is None and pooled["owner_since"] is None and pooled["pool_since"]
    taken = sales.put(
        "/api/v1/accounts/A100203/owner",
        json={"owner_id": examples.rep},
        headers={"If-Match": f'"{pooled["version"]}"'},
    )
    assert taken.status_code == 200
    owned = taken.json()
    assert owned["owner_id"] == examples.rep and owned["owner_since"] and owned["pool_since"] is None
    assert owned["version"] == pooled["version"] + 1


def test_sales_put_owner_errors(sales: httpx.Client, examples: DemoExamples) -> None:
    nobody = sales.put("/api/v1/accounts/A100204/owner", json={"owner_id": "u-9999"})
    assert "owner_id" in sales_error(nobody, 422, "invalid")["fields"]
    sales_error(sales.put("/api/v1/accounts/A100204/owner", json={}), 422, "invalid")
    stale = sales.put("/api/v1/accounts/A100204/owner", json={"owner_id": None}, headers={"If-Match": '"0"'})
    sales_error(stale, 412, "precondition_failed")
    unknown = sales.put(f"/api/v1/accounts/{examples.unknown_account}/owner", json={"owner_id": None})
    sales_error(unknown, 404, "not_found")


def test_sales_orders(sales: httpx.Client, sales_db: sqlite3.Connection) -> None:
    nos = [r[0] for r in sales_db.execute("SELECT DISTINCT account_no FROM orders ORDER BY 1 DESC LIMIT 5")]
    response = sales.get("/api/v1/orders", params={"account_nos": ",".join([*nos, "A000000"])})
    orders = response.json()["data"]
    assert {o["account_no"] for o in orders} == set(nos)
    keys = [(o["account_no"], o["ordered_at"]) for o in orders]
    assert keys == sorted(keys, key=lambda k: (k[0], _desc(k[1])))
    assert all(o["total_cents"] == sum(i["qty"] * i["unit_price_cents"] for i in o["items"]) for o in orders)
    since = orders[0]["ordered_at"]
    recent = sales.get("/api/v1/orders", params={"account_nos": orders[0]["account_no"], "since": since})
    assert orders[0]["order_no"] in [o["order_no"] for o in recent.json()["data"]]
    assert all(o["ordered_at"] >= since for o in recent.json()["data"])


def test_sales_payments_and_opportunities(sales: httpx.Client, sales_db: sqlite3.Connection) -> None:
    nos = [r[0] for r in sales_db.execute("SELECT DISTINCT account_no FROM payments ORDER BY 1 LIMIT 8")]
    payments = sales.get("/api/v1/payments", params={"account_nos": ",".join(nos)}).json()["data"]
    keys = [(p["account_no"], p["paid_at"]) for p in payments]
    assert keys == sorted(keys, key=lambda k: (k[0], _desc(k[1])))
    for payment in payments:
        assert (payment["card_last4"] is not None) == (payment["method"] == "card")
        assert (payment["bank_account"] is not None) == (payment["method"] == "bank_transfer")
    opportunities = sales.get("/api/v1/opportunities", params={"account_nos": ",".join(nos)}).json()["data"]
    keys = [(o["account_no"], o["opportunity_id"]) for o in opportunities]
    assert opportunities and keys == sorted(keys)


def test_sales_activities(sales: httpx.Client, examples: DemoExamples) -> None:
    nos = f"{examples.company},{examples.person}"
    activities = sales.get("/api/v1/activities", params={"account_nos": nos}).json()["data"]
    keys = [(a["account_no"], a["occurred_at"]) for a in activities]
    assert activities and keys == sorted(keys, key=lambda k: (k[0], _desc(k[1])))
    newest = activities[0]["occurred_at"]
    since = sales.get("/api/v1/activities", params={"account_nos": nos, "since": newest}).json()["data"]
    assert activities[0] in since and all(a["occurred_at"] >= newest for a in since)


def test_sales_create_activity(sales: httpx.Client, examples: DemoExamples) -> None:
    body = {
        "account_no": "A100205",
        "type": "visit",
        "occurred_at": "2025-06-29T09:30:00+08:00",
        "subject": "上门拜访",
        "notes": "讨论续约。",
        "by_user": examples.rep,
    }
    response = sales.post("/api/v1/activities", json=body)
    assert response.status_code == 201
    created = response.json()
    assert created["activity_id"].startswith("AC") and created["occurred_at"] == "2025-06-29T01:30:00Z"
    listed = sales.get("/api/v1/activities", params={"account_nos": "A100205"}).json()["data"]
    assert created in listed


def test_sales_create_activity_errors(sales: httpx.Client, examples: DemoExamples) -> None:
    body = {"account_no": examples.unknown_account, "type": "call", "occurred_at": "2025-06-29T09:30:00Z"}
    body |= {"subject": "s", "notes": "n", "by_user": examples.rep}
    unknown = sales_error(sales.post("/api/v1/activities", json=body), 422, "invalid")
    assert "account_no" in unknown["fields"]
    bad_type = sales.post("/api/v1/activities", json=body | {"account_no": "A100205", "type": "fax"})
    assert "type" in sales_error(bad_type, 422, "invalid")["fields"]
    missing = sales.post("/api/v1/activities", json={"account_no": "A100205"})
    assert "subject" in sales_error(missing, 422, "invalid")["fields"]


@pytest.mark.parametrize("path", ["orders", "payments", "opportunities", "activities"])
def test_sales_account_nos_errors(sales: httpx.Client, path: str) -> None:
    sales_error(sales.get(f"/api/v1/{path}"), 400, "bad_request")
    too_many = ",".join(f"A{100001 + i}" for i in range(101))
    sales_error(sales.get(f"/api/v1/{path}", params={"account_nos": too_many}), 400, "bad_request")
    exactly = ",".join(f"A{100001 + i}" for i in range(100))
    assert sales.get(f"/api/v1/{path}", params={"account_nos": exactly}).status_code == 200


def test_sales_users(sales: httpx.Client, examples: DemoExamples) -> None:
    ids = f"{examples.rep},u-9999,{examples.manager}"
    users = sales.get("/api/v1/users", params={"ids": ids}).json()["data"]
    assert sorted(u["user_id"] for u in users) == sorted([examples.rep, examples.manager])
    assert {u["role"] for u in users} == {"rep", "manager"}
    sales_error(sales.get("/api/v1/users"), 400, "bad_request")


# --- support ---------------------------------------------------------------------------------


def test_support_auth(client: ClientFactory) -> None:
    anonymous = client("support", auth=False)
    assert support_error(anonymous.get("/v2/requesters?emails=a@x.cn"), 401) == "Unauthorized"
    wrong = anonymous.get("/v2/tickets/88001", headers={"Authorization": "Bearer nope"})
    assert support_error(wrong, 401) == "Unauthorized"


def test_support_search(support: httpx.Client, sales: httpx.Client, examples: DemoExamples) -> None:
    emails = [sales.get(f"/api/v1/accounts/{n}").json()["email"] for n in (examples.company, examples.person)]
    body = {"requester_emails": [e.upper() for e in emails], "limit": 500, "cursor": None}
    page = support.post("/v2/tickets/search", json=body).json()
    assert page["next_cursor"] is None
    tickets = page["tickets"]
    assert {t["requester_email"] for t in tickets} == {e.lower() for e in emails}
    keys = [(t["requester_email"], t["created_at"]) for t in tickets]
    assert keys == sorted(keys, key=lambda k: (k[0], -k[1]))
    solved = support.post("/v2/tickets/search", json=body | {"status": ["solved", "closed"]}).json()
    assert all(t["status"] in ("solved", "closed") for t in solved["tickets"])
    after = tickets[0]["updated_at"]
    recent = support.post("/v2/tickets/search", json=body | {"updated_after": after}).json()
    assert tickets[0] in recent["tickets"] and all(t["updated_at"] >= after for t in recent["tickets"])


def test_support_search_errors(support: httpx.Client) -> None:
    emails = [f"user{i}@example.cn" for i in range(201)]
    assert support_error(support.post("/v2/tickets/search", json={"requester_emails": emails}), 400)
    one = {"requester_emails": ["a@x.cn"]}
    assert support_error(support.post("/v2/tickets/search", json=one | {"limit": 501}), 400)
    assert support_error(support.post("/v2/tickets/search", json=one | {"cursor": "garbage"}), 400)
    assert support_error(support.post("/v2/tickets/search", json=one | {"status": ["lost"]}), 400)
    assert support_error(support.post("/v2/tickets/search", json={}), 400)


def test_support_ticket_with_comments(support: httpx.Client, support_db: sqlite3.Connection) -> None:
    (ticket_id,) = support_db.execute(
        "SELECT ticket_id FROM comments WHERE public = 0 ORDER BY ticket_id LIMIT 1"
    ).fetchone()
    body = support.get(f"/v2/tickets/{ticket_id}").json()
    assert body["ticket"]["id"] == ticket_id
    comments = body["comments"]
    assert [c["id"] for c in comments] == sorted(c["id"] for c in comments)
    assert comments[0]["author"] == body["ticket"]["requester_email"]
    assert any(c["public"] is False for c in comments)
    assert support_error(support.get("/v2/tickets/1"), 404) == "Not Found"
    assert support_error(support.get("/v2/tickets/abc"), 404) == "Not Found"


def test_support_create_ticket(support: httpx.Client) -> None:
    body = {
        "requester_email": "New.Person@Example.CN",
        "subject": "无法登录",
        "category": "incident",
        "priority": "high",
        "channel": "web",
        "body": "登录时提示密码错误。",
    }
    response = support.post("/v2/tickets", json=body)
    assert response.status_code == 201
    ticket = response.json()["ticket"]
    assert ticket["requester_email"] == "new.person@example.cn"
    assert ticket["status"] == "new" and ticket["satisfaction"] is None
    fetched = support.get(f"/v2/tickets/{ticket['id']}").json()
    assert fetched["comments"][0]["body"] == body["body"]
    requesters = support.get("/v2/requesters", params={"emails": "NEW.PERSON@example.cn"}).json()
    assert [r["email"] for r in requesters["requesters"]] == ["new.person@example.cn"]
    assert support_error(support.post("/v2/tickets", json=body | {"category": "praise"}), 400)


def test_support_requesters(support: httpx.Client, sales: httpx.Client, examples: DemoExamples) -> None:
    email = sales.get(f"/api/v1/accounts/{examples.mixed_case_email}").json()["email"]
    assert email != email.lower()
    found = support.get("/v2/requesters", params={"emails": f"{email},nobody@nowhere.cn"}).json()
    if found["requesters"]:  # the account may have no tickets, hence no requester
        assert [r["email"] for r in found["requesters"]] == [email.lower()]
    company = sales.get(f"/api/v1/accounts/{examples.company}").json()["email"]
    found = support.get("/v2/requesters", params={"emails": company.upper()}).json()
    assert [r["email"] for r in found["requesters"]] == [company.lower()]
    too_many = ",".join(f"user{i}@example.cn" for i in range(201))
    assert support_error(support.get("/v2/requesters", params={"emails": too_many}), 400)
    assert support_error(support.get("/v2/requesters"), 400)


def test_support_satisfaction(support: httpx.Client, support_db: sqlite3.Connection) -> None:
    (rated,) = support_db.execute(
        "SELECT requester_email FROM tickets WHERE sat_score IS NOT NULL ORDER BY 1 LIMIT 1"
    ).fetchone()
    scores = [
        r[0] for r in support_db.execute("SELECT sat_score FROM tickets WHERE requester_email = ?", (rated,))
    ]
    asked = [rated.upper(), "nobody@nowhere.cn"]
    summaries = support.get("/v2/satisfaction", params={"emails": ",".join(asked)}).json()["summaries"]
    by_email = {s["email"]: s for s in summaries}
    assert set(by_email) == {rated, "nobody@nowhere.cn"}
    real = [s for s in scores if s is not None]
    assert by_email[rated]["rated"] == len(real)
    assert by_email[rated]["average"] == pytest.approx(sum(real) / len(real), abs=0.01)
    assert by_email["nobody@nowhere.cn"] == {
        "email": "nobody@nowhere.cn",
        "rated": 0,
        "average": None,
        "last_rated_at": None,
    }
    too_many = ",".join(f"user{i}@example.cn" for i in range(201))
    assert support_error(support.get("/v2/satisfaction", params={"emails": too_many}), 400)


# --- contracts -------------------------------------------------------------------------------


def test_contracts_auth(client: ClientFactory, examples: DemoExamples) -> None:
    anonymous = client("contracts", auth=False)
    response = anonymous.get("/contracts", params={"party_tax_id": examples.unknown_tax_id})
    plain_error(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    plain_error(anonymous.get("/contracts/HT-2024-00001", auth=("gateway", "wrong")), 401)


def test_contracts_by_party(contracts: httpx.Client, sales: httpx.Client, examples: DemoExamples) -> None:
    party = sales.get(f"/api/v1/accounts/{examples.confidential_contract}").json()
    found = contracts.get("/contracts", params={"party_tax_id": party["tax_id"]}).json()
    assert found and all(
        c["party_tax_id"] == party["tax_id"] and c["party_name"] == party["name"] for c in found
    )
    starts = [c["starts_on"] for c in found]
    assert starts == sorted(starts, reverse=True)
    assert any(c["confidential"] for c in found)  # the register does not filter: callers must
    active = contracts.get("/contracts", params={"party_tax_id": party["tax_id"], "status": "active"}).json()
    assert active and all(c["status"] == "active" for c in active)
    assert contracts.get("/contracts", params={"party_tax_id": examples.unknown_tax_id}).json() == []


def test_contracts_updated_since(contracts: httpx.Client) -> None:
    found = contracts.get("/contracts", params={"updated_since": "2025-06-01"}).json()
    ids = [c["contract_id"] for c in found]
    assert found and ids == sorted(ids) and all(c["updated_on"] >= "2025-06-01" for c in found)
    day = found[0]["updated_on"]
    assert found[0] in contracts.get("/contracts", params={"updated_since": day}).json()


def test_contracts_list_errors(contracts: httpx.Client, examples: DemoExamples) -> None:
    plain_error(contracts.get("/contracts"), 400)
    both = {"party_tax_id": examples.unknown_tax_id, "updated_since": "2025-01-01"}
    plain_error(contracts.get("/contracts", params=both), 400)
    comma = {"party_tax_id": f"{examples.unknown_tax_id},{examples.unknown_tax_id}"}
    plain_error(contracts.get("/contracts", params=comma), 400)
    plain_error(contracts.get("/contracts", params={"updated_since": "01/06/2025"}), 400)
    plain_error(contracts.get("/contracts", params={"updated_since": "2025-01-01", "status": "x"}), 400)


def test_contracts_one_with_documents(contracts: httpx.Client, examples: DemoExamples) -> None:
    nda = contracts.get(f"/contracts/{examples.nda_contract_id}").json()
    assert nda["type"] == "nda" and nda["value"] is None and nda["documents"]
    draft = contracts.get(f"/contracts/{examples.draft_contract_id}").json()
    assert draft["status"] == "draft" and draft["signed_on"] is None
    plain_error(contracts.get("/contracts/HT-1999-99999"), 404)


def _desc(text: str) -> tuple[int, ...]:
    """Sort key that orders ISO strings descending."""
    return tuple(-ord(ch) for ch in text)
