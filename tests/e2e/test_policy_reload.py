"""A running gateway follows its policy file: a change is picked up without a restart, a bad file
is refused and the previous policy stays in force, requests keep flowing throughout."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import httpx

from demo.data import DemoExamples
from demo.servers import DemoSystems
from gateway.app import create_app
from policies import DEFAULT_POLICY_PATH

from .conftest import Graph, customer_id, settings_for

QUERY = "query($id: ID!) { customer(id: $id) { phone } }"


async def test_policy_changes_apply_live_and_a_bad_file_keeps_the_old(
    systems: DemoSystems, examples: DemoExamples, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    shutil.copy(DEFAULT_POLICY_PATH, policy)
    app = create_app(settings_for(systems, CG_POLICY_FILE=str(policy)))
    gateway = app.state.gateway
    gateway.policies.min_interval = 0.0  # check the file on every request (default: at most once a second)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
    ):
        graph = Graph(client)
        variables = {"id": customer_id(examples.company)}
        before = await graph.query(QUERY, variables, roles=["finance"])
        assert "*" in before["data"]["customer"]["phone"]  # finance: phone masked

        text = policy.read_text()
        phone_row = next(line for line in text.splitlines() if line.startswith("  phone:"))
        cells = phone_row.split("[", 1)[1].rstrip("]").split(",")
        cells[4] = " allow"  # the finance column
        policy.write_text(text.replace(phone_row, phone_row.split("[", 1)[0] + "[" + ",".join(cells) + "]"))
        os.utime(policy, (1, 1))  # a different mtime even within the same clock tick

        during = await asyncio.gather(*(graph.query(QUERY, variables, roles=["finance"]) for _ in range(5)))
        assert all("errors" not in r for r in during)  # no request dropped by the reload
        after = await graph.query(QUERY, variables, roles=["finance"])
        assert "*" not in after["data"]["customer"]["phone"]
        generation = gateway.policies.generation

        broken = policy.read_text()
        row = next(line for line in broken.splitlines() if line.startswith("  phone:"))
        policy.write_text(broken.replace(row, row.replace("allow", "alow")))
        os.utime(policy, (2, 2))
        still = await graph.query(QUERY, variables, roles=["finance"])
        assert still == after  # the broken file was refused; the last good policy is in force
        assert gateway.policies.generation == generation
        assert gateway.policies.last_problems and "alow" in " ".join(gateway.policies.last_problems)


async def test_sighup_reload_is_the_same_path(systems: DemoSystems, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    shutil.copy(DEFAULT_POLICY_PATH, policy)
    app = create_app(settings_for(systems, CG_POLICY_FILE=str(policy)))
    gateway = app.state.gateway
    generation = gateway.policies.generation
    gateway.reload_policy()  # what SIGHUP calls
    assert gateway.policies.generation == generation + 1
