"""Three gateway processes (``customer-graph serve``) on one machine, one database and one Redis, over the
demo systems: the register's 4-in-flight contract holds for the deployment, not per process, and an
instance killed mid-load (SIGKILL) leaks no slot once its leases expire."""

from __future__ import annotations

import asyncio
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
import redis

from demo.servers import DemoSystems
from gateway.auth import issue_token
from tests.services import need_redis
from tests.store.conftest import pg_url, run_elsewhere  # noqa: F401 (pg_url: the fixture)

from .conftest import SECRET, keyed_database
from .running import in_memory_copy

pytestmark = pytest.mark.services

LEASE_TTL = 3.0
RATE = 40  # helpdesk calls a second, for the whole deployment
HOOK_SECRET = "scaleout-sales-webhook-secret"
QUERY = "query($no: String!) { customer(accountNo: $no) { contracts { contractId } } }"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def register(systems: DemoSystems) -> Iterator[DemoSystems]:
    with in_memory_copy(
        systems,
        contracts_latency_ms=(300.0, 300.0),  # inside the register's own gate: a 5th call is 503 "busy"
    ) as running:
        yield running


@pytest.fixture(scope="module")
def instances(register: DemoSystems, pg_url: str) -> Iterator[list[Any]]:  # noqa: F811
    redis_url = need_redis()
    schema = f"cg_scale_{time.time_ns() % 10**10}"
    client = redis.Redis.from_url(redis_url)
    client.delete("cg:slots:contracts")
    env = {
        **os.environ,
        "CG_JWT_SECRET": SECRET,
        "CG_SALES_URL": register.sales_url,
        "CG_SALES_API_KEY": register.sales_api_key,
        "CG_SUPPORT_URL": register.support_url,
        "CG_SUPPORT_TOKEN": register.support_token,
        "CG_CONTRACTS_URL": register.contracts_url,
        "CG_CONTRACTS_USER": register.contracts_user,
        "CG_CONTRACTS_PASSWORD": register.contracts_password,
        "CG_DATABASE_URL": f"{pg_url}?schema={schema}",  # one PostgreSQL for the three
        "CG_REDIS_URL": redis_url,
        "CG_CACHE": "false",
        # finance callers: 60 a minute, 3 at once (shared by the instances through Redis); the roles the
        # other tests use are unlimited in practice
        "CG_RATE_LIMIT_PER_MINUTE": "60",
        "CG_RATE_LIMIT_BURST": "3",
        "CG_RATE_LIMIT_PER_ROLE": "legal=6000000,support_agent=6000000",
        "CG_SALES_WEBHOOK_SECRET": HOOK_SECRET,
        "CG_CONTRACTS_POLL_INTERVAL": "0",
        "CG_POOL_SWEEP_INTERVAL": "0",
        "CG_UPSTREAM_TIMEOUT": "8",
        "CG_REQUEST_DEADLINE": "15",
        "CG_SHARED_LEASE_TTL": str(LEASE_TTL),
        "CG_LOG_LEVEL": "WARNING",
        "CG_HOST": "127.0.0.1",
        "CG_SUPPORT_MAX_RATE": str(RATE),
    }
    processes = []
    for _ in range(3):
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
    try:
        for process, url in processes:
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, "a gateway process exited"
                try:
                    if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "a gateway did not start"
                time.sleep(0.1)
        yield processes
    finally:
        for process, _ in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process, _ in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        client.close()
        _drop_schema(pg_url, schema)


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


def _customers(register: DemoSystems, count: int) -> list[str]:
    accounts = httpx.get(
        register.sales_url + "/api/v1/accounts",
        params={"per_page": 200},
        headers=register.auth_headers("sales"),
    ).json()["data"]
    return [a["account_no"] for a in accounts if a["tax_id"]][:count]


async def _load(urls: list[str], customers: list[str]) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {issue_token(SECRET, sub='u-scale', roles=['legal'])}"}
    async with httpx.AsyncClient(timeout=30) as client:

        async def one(i: int, no: str) -> dict[str, Any]:
            answer = await client.post(
                urls[i % len(urls)] + "/graphql",
                json={"query": QUERY, "variables": {"no": no}},
                headers=headers,
            )
            body: dict[str, Any] = answer.json()
            return body

        return list(await asyncio.gather(*(one(i, no) for i, no in enumerate(customers))))


def _register_load(register: DemoSystems) -> tuple[int, int]:
    stats = register.stats("contracts")
    return stats["statuses"].get("503", 0), max(
        (e["peak_in_flight"] for e in stats["endpoints"].values()), default=0
    )


async def test_the_registers_limit_holds_across_three_instances(
    instances: list[Any], register: DemoSystems
) -> None:
    urls = [url for _, url in instances]
    register.reset_stats()
    answers = await _load(urls, _customers(register, 24))  # 8 requests at once through each instance
    busy, peak = _register_load(register)
    assert busy == 0 and peak <= 4, (busy, peak)
    assert all(a["data"]["customer"]["contracts"] is not None for a in answers), [
        a.get("errors") for a in answers
    ][:3]


async def test_a_killed_instance_leaks_no_slot(instances: list[Any], register: DemoSystems) -> None:
    urls = [url for _, url in instances]
    victim, _ = instances[2]
    loading = asyncio.ensure_future(_load(urls[2:], _customers(register, 8)))
    await asyncio.sleep(0.4)  # its calls hold leases at the register now
    victim.send_signal(signal.SIGKILL)
    await asyncio.gather(loading, return_exceptions=True)
    await asyncio.sleep(LEASE_TTL + 0.5)  # its leases expire
    register.reset_stats()
    started = time.monotonic()
    answers = await _load(urls[:2], _customers(register, 16))
    busy, peak = _register_load(register)
    assert busy == 0 and peak == 4, (busy, peak)  # all four slots back in use, none beyond
    assert all(a["data"]["customer"]["contracts"] is not None for a in answers)
    assert (
        time.monotonic() - started < 5
    )  # 16 calls of 0.3 s, four at a time: ~1.2 s, not stuck on dead leases


async def test_the_helpdesks_rate_holds_across_three_instances(
    instances: list[Any], register: DemoSystems
) -> None:
    urls = [url for _, url in instances if _.poll() is None]
    accounts = httpx.get(
        register.sales_url + "/api/v1/accounts",
        params={"per_page": 200},
        headers=register.auth_headers("sales"),
    ).json()["data"]
    emails = [a["account_no"] for a in accounts if a["email"]][:80]
    headers = {"Authorization": f"Bearer {issue_token(SECRET, sub='u-rate', roles=['support_agent'])}"}
    register.reset_stats()
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=30) as client:
        await asyncio.gather(
            *(
                client.post(
                    urls[i % len(urls)] + "/graphql",
                    json={
                        "query": "query($no: String!) { customer(accountNo: $no) { tickets(first: 1) { id } } }",
                        "variables": {"no": no},
                    },
                    headers=headers,
                )
                for i, no in enumerate(emails)
            )
        )
    elapsed = time.monotonic() - started
    calls = register.stats("support")["count"]
    assert calls >= 80
    # at RATE a second for the deployment the calls take calls / RATE seconds (per process: a third of it)
    assert elapsed >= 0.8 * calls / RATE, (calls, elapsed)


async def test_a_callers_rate_limit_holds_across_instances(instances: list[Any]) -> None:
    urls = [url for process, url in instances if process.poll() is None]
    headers = {
        "Authorization": f"Bearer {issue_token(SECRET, sub=f'u-fin-{time.time_ns()}', roles=['finance'])}"
    }
    async with httpx.AsyncClient(timeout=10) as client:
        statuses = [
            (
                await client.post(
                    urls[i % len(urls)] + "/graphql", json={"query": "{ viewer { id } }"}, headers=headers
                )
            ).status_code
            for i in range(6)
        ]
    # a burst of 3 for the caller across the deployment (per instance it would have been 3 each)
    assert statuses.count(200) == 3 and statuses.count(429) == 3, statuses


async def test_a_webhook_taken_by_one_instance_reaches_a_subscriber_on_another(
    instances: list[Any], register: DemoSystems
) -> None:
    import hashlib
    import hmac
    import json

    import websockets

    urls = [url for process, url in instances if process.poll() is None]
    account_no = _customers(register, 1)[0]
    token = issue_token(SECRET, sub="u-steward", roles=["data_steward"])
    async with websockets.connect(
        urls[1].replace("http", "ws") + "/graphql", subprotocols=["graphql-transport-ws"]
    ) as ws:  # type: ignore[list-item]
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
        )
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        query = "subscription { myCustomersChanged { kind customer { accountNo } } }"
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
        await asyncio.sleep(0.5)  # subscribed on instance two
        body = json.dumps(
            {
                "event_id": f"ev-{time.time_ns()}",
                "type": "account.updated",
                "account_no": account_no,
                "occurred_at": "2026-12-04T00:00:00Z",
            }
        ).encode()
        signature = "sha256=" + hmac.new(HOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        accepted = httpx.post(
            urls[0] + "/hooks/sales",
            content=body,
            headers={"Content-Type": "application/json", "X-Sales-Signature": signature},
        )
        assert accepted.status_code == 202, accepted.text
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if message["type"] == "next":
                break
    change = message["payload"]["data"]["myCustomersChanged"]
    assert change["kind"] == "ACCOUNT_UPDATED" and change["customer"]["accountNo"] == account_no


async def test_no_accepted_event_is_lost_when_the_instance_that_took_it_dies(
    instances: list[Any], register: DemoSystems
) -> None:
    """Events acknowledged (202) by an instance that is then killed (SIGKILL) still reach subscribers:
    they were committed to the shared inbox before the 202, and another instance publishes them."""
    import hashlib
    import hmac
    import json

    import websockets

    alive = [(process, url) for process, url in instances if process.poll() is None]
    (_, survivor), (victim, doomed) = alive[0], alive[1]
    accounts = _customers(register, 30)[20:30]
    token = issue_token(SECRET, sub="u-steward-2", roles=["data_steward"])
    async with websockets.connect(
        survivor.replace("http", "ws") + "/graphql", subprotocols=["graphql-transport-ws"]
    ) as ws:  # type: ignore[list-item]
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
        )
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        query = "subscription { myCustomersChanged { kind customer { accountNo } } }"
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
        await asyncio.sleep(0.5)
        async with httpx.AsyncClient(timeout=10) as client:

            async def send(account_no: str) -> int:
                body = json.dumps(
                    {
                        "event_id": f"ev-{account_no}-{time.time_ns()}",
                        "type": "account.updated",
                        "account_no": account_no,
                        "occurred_at": "2026-12-04T00:00:00Z",
                    }
                ).encode()
                signature = "sha256=" + hmac.new(HOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
                answer = await client.post(
                    doomed + "/hooks/sales",
                    content=body,
                    headers={"Content-Type": "application/json", "X-Sales-Signature": signature},
                )
                return answer.status_code

            statuses = await asyncio.gather(*(send(no) for no in accounts))
        victim.send_signal(signal.SIGKILL)  # right after acknowledging: some may not be published yet
        assert statuses == [202] * len(accounts)
        seen: set[str] = set()
        deadline = time.monotonic() + 20
        while seen != set(accounts):
            message = json.loads(await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic())))
            if message["type"] == "next":
                seen.add(message["payload"]["data"]["myCustomersChanged"]["customer"]["accountNo"])
    assert seen == set(accounts)
