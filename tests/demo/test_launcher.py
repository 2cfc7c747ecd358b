"""``customer-graph demo`` as a newcomer meets it: ports that clash are named with the option that
moves them, tokens appear only once the gateway answers, and more tokens can be minted for it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from gateway.auth import Authenticator
from gateway.cli import main
from gateway.settings import load_settings

CLI = [sys.executable, "-c", "from gateway.cli import main; raise SystemExit(main())"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("option", "variable", "what"),
    [
        ("--sales-port", "CG_DEMO_SALES_PORT", "the demo sales system"),
        ("--contracts-port", "CG_DEMO_CONTRACTS_PORT", "the demo contracts system"),
        ("--port", "CG_PORT", "the gateway"),
    ],
)
def test_a_port_in_use_is_named_with_the_way_to_move_it(
    option: str, variable: str, what: str, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        others = [
            f"--{s}-port={_free_port()}" for s in ("sales", "support", "contracts") if f"--{s}-port" != option
        ]
        if option != "--port":
            others.append(f"--port={_free_port()}")
        done = subprocess.run(
            [*CLI, "demo", "--customers", "50", f"{option}={port}", *others],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "CG_JWT_SECRET": ""},
        )
    assert done.returncode == 2
    assert f"port {port} ({what}) is in use" in done.stdout and variable in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_the_demo_prints_tokens_once_it_answers_and_more_can_be_minted(tmp_path: Path) -> None:
    ports = {name: _free_port() for name in ("gateway", "sales", "support", "contracts")}
    env = {
        **os.environ,
        "CG_JWT_SECRET": "",
        "CG_PORT": str(ports["gateway"]),
        "CG_CONTRACTS_POLL_INTERVAL": "0",
    }
    process = subprocess.Popen(
        [
            *CLI,
            "demo",
            "--customers",
            "100",
            f"--sales-port={ports['sales']}",
            f"--support-port={ports['support']}",
            f"--contracts-port={ports['contracts']}",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 90
        lines: list[str] = []
        while not any("Dev tokens" in line for line in lines):
            assert time.monotonic() < deadline and process.poll() is None, "".join(lines)
            lines.append(process.stdout.readline())
        # printed only once /healthz answered: the gateway is up now
        assert httpx.get(f"http://127.0.0.1:{ports['gateway']}/healthz").status_code == 200
        env_file = tmp_path / "var" / "demo.env"
        assert env_file.stat().st_mode & 0o077 == 0  # the demo's secret is readable by its user only
        minted = subprocess.run(
            [*CLI, "--env-file", str(env_file), "token", "--sub", "u-9", "--role", "finance"],
            capture_output=True,
            text=True,
            env={**os.environ, "CG_JWT_SECRET": ""},
            timeout=30,
        )
        token = minted.stdout.strip()
        answer = httpx.post(
            f"http://127.0.0.1:{ports['gateway']}/graphql",
            json={"query": "{ viewer { id roles } }"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert answer.json() == {"data": {"viewer": {"id": "u-9", "roles": ["finance"]}}}
        # who is who is ready in the demo: one scan ran, the helpdesk's requesters were imported
        assert any(line.startswith("Identity scan: ") for line in lines), "".join(lines)
        assert any(line.startswith("identity requesters: ") for line in lines), "".join(lines)
        steward = subprocess.run(
            [*CLI, "--env-file", str(env_file), "token", "--sub", "u-8", "--role", "data_steward"],
            capture_output=True,
            text=True,
            env={**os.environ, "CG_JWT_SECRET": ""},
            timeout=30,
        ).stdout.strip()
        lists = httpx.post(
            f"http://127.0.0.1:{ports['gateway']}/graphql",
            json={
                "query": "{ duplicateCandidates(first: 5) { edges { node { score } } } "
                "unmatchedRequesters(first: 50) { edges { node { email bestGuess { accountNo } } } } }"
            },
            headers={"Authorization": f"Bearer {steward}"},
        ).json()["data"]
        assert len(lists["duplicateCandidates"]["edges"]) == 5
        guessed = [e for e in lists["unmatchedRequesters"]["edges"] if e["node"]["bestGuess"] is not None]
        assert guessed, lists["unmatchedRequesters"]
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_serve_takes_host_and_port(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: dict[str, object] = {}
    import uvicorn

    monkeypatch.chdir(tmp_path)  # serve migrates its database (var/gateway.db) before it serves
    monkeypatch.delenv("CG_DATABASE_URL", raising=False)

    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw))
    monkeypatch.setenv("CG_JWT_SECRET", "serve-test-secret-0123456789abcdef")
    monkeypatch.setenv("CG_HOST", "")  # serve writes them for its workers: restored after the test
    monkeypatch.setenv("CG_PORT", "")
    assert main(["serve", "--host", "127.0.0.2", "--port", "8765"]) == 0
    assert (seen["host"], seen["port"]) == ("127.0.0.2", 8765)
    assert Authenticator(load_settings())  # the settings the workers read agree
