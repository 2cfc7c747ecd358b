"""The gateway in-process (ASGI) over real demo systems on free ports, configured like production:
through ``CG_*`` environment variables only."""

from __future__ import annotations

import base64
import tempfile
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from demo.data import DemoExamples
from demo.servers import DemoSystems
from features.store import Database
from gateway.app import create_app
from gateway.auth import issue_token
from gateway.datakeys import open_database
from gateway.settings import Settings, load_settings

SECRET = "e2e-test-secret-0123456789abcdef"
CUSTOMERS = 300
SEED = 11
# Roles whose union sees every value in clear (the comparison tests need the raw data).
ALL_SEEING = ["data_steward", "finance", "support_agent", "legal", "executive"]


@pytest.fixture(scope="session")
def systems(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoSystems]:
    with DemoSystems(
        tmp_path_factory.mktemp("e2e-data"),
        customers=CUSTOMERS,
        seed=SEED,
        sales_port=0,
        support_port=0,
        contracts_port=0,
        support_rate=10_000,
        contracts_latency_ms=(1.0, 3.0),
    ) as running:
        yield running


@pytest.fixture(scope="session")
def examples(systems: DemoSystems) -> DemoExamples:
    return systems.examples()


# The gateway's own database (audit trail, access requests, pool history) for this test session.
DATABASE_DIR = tempfile.mkdtemp(prefix="cg-e2e-db-")
DATABASE_URL = f"sqlite+aiosqlite:///{DATABASE_DIR}/gateway.db"


def settings_for(systems: DemoSystems, **extra: str) -> Settings:
    environ = {
        "CG_DATABASE_URL": DATABASE_URL,
        "CG_SALES_URL": systems.sales_url,
        "CG_SALES_API_KEY": systems.sales_api_key,
        "CG_SUPPORT_URL": systems.support_url,
        "CG_SUPPORT_TOKEN": systems.support_token,
        "CG_CONTRACTS_URL": systems.contracts_url,
        "CG_CONTRACTS_USER": systems.contracts_user,
        "CG_CONTRACTS_PASSWORD": systems.contracts_password,
        "CG_JWT_SECRET": SECRET,
        "CG_CACHE": "false",  # most tests count upstream calls per request; test_cache.py turns it on
        "CG_RATE_LIMIT_PER_MINUTE": "0",  # one test caller sends more than a person; see test_request_limits.py
        "CG_CONTRACTS_POLL_INTERVAL": "0",  # no register polls in the middle of counted calls
        **extra,
    }
    return load_settings(environ=environ)


class Graph:
    """A GraphQL client for tests: ``await graph.query(q, variables, roles=[...])``."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def post(self, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
        return await self.client.post("/graphql", json=body, headers=headers or {})

    async def query(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        roles: list[str] | None = None,
        sub: str = "u-test",
        region: str | None = None,
        token: str | None = None,
    ) -> dict[str, Any]:
        headers = {}
        if token is None and roles is not None:
            token = issue_token(SECRET, sub=sub, roles=roles, region=region)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        response = await self.post({"query": query, "variables": variables or {}}, headers)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result


@pytest.fixture(scope="session")
async def graph(systems: DemoSystems) -> AsyncIterator[Graph]:
    app = create_app(settings_for(systems))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
    ):
        yield Graph(client)


def customer_id(account_no: str) -> str:
    return base64.urlsafe_b64encode(f"Customer:{account_no}".encode()).decode().rstrip("=")


# A running gateway over in-memory demo systems (tests/e2e/running.py), one per test module.
from .running import live, quiet  # noqa: E402, F401


def keyed_database(url: str | None) -> Database:
    """The gateway database at ``url`` with the data keys a development gateway of these tests uses (the key
    file beside the SQLite file, else ``var/data.key``): it opens the sealed values the gateway wrote."""
    return open_database(load_settings(environ={}), url)
