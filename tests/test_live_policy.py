"""The read policy on live updates, event by event (``schema.live``): who hears of which change."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from connectors.errors import UpstreamUnavailable
from connectors.models import Account, System
from policies import Policy, Principal, load_policy
from policies.guard import Guard
from schema.live import ChangeKind, LiveContext, _decide

T0 = datetime(2025, 1, 1, tzinfo=UTC)
REP = "u-1021"


def account(account_no: str, owner: str | None) -> Account:
    return Account(
        account_no, "company", "Chengchuan", "Wang Fang", "Buyer", "wang.fang@chengchuan.cn",
        "+8613812345678", "上海市浦东新区张江路 88 号", "91310115MA1K4Q2X3L", "east", "customer",
        owner, T0 if owner else None, None if owner else T0, T0, T0, 3,
    )  # fmt: skip


ACCOUNTS = {"OWN": account("OWN", REP), "POOL": account("POOL", None), "OTHER": account("OTHER", "u-2042")}


@dataclass(frozen=True)
class Event:
    account_no: str | None
    type: str
    confidential: bool = False
    event_id: str = "ev_1"
    system: str = "sales"
    at: datetime = T0


class StubLoader:
    def __init__(self, down: bool) -> None:
        self.down = down

    async def load(self, key: str) -> Account | None:
        if self.down:
            raise UpstreamUnavailable(System.SALES, "timeout")
        return ACCOUNTS.get(key)


@dataclass
class StubLoaders:
    down: bool = False
    account: StubLoader = field(init=False)

    def __post_init__(self) -> None:
        self.account = StubLoader(self.down)


@dataclass
class StubFeed:
    policy: Policy
    down: bool = False

    def subscribe(self, accounts: frozenset[str] | None) -> contextlib.AbstractAsyncContextManager[Any]:
        @contextlib.asynccontextmanager
        async def nothing() -> AsyncIterator[Any]:
            yield iter(())

        return nothing()

    def refresh(self, context: Any) -> None:
        context.loaders = StubLoaders(self.down)
        context.guard = Guard(self.policy, context.principal)
        context.now = T0


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy()


async def heard(policy: Policy, roles: list[str], event: Event, *, down: bool = False) -> ChangeKind | None:
    principal = Principal.of(REP if "sales_rep" in roles else "u-other", roles, region="east")
    feed = StubFeed(policy, down)
    context = LiveContext(
        loaders=None,  # type: ignore[arg-type]
        principal=principal,
        guard=None,
        request_id="t",
        now=T0,
        feed=feed,
    )
    feed.refresh(context)
    change = await _decide(context, event)  # type: ignore[arg-type]
    return None if change is None else change.kind


@pytest.mark.parametrize(
    ("customer", "kind", "expected"),
    [
        ("OWN", "account.updated", ChangeKind.ACCOUNT_UPDATED),
        ("OWN", "order.created", ChangeKind.ORDER_CREATED),
        ("OWN", "ticket.created", ChangeKind.TICKET_CREATED),
        ("OWN", "payment.created", None),  # payments are denied to reps
        ("POOL", "account.owner_changed", ChangeKind.OWNER_CHANGED),
        ("POOL", "order.created", None),  # orders of pool customers are denied to reps
        ("POOL", "ticket.updated", None),
        ("POOL", "ticket.rated", ChangeKind.TICKET_RATED),  # satisfaction is allowed on the pool
        ("OTHER", "account.updated", None),  # another rep's customer does not exist for it
        ("OTHER", "ticket.rated", None),
    ],
)
async def test_sales_rep(policy: Policy, customer: str, kind: str, expected: ChangeKind | None) -> None:
    assert await heard(policy, ["sales_rep"], Event(customer, kind)) is expected


async def test_confidential_contracts_reach_only_those_who_may_know(policy: Policy) -> None:
    public = Event("OTHER", "contract.changed", confidential=False, system="contracts")
    secret = Event("OTHER", "contract.changed", confidential=True, system="contracts")
    assert await heard(policy, ["support_agent"], public) is ChangeKind.CONTRACT_CHANGED
    assert await heard(policy, ["support_agent"], secret) is None
    assert await heard(policy, ["finance"], secret) is None
    assert await heard(policy, ["legal"], secret) is ChangeKind.CONTRACT_CHANGED
    assert await heard(policy, ["executive"], secret) is ChangeKind.CONTRACT_CHANGED
    assert await heard(policy, ["auditor"], public) is None  # contracts are denied to auditors
    assert await heard(policy, ["auditor"], Event("OTHER", "account.updated")) is ChangeKind.ACCOUNT_UPDATED


async def test_payments_reach_finance(policy: Policy) -> None:
    assert await heard(policy, ["finance"], Event("OTHER", "payment.created")) is ChangeKind.PAYMENT_CREATED
    assert await heard(policy, ["support_agent"], Event("OTHER", "payment.created")) is None


async def test_fail_closed(policy: Policy) -> None:
    # a type no field decision covers is not announced to anyone
    assert await heard(policy, ["data_steward"], Event("OWN", "invoice.created")) is None
    assert await heard(policy, ["data_steward"], Event(None, "account.updated")) is None
    assert await heard(policy, ["data_steward"], Event("GONE", "account.updated")) is None
    # the customer cannot be checked against the rows now: only "something was missed"
    missed = await heard(policy, ["sales_rep"], Event("OTHER", "account.updated"), down=True)
    assert missed is ChangeKind.MISSED
    assert await heard(policy, ["sales_rep"], Event(None, "gateway.missed")) is ChangeKind.MISSED
