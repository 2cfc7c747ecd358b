"""A running gateway (uvicorn, a real port) over in-memory demo systems that send signed webhooks to
it, and graphql-transport-ws helpers: shared by the live-update and real-client tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import websockets
from websockets.asyncio.client import ClientConnection

from demo.servers import DemoSystems
from gateway.app import Gateway, create_app
from gateway.auth import issue_token

from .conftest import CUSTOMERS, SECRET, SEED, settings_for

HOOK_SECRETS = {"sales": "live-e2e-sales-hook-secret", "support": "live-e2e-support-hook-secret"}
BUDGET = 2.0  # seconds from the change to the subscriber (the issue's bound)

CHANGES = """
subscription { myCustomersChanged { eventId kind system at customer { accountNo title phone email } } }
"""
ONE = """
subscription($id: ID!) { customerChanged(id: $id) { eventId kind system customer { accountNo title tickets(first: 1) { subject } } } }
"""


@dataclass
class Live:
    demo: DemoSystems
    gateway: Gateway
    ws_url: str
    rep: str  # a sales rep of the data
    own: str  # a customer of the rep, with an e-mail
    own_email: str
    pool: str  # a pool customer with an e-mail and a phone
    pool_email: str
    other: str  # another rep's customer


def _accounts(demo: DemoSystems, **params: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{demo.sales_url}/api/v1/accounts",
        params={"per_page": "200", **params},
        headers=demo.auth_headers("sales"),
        timeout=5,
    )
    response.raise_for_status()
    rows: list[dict[str, Any]] = response.json()["data"]
    return rows


def in_memory_copy(systems: DemoSystems, **overrides: Any) -> DemoSystems:
    """Demo systems serving an in-memory copy of the session's data (writes stay in the copy), on
    free ports; ``overrides``: any other ``DemoSystems`` option (latency, webhooks). Not started."""
    options: dict[str, Any] = {
        "customers": CUSTOMERS,
        "seed": SEED,
        "sales_port": 0,
        "support_port": 0,
        "contracts_port": 0,
        "support_rate": 10_000,
        "contracts_latency_ms": (1.0, 3.0),
        "in_memory": True,
    }
    return DemoSystems(systems.data_dir, **{**options, **overrides})


@pytest.fixture(scope="module")
def live(systems: DemoSystems, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    demo = in_memory_copy(
        systems, webhook_url=f"http://127.0.0.1:{port}/hooks", webhook_secrets=HOOK_SECRETS
    ).start()
    folder: Path = tmp_path_factory.mktemp("live")
    settings = settings_for(
        demo,
        CG_CACHE="true",  # the change must evict what the gateway had cached
        CG_DATABASE_URL=f"sqlite+aiosqlite:///{folder}/gateway.db",
        CG_SALES_WEBHOOK_SECRET=HOOK_SECRETS["sales"],
        CG_SUPPORT_WEBHOOK_SECRET=HOOK_SECRETS["support"],
        CG_CONTRACTS_POLL_INTERVAL="0",
    )
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", ws="auto"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.01)
        rep = demo.examples().rep
        own = next(a for a in _accounts(demo, owner_id=rep) if a["email"])
        pool = next(a for a in _accounts(demo, unowned="true") if a["email"] and a["phone"])
        other = next(a for a in _accounts(demo) if a["owner_id"] not in (None, rep))
        yield Live(
            demo=demo,
            gateway=app.state.gateway,
            ws_url=f"ws://127.0.0.1:{port}/graphql",
            rep=rep,
            own=own["account_no"],
            own_email=own["email"].lower(),
            pool=pool["account_no"],
            pool_email=pool["email"].lower(),
            other=other["account_no"],
        )
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        demo.stop()


def token(roles: list[str], sub: str = "u-live") -> str:
    return issue_token(SECRET, sub=sub, roles=roles)


class Socket:
    """A graphql-transport-ws client (enough of the protocol for tests)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def subscribe(self, op_id: str, query: str, variables: dict[str, Any] | None = None) -> None:
        payload = {"query": query, "variables": variables or {}}
        await self.ws.send(json.dumps({"id": op_id, "type": "subscribe", "payload": payload}))

    async def receive(self, timeout: float = 5.0) -> dict[str, Any]:
        while True:
            frame = await asyncio.wait_for(self.ws.recv(), timeout)
            # graphql-transport-ws is JSON in text frames: standard clients refuse binary ones
            assert isinstance(frame, str), "the gateway sent a binary frame"
            message: dict[str, Any] = json.loads(frame)
            if message["type"] == "ping":
                await self.ws.send(json.dumps({"type": "pong"}))
                continue
            return message

    async def silent(self, wait: float) -> None:
        with pytest.raises(TimeoutError):
            message = await self.receive(wait)
            print("unexpected:", message)


@contextlib.asynccontextmanager
async def connect(
    live: Live, bearer: str | None = None, *, header: str | None = None, init: bool = True
) -> AsyncIterator[Socket]:
    headers = {"Authorization": f"Bearer {header}"} if header else None
    async with websockets.connect(
        live.ws_url,
        subprotocols=["graphql-transport-ws"],
        additional_headers=headers,  # type: ignore[list-item]
    ) as ws:
        client = Socket(ws)
        if init:
            payload = {"Authorization": f"Bearer {bearer}"} if bearer else {}
            await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
            assert (await client.receive())["type"] == "connection_ack"
        yield client


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


@pytest.fixture
async def quiet(live: Live) -> Live:
    """No subscription of an earlier test is still registered (counts start from zero)."""
    await until(lambda: live.gateway.live.bus.subscribers == 0)
    return live


async def subscribed(live: Live, count: int) -> None:
    await until(lambda: live.gateway.live.bus.subscribers >= count)


async def patch(live: Live, account_no: str, **fields: str) -> float:
    """Change an account through the demo sales API; the moment it answered."""
    async with httpx.AsyncClient() as client:
        response = await client.patch(
            f"{live.demo.sales_url}/api/v1/accounts/{account_no}",
            json=fields,
            headers=live.demo.auth_headers("sales"),
        )
    assert response.status_code == 200, response.text
    return time.monotonic()


async def open_ticket(live: Live, email: str, subject: str) -> float:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{live.demo.support_url}/v2/tickets",
            json={
                "requester_email": email,
                "subject": subject,
                "category": "question",
                "priority": "normal",
                "channel": "web",
                "body": "Where is my invoice?",
            },
            headers=live.demo.auth_headers("support"),
        )
    assert response.status_code == 201, response.text
    return time.monotonic()
