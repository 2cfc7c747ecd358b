"""``customer-graph demo``: the three demo systems and the gateway, with a dev token per role.

A plug-in of the ``customer-graph`` command (entry point ``customer_graph.commands``, pyproject): the
product never imports the demo. Every port is an option and a ``CG_DEMO_*`` / ``CG_PORT`` variable;
a port in use is named with the option that changes it, before anything starts. The tokens and the
URL are printed once the gateway answers ``/healthz``; the demo's settings (its JWT secret included)
are written to ``var/demo.env`` (mode 0600), so ``customer-graph --env-file var/demo.env token …``
mints more tokens for the running demo.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import threading
import time
from dataclasses import replace
from pathlib import Path

import httpx

from gateway.auth import DEV_TOKEN_HOURS, issue_token
from gateway.settings import Settings, load_settings

from .data import export_requesters
from .servers import DEFAULT_PORTS, DemoSystems
from .webhooks import DEFAULT_SECRETS

DEMO_JWT_SECRET = "customer-graph-demo-secret-not-for-production"
ENV_FILE = Path("var") / "demo.env"
ROLES = (
    "sales_rep",
    "sales_manager",
    "support_agent",
    "finance",
    "legal",
    "executive",
    "auditor",
    "data_steward",
    "privacy_officer",
)
# system → (option, environment variable)
PORT_OPTIONS = {
    "sales": ("--sales-port", "CG_DEMO_SALES_PORT"),
    "support": ("--support-port", "CG_DEMO_SUPPORT_PORT"),
    "contracts": ("--contracts-port", "CG_DEMO_CONTRACTS_PORT"),
}


class PortInUse(Exception):
    pass


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``demo`` sub-command (the entry point ``customer-graph`` loads)."""
    demo = commands.add_parser("demo", help="start the demo systems and the gateway, print URL and tokens")
    demo.add_argument("--customers", type=int, default=2000)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--host", default=None, help="gateway address (default 127.0.0.1 or CG_HOST)")
    demo.add_argument("--port", type=int, default=None, help="gateway port (default 8000 or CG_PORT)")
    for system, (option, variable) in PORT_OPTIONS.items():
        demo.add_argument(
            option,
            type=int,
            default=int(os.environ.get(variable, DEFAULT_PORTS[system])),
            help=f"the demo {system} system's port (default {DEFAULT_PORTS[system]} or {variable})",
        )
    demo.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        return run_demo(args)
    except PortInUse as exc:
        print(f"customer-graph demo: {exc}", flush=True)
        return 2


def _check_free(host: str, port: int, what: str, change: str) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            raise PortInUse(
                f"port {port} ({what}) is in use on {host}. Choose another with {change}."
            ) from None


def _user_region(systems: DemoSystems, user_id: str) -> str | None:
    response = httpx.get(
        f"{systems.sales_url}/api/v1/users",
        params={"ids": user_id},
        headers=systems.auth_headers("sales"),
        timeout=5,
    )
    response.raise_for_status()
    users = response.json()["data"]
    return str(users[0]["region"]) if users else None


def demo_tokens(systems: DemoSystems, settings: Settings, hours: float = DEV_TOKEN_HOURS) -> dict[str, str]:
    """One token per role; the sales roles are real users of the demo data (with their region). A second
    privacy officer too: an erasure needs another one's approval."""
    examples = systems.examples()
    tokens = {}
    for label in (*ROLES, "privacy_officer (a second one, to approve an erasure)"):
        role = label.split(" ")[0]
        sub, region = f"u-{role.replace('_', '-')}" + ("-2" if label != role else ""), None
        if role == "sales_rep":
            sub, region = examples.rep, _user_region(systems, examples.rep)
        elif role == "sales_manager":
            sub, region = examples.manager, _user_region(systems, examples.manager)
        tokens[label] = issue_token(
            settings.jwt_secret,
            sub=sub,
            roles=[role],
            region=region,
            name=f"Demo {role.replace('_', ' ')}",
            ttl_seconds=int(hours * 3600),
            audience=settings.jwt_audience or None,
            issuer=settings.jwt_issuer or None,
        )
    return tokens


def _write_env(settings: Settings) -> None:
    """The running demo's settings, for ``customer-graph --env-file var/demo.env …`` (mode 0600)."""
    ENV_FILE.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        f"CG_JWT_SECRET={settings.jwt_secret}",
        f"CG_SALES_URL={settings.sales_url}",
        f"CG_SALES_API_KEY={settings.sales_api_key}",
        f"CG_SUPPORT_URL={settings.support_url}",
        f"CG_SUPPORT_TOKEN={settings.support_token}",
        f"CG_CONTRACTS_URL={settings.contracts_url}",
        f"CG_CONTRACTS_USER={settings.contracts_user}",
        f"CG_CONTRACTS_PASSWORD={settings.contracts_password}",
    ]
    descriptor = os.open(ENV_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write("# written by customer-graph demo: the running demo's settings (dev secrets only)\n")
        file.write("\n".join(lines) + "\n")


def _banner(systems: DemoSystems, settings: Settings) -> None:
    tokens = demo_tokens(systems, settings)
    url = f"http://{settings.host}:{settings.port}/graphql"
    print()
    print(f"  Demo systems: sales {systems.sales_url}  support {systems.support_url}", end="")
    print(f"  contracts {systems.contracts_url}")
    print(f"  GraphiQL:     {url}")
    print(f"  Dev tokens (valid {DEV_TOKEN_HOURS:g} h) — paste one into GraphiQL's Headers tab:")
    for role, token in tokens.items():
        print(f'\n  {role}:\n  {{"Authorization": "Bearer {token}"}}')
    print(f"\n  More tokens: customer-graph --env-file {ENV_FILE} token --sub u-1 --role finance")
    print("\n  Try:  { customers(first: 5) { edges { node { id accountNo name phone lastContactAt } } } }")
    pool = systems.examples().pool
    print("\n  Live updates: in GraphiQL (with the sales_rep token, say) subscribe to")
    print("    subscription { myCustomersChanged { kind system at")
    print("                   customer { accountNo name title phone } } }")
    print("  then change a customer in the demo sales system (a pool customer here) and watch it arrive:")
    print(
        f"    curl -X PATCH {systems.sales_url}/api/v1/accounts/{pool}"
        f" -H 'X-Api-Key: {systems.sales_api_key}' -H 'Content-Type: application/json'"
        """ -d '{"title": "Head of Purchasing"}'"""
    )
    print("  Ctrl-C stops everything.\n", flush=True)


def _announce_when_up(systems: DemoSystems, settings: Settings, deadline: float = 60.0) -> None:
    """Print the banner once the gateway answers /healthz (not before: a token is useless until then)."""
    host = "127.0.0.1" if settings.host in ("", "0.0.0.0", "::") else settings.host
    url = f"http://{f'[{host}]' if ':' in host else host}:{settings.port}/healthz"
    until = time.monotonic() + deadline
    while time.monotonic() < until:
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                _banner(systems, settings)
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    print(f"customer-graph demo: the gateway did not answer {url} within {deadline:g} s", flush=True)


def run_demo(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.app import serving_app
    from gateway.identity_cli import requesters_main, run_scan
    from gateway.server import guarded_http

    settings = load_settings(args.config)
    host = args.host or settings.host
    port = args.port or settings.port
    _check_free(host, port, "the gateway", "--port N or CG_PORT=N")
    for system, (option, variable) in PORT_OPTIONS.items():
        _check_free(
            "127.0.0.1",
            getattr(args, f"{system}_port"),
            f"the demo {system} system",
            f"{option} N or {variable}=N",
        )
    logging.getLogger("alembic").setLevel(logging.WARNING)  # the database's migrations, not news here
    # The demo systems POST their change events to the gateway's receivers (live updates).
    hooks_host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    hooks_host = f"[{hooks_host}]" if ":" in hooks_host else hooks_host
    secrets = {
        "sales": settings.sales_webhook_secret or DEFAULT_SECRETS["sales"],
        "support": settings.support_webhook_secret or DEFAULT_SECRETS["support"],
    }
    systems = DemoSystems(
        customers=args.customers,
        seed=args.seed,
        sales_port=args.sales_port,
        support_port=args.support_port,
        contracts_port=args.contracts_port,
        webhook_url=f"http://{hooks_host}:{port}/hooks",
        webhook_secrets=secrets,
    )
    print(
        f"Generating or loading {args.customers} demo customers (seed {args.seed}), starting the systems..."
    )
    systems.start()
    try:
        settings = replace(
            settings,
            host=host,
            port=port,
            sales_webhook_secret=secrets["sales"],
            support_webhook_secret=secrets["support"],
            sales_url=systems.sales_url,
            sales_api_key=systems.sales_api_key,
            support_url=systems.support_url,
            support_token=systems.support_token,
            contracts_url=systems.contracts_url,
            contracts_user=systems.contracts_user,
            contracts_password=systems.contracts_password,
            jwt_secret=settings.jwt_secret or DEMO_JWT_SECRET,
        )
        _write_env(settings)
        # Who is who: one full identity scan, so possibleDuplicates and the stewards' lists have an index
        # (the gateway keeps it current from change events; `customer-graph identity scan` redoes it).
        scan = asyncio.run(run_scan(settings, 200, progress=False))
        print(
            f"Identity scan: {scan.accounts} accounts, {scan.probable} probable duplicate pairs "
            f"({scan.seconds:.1f} s)."
        )
        # The helpdesk cannot list its requesters: import its export, as an operator would.
        export = systems.data_dir / "helpdesk-requesters.csv"
        export_requesters(systems.data, export)
        requesters_main(
            [str(export), *(["--database-url", settings.database_url] if settings.database_url else [])]
        )
        threading.Thread(target=_announce_when_up, args=(systems, settings), daemon=True).start()
        uvicorn.run(
            serving_app(settings),
            host=settings.host,
            port=settings.port,
            log_level="warning",
            http=guarded_http(settings),
        )
    finally:
        systems.stop()
    return 0
