"""``python -m bench.policy_cost``: what the policy layer costs the gateway, in CPU per request.

The customer-360 query for a page of 50 customers (every field, nested lists ``first: 5``) runs
in-process against the demo systems (no injected latency; the entity cache warm, so the gateway's
own work dominates), once with the policy enforced and once with the enforcement point replaced by
a pass-through that decides nothing, masks nothing and notes nothing — the same request without the
policy layer. Requests alternate between the two; the figure is the median CPU time of the
gateway's thread per request (the demo systems run in another thread and do not count).
Target (issue "The policy layer"): the policy adds under 20%.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar
from unittest import mock

import httpx

from demo.servers import DemoSystems
from gateway.app import create_app
from gateway.auth import issue_token
from gateway.settings import load_settings
from policies.catalogue import FIELDS
from policies.decisions import ALLOW
from policies.engine import CustomerView
from policies.guard import Account, Guard

T = TypeVar("T")
SECRET = "policy-cost-bench-secret-0123456789"
ROLES = ["data_steward", "finance", "support_agent", "legal", "executive"]
PAGE = """{ customers(first: 50) { edges { node {
  id accountNo kind name contactName title email phone address taxId region status inPool createdAt
  owner { userId name }
  orders(first: 5) { orderNo orderedAt status total { amount currency } }
  payments(first: 5) { paymentId amount { amount currency } method cardLast4 bankAccount }
  opportunities { opportunityId stage amount { amount } }
  activities(first: 5) { activityId type occurredAt subject }
  tickets(first: 5) { id subject status requesterEmail createdAt }
  satisfaction { rated average }
  contracts { contractId status value { amount } partyTaxId paymentTerms }
  lastContactAt dormant } } } }"""

_ALLOW_ALL = CustomerView(
    visible=True, situation="own", roles=(), decisions={}, hidden={}, _table=dict.fromkeys(FIELDS, ALLOW)
)


class PassThroughGuard(Guard):
    """The enforcement point with the policy taken out: every value leaves as it is."""

    def view(self, account: Account) -> CustomerView:
        return _ALLOW_ALL

    def scalar(self, account_no: str, view: CustomerView, name: str, value: str | None) -> str | None:
        return value

    def relation(self, account_no: str, view: CustomerView, name: str) -> None:
        return None

    def keep(self, view: CustomerView, name: str, items: Sequence[T]) -> list[T]:
        return list(items)

    def for_account(self, account_no: str, name: str, value: T | None) -> T | None:
        return value

    def for_email(self, email: str, name: str, value: T | None) -> T | None:
        return value

    def for_tax_id(self, tax_id: str, name: str, value: T | None) -> T | None:
        return value


async def measure(customers: int, rounds: int) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory() as data,
        DemoSystems(
            data,
            customers=customers,
            sales_port=0,
            support_port=0,
            contracts_port=0,
            support_rate=1_000_000,
            contracts_latency_ms=(0.0, 0.0),
        ) as systems,
    ):
        environ: Mapping[str, str] = {
            "CG_SALES_URL": systems.sales_url,
            "CG_SALES_API_KEY": systems.sales_api_key,
            "CG_SUPPORT_URL": systems.support_url,
            "CG_SUPPORT_TOKEN": systems.support_token,
            "CG_CONTRACTS_URL": systems.contracts_url,
            "CG_CONTRACTS_USER": systems.contracts_user,
            "CG_CONTRACTS_PASSWORD": systems.contracts_password,
            "CG_JWT_SECRET": SECRET,
            "CG_CACHE": "true",
            "CG_RATE_LIMIT_PER_MINUTE": "0",
            "CG_SUPPORT_MAX_RATE": "0",
        }
        app = create_app(load_settings(environ=environ))
        headers = {"Authorization": "Bearer " + issue_token(SECRET, sub="u-bench", roles=ROLES)}
        samples: dict[str, list[float]] = {"with policy": [], "without policy": []}
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
        ):

            async def one() -> float:
                started = time.thread_time()
                response = await client.post("/graphql", json={"query": PAGE}, headers=headers)
                spent = time.thread_time() - started
                body = response.json()
                assert response.status_code == 200 and len(body["data"]["customers"]["edges"]) == 50, body
                return spent

            for _ in range(3):  # warm the cache and the document caches
                await one()
            for _ in range(rounds):
                samples["with policy"].append(await one())
                with mock.patch("gateway.app.Guard", PassThroughGuard):
                    samples["without policy"].append(await one())
    with_ms = statistics.median(samples["with policy"]) * 1000
    without_ms = statistics.median(samples["without policy"]) * 1000
    return {
        "customers": customers,
        "rounds": rounds,
        "median_cpu_ms_with_policy": round(with_ms, 2),
        "median_cpu_ms_without_policy": round(without_ms, 2),
        "policy_overhead": round(with_ms / without_ms - 1, 4),
        "target": "< 0.20",
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.policy_cost", description=__doc__)
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args.customers, args.rounds))
    overhead = result["policy_overhead"]
    print(
        f"page of 50, every field: median CPU {result['median_cpu_ms_with_policy']} ms with the policy, "
        f"{result['median_cpu_ms_without_policy']} ms without: +{overhead:.1%} (target < 20%: "
        f"{'met' if overhead < 0.20 else 'NOT met'})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
