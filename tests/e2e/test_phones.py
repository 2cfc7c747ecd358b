"""Phones the systems hold with an extension typed in Chinese (``0591-35012910 转 705``) are served in
E.164 like any other, and masked from E.164 (they were served, and masked, in their raw form)."""

from __future__ import annotations

import re
from typing import Any

import httpx

from demo.data import DemoExamples
from demo.servers import DemoSystems

from .conftest import Graph

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
MASKED_E164 = re.compile(r"^\+[1-9]\d\*+\d{4}$")  # policy.md's phone mask over an E.164 number


async def _all_phones(graph: Graph, **who: Any) -> list[str]:
    phones: list[str] = []
    after = None
    while True:
        result = await graph.query(
            "query($after: String) { customers(first: 100, after: $after) {"
            " pageInfo { hasNextPage endCursor } nodes { phone } } }",
            {"after": after},
            **who,
        )
        connection = result["data"]["customers"]
        phones += [node["phone"] for node in connection["nodes"] if node["phone"] is not None]
        if not connection["pageInfo"]["hasNextPage"]:
            return phones
        after = connection["pageInfo"]["endCursor"]


async def test_every_phone_is_served_in_e164(graph: Graph, systems: DemoSystems) -> None:
    raw = httpx.get(
        systems.sales_url + "/api/v1/accounts",
        params={"per_page": 200},
        headers=systems.auth_headers("sales"),
    ).json()["data"]
    assert any("转" in (account["phone"] or "") for account in raw)  # the systems hold such phones
    phones = await _all_phones(graph, roles=["data_steward"])
    assert phones and [p for p in phones if not E164.match(p)] == []


async def test_masked_phones_are_masked_from_e164(graph: Graph, examples: DemoExamples) -> None:
    phones = await _all_phones(graph, roles=["finance"])  # finance: phone mask:phone on every row
    assert phones and [p for p in phones if not MASKED_E164.match(p)] == []
