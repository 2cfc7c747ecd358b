"""``customer-graph demo``: the three demo systems and the gateway, with a dev token per role."""

from __future__ import annotations

import logging
import os
from dataclasses import replace

import httpx

from demo.servers import DemoSystems
from demo.webhooks import DEFAULT_SECRETS

from .auth import issue_token
from .settings import Settings, load_settings

DEMO_JWT_SECRET = "customer-graph-demo-secret-not-for-production"
ROLES = (
    "sales_rep",
    "sales_manager",
    "support_agent",
    "finance",
    "legal",
    "executive",
    "auditor",
    "data_steward",
)


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


def demo_tokens(systems: DemoSystems, settings: Settings, hours: float = 24.0) -> dict[str, str]:
    """One token per role; the sales roles are real users of the demo data (with their region)."""
    examples = systems.examples()
    tokens = {}
    for role in ROLES:
        sub, region = f"u-{role.replace('_', '-')}", None
        if role == "sales_rep":
            sub, region = examples.rep, _user_region(systems, examples.rep)
        elif role == "sales_manager":
            sub, region = examples.manager, _user_region(systems, examples.manager)
        tokens[role] = issue_token(
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


def run_demo(*, customers: int, seed: int, port: int | None, config: str | None) -> int:
    import uvicorn

    from .app import serving_app

    settings = load_settings(config)
    port = port or settings.port
    logging.getLogger("alembic").setLevel(logging.WARNING)  # the database's migrations, not news here
    # The demo systems POST their change events to the gateway's receivers (live updates).
    hooks_host = "127.0.0.1" if settings.host in ("", "0.0.0.0", "::") else settings.host
    hooks_host = f"[{hooks_host}]" if ":" in hooks_host else hooks_host
    secrets = {
        "sales": settings.sales_webhook_secret or DEFAULT_SECRETS["sales"],
        "support": settings.support_webhook_secret or DEFAULT_SECRETS["support"],
    }
    systems = DemoSystems(
        customers=customers,
        seed=seed,
        webhook_url=f"http://{hooks_host}:{port}/hooks",
        webhook_secrets=secrets,
    )
    print(f"Generating or loading {customers} demo customers (seed {seed}) and starting the systems...")
    systems.start()
    try:
        settings = replace(
            settings,
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
            jwt_secret=settings.jwt_secret or os.environ.get("CG_JWT_SECRET") or DEMO_JWT_SECRET,
        )
        tokens = demo_tokens(systems, settings)
        url = f"http://{settings.host}:{settings.port}/graphql"
        print()
        print(f"  Demo systems: sales {systems.sales_url}  support {systems.support_url}", end="")
        print(f"  contracts {systems.contracts_url}")
        print(f"  GraphiQL:     {url}")
        print("  Dev tokens (valid 24 h) — paste one into GraphiQL's Headers tab:")
        for role, token in tokens.items():
            print(f'\n  {role}:\n  {{"Authorization": "Bearer {token}"}}')
        print(
            "\n  Try:  { customers(first: 5) { edges { node { id accountNo name phone lastContactAt } } } }"
        )
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
        uvicorn.run(serving_app(settings), host=settings.host, port=settings.port, log_level="warning")
    finally:
        systems.stop()
    return 0
