"""A request's objects are freed by reference counting the moment it ends, not by the cyclic
garbage collector: under load the collector's pauses (14–200 ms) and its CPU grew with the number
of requests in flight (issue #19). A reference cycle anywhere in a request's state — the
GraphQL execution context, the request context, its dataloaders, a resolver's closure — keeps all
of it (~340 objects an S1 request) until the next collection."""

from __future__ import annotations

import asyncio
import gc
from collections import Counter
from typing import Any

import orjson
from starlette.types import Message

from demo.data import DemoExamples
from gateway.auth import issue_token
from schema import Execution
from schema.context import RequestContext
from schema.loaders import Loader, Loaders

from .conftest import ALL_SEEING, SECRET, Graph, customer_id
from .test_upstream_calls import EVERY_FIELD

# What one request owns: none of it may wait for the collector.
REQUEST_STATE = (RequestContext, Loaders, Loader, Execution)


async def test_a_request_every_field_leaves_nothing_for_the_cycle_collector(
    graph: Graph, examples: DemoExamples
) -> None:
    app: Any = graph.client._transport.app  # type: ignore[attr-defined]
    token = issue_token(SECRET, sub="u-test", roles=ALL_SEEING)
    body = orjson.dumps(
        {
            "query": f"query($id: ID!) {{ customer(id: $id) {{ {EVERY_FIELD} }} }}",
            "variables": {"id": customer_id(examples.company)},
        }
    )

    async def one() -> None:
        """One request straight through the ASGI app (an HTTP test client has cycles of its own)."""
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/graphql",
            "raw_path": b"/graphql",
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"gateway"),
                (b"content-type", b"application/json"),
                (b"authorization", f"Bearer {token}".encode()),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 80),
            "state": {},
        }
        answered = asyncio.Event()
        received = False
        out: list[Message] = []

        async def receive() -> Message:
            nonlocal received
            if not received:
                received = True
                return {"type": "http.request", "body": body, "more_body": False}
            await answered.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            out.append(message)

        await app(scope, receive, send)
        answered.set()
        assert out[0]["status"] == 200
        result = orjson.loads(out[1]["body"])
        assert "errors" not in result and result["data"]["customer"]["owner"] is not None

    await one()  # first use: documents cached, connections opened
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(3):
            await one()
        gc.collect()
        left = Counter(type(o).__qualname__ for o in gc.garbage if isinstance(o, REQUEST_STATE))
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert left == Counter()
