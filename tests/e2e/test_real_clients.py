"""The clients app teams use, against a running gateway (uvicorn) over the demo systems:

- Python ``gql`` 4 over HTTP (httpx) and over WebSocket (graphql-transport-ws);
- Apollo Client 4 with its persisted-queries link, and graphql-ws 6, in Node (``tests/clients/``,
  pinned by its package-lock; ``make test`` installs it).

Each runs the README's customer-360 as a sales rep on a pool customer (masked contact data, denied
relations with FORBIDDEN errors, the rest of the answer kept) and receives a subscription event after
a change made in the sales system. Without Node these skip, except under ``CG_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from gql import Client, GraphQLRequest
from gql.transport.exceptions import TransportQueryError
from gql.transport.httpx import HTTPXAsyncTransport
from gql.transport.websockets import WebsocketsTransport

from .conftest import customer_id
from .running import Live, patch, subscribed, token, until

CLIENTS = Path(__file__).resolve().parents[1] / "clients"
REQUIRED = os.environ.get("CG_REQUIRE_SERVICES") == "1"

CUSTOMER_360 = """
query Customer360($id: ID!) {
  customer(id: $id) {
    accountNo name email phone address taxId inPool
    orders(first: 5) { orderNo }
    tickets(first: 5) { id subject }
    satisfaction { rated average }
    contracts { contractId }
    lastContactAt dormant
  }
}
"""
CHANGED = "subscription($id: ID!) { customerChanged(id: $id) { kind customer { accountNo title phone } } }"


def _assert_a_reps_view_of_a_pool_customer(
    data: dict[str, Any], errors: list[dict[str, Any]], account_no: str
) -> None:
    customer = data["customer"]
    assert customer["accountNo"] == account_no and customer["inPool"] is True
    assert "***@" in customer["email"] and "*" in customer["phone"]  # masked, e.g. +86*******5678
    assert customer["orders"] is None and customer["tickets"] is None and customer["address"] is None
    denied = {tuple(str(p) for p in error["path"]) for error in errors if error["code"] == "FORBIDDEN"}
    assert {("customer", "orders"), ("customer", "tickets"), ("customer", "address")} <= denied


# --- Python: gql ---------------------------------------------------------------------------------


async def test_gql_over_http_gets_the_partial_answer_from_the_error(live: Live) -> None:
    """The README's gql snippet: a denied field makes gql raise; ``e.data`` holds the rest."""
    url = live.ws_url.replace("ws:", "http:")
    transport = HTTPXAsyncTransport(
        url=url, headers={"Authorization": f"Bearer {token(['sales_rep'], live.rep)}"}
    )
    async with Client(transport=transport) as session:
        with pytest.raises(TransportQueryError) as raised:
            await session.execute(
                GraphQLRequest(CUSTOMER_360, variable_values={"id": customer_id(live.pool)})
            )
    error = raised.value
    assert error.data is not None and error.errors is not None
    errors = [{"code": e["extensions"]["code"], "path": e["path"]} for e in error.errors]
    _assert_a_reps_view_of_a_pool_customer(error.data, errors, live.pool)


async def test_gql_over_websockets_receives_a_change(live: Live) -> None:
    await until(lambda: live.gateway.live.bus.subscribers == 0)
    transport = WebsocketsTransport(
        url=live.ws_url,
        init_payload={"Authorization": f"Bearer {token(['sales_rep'], live.rep)}"},
        subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
    )
    async with Client(transport=transport) as session:
        events = session.subscribe(GraphQLRequest(CHANGED, variable_values={"id": customer_id(live.pool)}))

        async def first() -> dict[str, Any]:
            async for event in events:
                return event
            raise AssertionError("the subscription ended without an event")

        waiting = asyncio.ensure_future(first())
        await subscribed(live, 1)
        await patch(live, live.pool, title="Procurement lead (gql)")
        event = await asyncio.wait_for(waiting, 5)
    change = event["customerChanged"]
    assert change["kind"] == "ACCOUNT_UPDATED"
    assert change["customer"]["title"] == "Procurement lead (gql)" and "*" in change["customer"]["phone"]


# --- Node: Apollo Client and graphql-ws ------------------------------------------------------------


def _node() -> str:
    node = shutil.which("node")
    installed = (CLIENTS / "node_modules" / "@apollo" / "client").is_dir()
    if node and installed:
        return node
    reason = "node is not installed" if not node else "tests/clients/node_modules is missing (make install)"
    if REQUIRED:
        pytest.fail(f"CG_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


async def test_apollo_client_with_persisted_queries_and_graphql_ws(live: Live) -> None:
    node = _node()
    await until(lambda: live.gateway.live.bus.subscribers == 0)
    url = live.ws_url.replace("ws:", "http:")
    process = await asyncio.create_subprocess_exec(
        node,
        str(CLIENTS / "apollo.mjs"),
        url,
        token(["sales_rep"], live.rep),
        customer_id(live.pool),
        cwd=CLIENTS,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    steps: dict[str, dict[str, Any]] = {}
    try:

        async def step(name: str) -> dict[str, Any]:
            while name not in steps:
                assert process.stdout is not None
                line = await asyncio.wait_for(process.stdout.readline(), 20)
                if not line:
                    assert process.stderr is not None
                    raise AssertionError((await process.stderr.read()).decode())
                message = json.loads(line)
                steps[message["step"]] = message
            return steps[name]

        first = await step("query")
        _assert_a_reps_view_of_a_pool_customer(first["data"], first["errors"], live.pool)
        again = await step("again")
        # APQ: a hash alone (not found), then hash + query (registered), then the hash alone (a hit)
        assert again["sent"] == ["hash", "query", "hash"] and again["same"] is True
        await step("subscribed")
        await subscribed(live, 1)
        await patch(live, live.pool, title="Procurement lead (Apollo)")
        event = await step("event")
        assert event["error"] is None
        customer = event["data"]["customerChanged"]["customer"]
        assert customer["title"] == "Procurement lead (Apollo)" and "*" in customer["phone"]
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


# --- the README's snippets, as pasted (only the gateway's address differs) ----------------------------

README = Path(__file__).resolve().parents[2] / "README.md"


def _snippet(language: str, marker: str) -> str:
    blocks = README.read_text(encoding="utf-8").split("```" + language + "\n")[1:]
    [block] = [b.split("```", 1)[0] for b in blocks if marker in b]
    return block


async def test_the_readmes_gql_snippet_works_as_pasted(live: Live) -> None:
    code = _snippet("python", "TransportQueryError").replace("127.0.0.1:8000", live.ws_url.split("/")[2])
    printed: list[Any] = []
    namespace: dict[str, Any] = {
        "token": token(["sales_rep"], live.rep),
        "customer_id": customer_id(live.pool),
    }
    body = "\n".join("    " + line for line in code.splitlines())
    exec(f"async def snippet(print):\n{body}\n    return data, errors\n", namespace)
    await until(lambda: live.gateway.live.bus.subscribers == 0)
    running = asyncio.ensure_future(namespace["snippet"](printed.append))
    await subscribed(live, 1)
    await patch(live, live.pool, title="Procurement lead (README gql)")
    data, errors = await asyncio.wait_for(running, 10)
    assert "*" in data["customer"]["phone"] and data["customer"]["orders"] is None
    assert errors[0]["extensions"]["code"] == "FORBIDDEN"
    assert printed == [{"kind": "ACCOUNT_UPDATED", "customer": {"title": "Procurement lead (README gql)"}}]


async def test_the_readmes_apollo_snippet_works_as_pasted(live: Live, tmp_path: Path) -> None:
    node = _node()
    code = _snippet("js", "ApolloClient").replace("127.0.0.1:8000", live.ws_url.split("/")[2])
    script = CLIENTS / f"readme-{os.getpid()}.mjs"  # beside node_modules, so the imports resolve
    script.write_text(
        f"const token = {json.dumps(token(['sales_rep'], live.rep))};\n"
        f"const id = {json.dumps(customer_id(live.pool))};\n"
        + code
        + "\nconsole.log(JSON.stringify({ data, codes: error.errors.map((e) => e.extensions.code) }));\n"
        + "process.exit(0);\n"
    )
    try:
        done = await asyncio.create_subprocess_exec(
            node, str(script), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(done.communicate(), 30)
    finally:
        script.unlink()
    assert done.returncode == 0, err.decode()
    answer = json.loads(out)
    assert "*" in answer["data"]["customer"]["phone"] and answer["data"]["customer"]["orders"] is None
    assert answer["codes"] == ["FORBIDDEN"]
