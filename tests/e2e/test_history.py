"""``Customer.history`` in a scripted scenario: what was done through the gateway, what the systems sent
(signed webhooks from the demo systems), and the pool's own events — entry by entry, newest first, each
with its source; values through the reader's policy (the auditor reads who did what, never a value);
paging never repeats or skips, and a cursor never points at an entry the reader may not see."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

from .conftest import customer_id
from .running import Live, open_ticket, patch, token, until

HISTORY = """query($id: ID!, $after: String, $first: Int) { customer(id: $id) {
  history(first: $first, after: $after) { edges { cursor node { at source kind actor before after detail } }
  pageInfo { hasNextPage endCursor } } } }"""


async def _query(
    live: Live, query: str, variables: dict[str, Any], roles: list[str], sub: str = "u-hist"
) -> Any:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            live.ws_url.replace("ws:", "http:"),
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {token(roles, sub)}"},
        )
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


async def _history(
    live: Live, account_no: str, roles: list[str], sub: str = "u-hist", first: int = 5
) -> list[Any]:
    nodes: list[Any] = []
    after = None
    while True:
        data = await _query(
            live, HISTORY, {"id": customer_id(account_no), "after": after, "first": first}, roles, sub
        )
        page = data["customer"]["history"]
        nodes += [edge["node"] for edge in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            return nodes
        after = page["pageInfo"]["endCursor"]


async def test_the_history_is_what_happened(live: Live) -> None:
    rep, account_no, email = live.rep, live.own, live.own_email
    cid = customer_id(account_no)
    start = len(await _history(live, account_no, ["data_steward"]))
    # 1. a contact change through the gateway (and the sales system's change event for it)
    await _query(
        live,
        'mutation($id: ID!) { updateCustomerContact(input: {customerId: $id, title: "采购总监"}) { customer { title } } }',
        {"id": cid},
        ["support_agent"],
        "u-agent",
    )
    # 2. a change made in the sales system directly (its change event only)
    await patch(live, account_no, status="customer")
    # 3. a ticket filed at the helpdesk (its change event, by e-mail)
    await open_ticket(live, email, "发票问题")
    # 4. the rep releases the customer to the pool (a gateway write, a pool event, a sales event)
    await _query(
        live,
        'mutation($id: ID!) { releaseCustomer(id: $id, reason: NO_DEMAND, note: "预算冻结") { customer { inPool } } }',
        {"id": cid},
        ["sales_rep"],
        rep,
    )

    expected = [
        ("POOL", "release"),
        ("SALES", "account.owner_changed"),
        ("SUPPORT", "ticket.created"),
        ("SALES", "account.updated"),
        ("SALES", "account.updated"),
        ("GATEWAY", "changeContact"),
    ]
    entries: list[Any] = []

    async def settled() -> bool:
        nonlocal entries
        everything = await _history(live, account_no, ["data_steward", "support_agent"])
        entries = everything[: len(everything) - start]
        return len(entries) >= len(expected)

    for _ in range(200):
        if await settled():
            break
        await until(lambda: True, timeout=0.05)
    got = sorted((e["source"], e["kind"]) for e in entries)
    assert got == sorted(expected), entries
    # newest first
    moments = [datetime.fromisoformat(e["at"]) for e in entries]
    assert moments == sorted(moments, reverse=True)
    write = next(e for e in entries if e["source"] == "GATEWAY")
    assert (
        write["actor"] == "u-agent"
        and write["after"] == {"title": "采购总监"}
        and write["before"]["title"] != "采购总监"
    )
    release = next(e for e in entries if e["source"] == "POOL")
    assert release["actor"] == rep and release["detail"] == {
        "owner_id": rep,
        "reason": "no_demand",
        "note": "预算冻结",
    }
    ticket = next(e for e in entries if e["source"] == "SUPPORT")
    assert ticket["detail"]["requesterEmail"] == email

    # the auditor: who did what and when, never a value; no ticket (tickets are not an identity field)
    audited = (await _history(live, account_no, ["auditor"]))[: len(entries)]
    assert all(e["source"] != "SUPPORT" for e in audited)
    seen_write = next(e for e in audited if e["source"] == "GATEWAY")
    assert seen_write["actor"] == "u-agent" and seen_write["after"] == {"title": None}
    assert "note" not in (next(e for e in audited if e["source"] == "POOL")["detail"] or {})

    # finance (tickets denied, e-mails masked): no helpdesk entries, and no cursor points at one
    data = await _query(live, HISTORY, {"id": cid, "after": None, "first": 3}, ["finance"])
    finance = await _history(live, account_no, ["finance"], first=1)
    assert all(e["source"] != "SUPPORT" for e in finance)
    assert len(finance) == len(await _history(live, account_no, ["finance"], first=50))
    assert data["customer"]["history"]["edges"]


async def test_a_write_about_a_denied_list_is_not_in_the_readers_history(live: Live) -> None:
    """A ticket opened through the gateway is a history entry for who may see tickets, and no entry at all
    for finance (tickets denied): not even that it happened."""
    cid = customer_id(live.other)
    await _query(
        live,
        'mutation($id: ID!) { openTicket(input: {customerId: $id, subject: "咨询", body: "请回电"}) { ticket { id } } }',
        {"id": cid},
        ["support_agent"],
        "u-agent",
    )
    support = await _history(live, live.other, ["support_agent"], first=50)
    assert any(e["source"] == "GATEWAY" and e["kind"] == "openTicket" for e in support)
    finance = await _history(live, live.other, ["finance"], first=50)
    assert not any(e["kind"] == "openTicket" for e in finance)
