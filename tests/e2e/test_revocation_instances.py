"""A revoked access grant stops within one request on another instance: two gateway processes
(``customer-graph serve``) on one PostgreSQL and no Redis, each keeping grants in its own cache for five
minutes. The grant is used on B (and cached there), revoked through A, and B's very next request no
longer gets the field: B checks a cached grant against the database before applying it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from demo.servers import DemoSystems
from gateway.auth import issue_token
from tests.store.conftest import pg_url, run_elsewhere  # noqa: F401 (pg_url: the fixture)

from .conftest import SECRET, customer_id, keyed_database
from .test_access_review import pool_by_region

pytestmark = pytest.mark.services

PHONE = "query($id: ID!) { customer(id: $id) { phone } }"
REP = {"sub": "u-inst-rep", "roles": ["sales_rep"]}
STEWARD = {"sub": "u-inst-steward", "roles": ["data_steward"]}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def instances(systems: DemoSystems, pg_url: str) -> Iterator[list[str]]:  # noqa: F811
    schema = f"cg_revoke_{time.time_ns() % 10**10}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CG_")}
    env |= {
        "CG_JWT_SECRET": SECRET,
        "CG_SALES_URL": systems.sales_url,
        "CG_SALES_API_KEY": systems.sales_api_key,
        "CG_SUPPORT_URL": systems.support_url,
        "CG_SUPPORT_TOKEN": systems.support_token,
        "CG_CONTRACTS_URL": systems.contracts_url,
        "CG_CONTRACTS_USER": systems.contracts_user,
        "CG_CONTRACTS_PASSWORD": systems.contracts_password,
        "CG_DATABASE_URL": f"{pg_url}?schema={schema}",  # one PostgreSQL for both, no Redis
        "CG_GRANT_CACHE_TTL": "300",  # the cache alone would serve a revoked grant for five minutes
        "CG_RATE_LIMIT_PER_MINUTE": "0",
        "CG_CONTRACTS_POLL_INTERVAL": "0",
        "CG_POOL_SWEEP_INTERVAL": "0",
        "CG_LOG_LEVEL": "WARNING",
        "CG_HOST": "127.0.0.1",
    }
    processes: list[tuple[subprocess.Popen[bytes], str]] = []
    for _ in range(2):
        port = _port()
        command = [
            sys.executable,
            "-c",
            "from gateway.cli import main; raise SystemExit(main())",
            "serve",
            "--port",
            str(port),
        ]
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        processes.append((process, f"http://127.0.0.1:{port}"))
        if len(processes) == 1:  # the first migrates the schema; the second starts on it
            _wait(*processes[0])
    try:
        _wait(*processes[1])
        yield [url for _, url in processes]
    finally:
        for process, _ in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process, _ in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        _drop_schema(pg_url, schema)


def _wait(process: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, "a gateway process exited"
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "a gateway did not start"
        time.sleep(0.1)


def _drop_schema(url: str, schema: str) -> None:
    async def drop() -> None:
        import sqlalchemy as sa

        db = keyed_database(url)
        try:
            async with db.engine.begin() as conn:
                await conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        finally:
            await db.aclose()

    run_elsewhere(drop())


def ask(url: str, query: str, variables: dict[str, Any], who: dict[str, Any]) -> dict[str, Any]:
    token = issue_token(SECRET, sub=who["sub"], roles=who["roles"], region=who.get("region"))
    response = httpx.post(
        url + "/graphql",
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {token}"},
        timeout=15,
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_a_grant_revoked_on_one_instance_stops_at_the_next_request_on_another(
    instances: list[str], systems: DemoSystems
) -> None:
    a, b = instances
    account_no = sorted(pool_by_region(systems).values())[0]
    gid = customer_id(account_no)
    assert "*" in ask(a, PHONE, {"id": gid}, REP)["data"]["customer"]["phone"]  # masked for a rep

    asked = ask(
        a,
        "mutation($i: RequestAccessInput!) { requestAccess(input: $i) { accessRequest { id } } }",
        {"i": {"customerId": gid, "fields": ["phone"], "reason": "回访"}},
        REP,
    )
    grant_id = asked["data"]["requestAccess"]["accessRequest"]["id"]
    decided = ask(
        a,
        "mutation($i: DecideAccessRequestInput!) { decideAccessRequest(input: $i) { accessRequest { status } } }",
        {"i": {"id": grant_id, "approve": True, "ttlHours": 2}},
        STEWARD,
    )
    assert decided["data"]["decideAccessRequest"]["accessRequest"]["status"] == "APPROVED", decided

    # B has not looked this rep's grants up yet: it reads them now and keeps them for five minutes
    assert "*" not in ask(b, PHONE, {"id": gid}, REP)["data"]["customer"]["phone"]
    assert "*" not in ask(b, PHONE, {"id": gid}, REP)["data"]["customer"]["phone"]  # from B's cache

    revoked = ask(
        a,
        "mutation($id: ID!, $r: String!) { revokeAccessGrant(id: $id, reason: $r) { accessRequest { status } } }",
        {"id": grant_id, "r": "审查后撤销"},
        STEWARD,
    )
    assert revoked["data"]["revokeAccessGrant"]["accessRequest"]["status"] == "REVOKED", revoked
    # the very next request on B: masked again, though B cached the grant for five minutes
    assert "*" in ask(b, PHONE, {"id": gid}, REP)["data"]["customer"]["phone"]
    assert "*" in ask(a, PHONE, {"id": gid}, REP)["data"]["customer"]["phone"]
