"""The bulk-read watch through the gateway: a user served personal data of more than
CG_READ_ALERT_CUSTOMERS customers in an hour is counted (cg_bulk_read_alerts_total by roles) and logged
once, by user id, never with a customer or a value; identity fields alone do not count."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from demo.servers import DemoSystems
from gateway.app import create_app
from gateway.logs import configure_logging

from .conftest import Graph, settings_for

PAGE = """query($after: String) { customers(first: 4, after: $after) {
  pageInfo { endCursor } nodes { accountNo phone } } }"""
NAMES = "{ customers(first: 10) { nodes { name region } } }"


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    try:
        yield stream
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


@pytest.fixture
async def graph(systems: DemoSystems, tmp_path: Path) -> AsyncIterator[tuple[Graph, httpx.AsyncClient]]:
    settings = settings_for(
        systems,
        CG_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/gateway.db",
        CG_READ_ALERT_CUSTOMERS="5",
        CG_RATE_LIMIT_PER_MINUTE="0",
    )
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
    ):
        yield Graph(client), client


async def alerts(client: httpx.AsyncClient) -> dict[str, float]:
    text = (await client.get("/metrics")).text
    return {
        s.labels["roles"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "cg_bulk_read_alerts_total"
    }


async def test_bulk_reads_are_counted_and_logged_once(
    graph: tuple[Graph, httpx.AsyncClient],
    log_lines: io.StringIO,
) -> None:
    g, client = graph
    # identity fields only (an auditor's names): not personal data under the policy, never counted
    result = await g.query(NAMES, roles=["auditor"], sub="u-auditor-bulk")
    assert len(result["data"]["customers"]["nodes"]) == 10
    assert await alerts(client) == {}

    after = None
    phones: list[str] = []
    customers: list[str] = []
    for page in range(3):  # 4, 8, 12 distinct customers: the second page crosses 5
        result = await g.query(PAGE, {"after": after}, roles=["finance"], sub="u-fin-bulk")
        assert "errors" not in result, result
        phones += [n["phone"] for n in result["data"]["customers"]["nodes"] if n["phone"]]
        customers += [n["accountNo"] for n in result["data"]["customers"]["nodes"]]
        after = result["data"]["customers"]["pageInfo"]["endCursor"]
        assert await alerts(client) == ({} if page == 0 else {"finance": 1.0})

    warnings = [
        line
        for line in map(json.loads, log_lines.getvalue().splitlines())
        if line["message"].startswith("bulk read")
    ]
    assert len(warnings) == 1
    [warning] = warnings
    assert warning["level"] == "WARNING" and warning["user"] == "u-fin-bulk"
    assert (warning["roles"], warning["limit"]) == ("finance", 5)
    text = log_lines.getvalue()
    assert len(set(customers)) == 12 and not any(c in text for c in customers)  # never a customer
    assert phones and not any(p in text for p in phones)  # never a value
