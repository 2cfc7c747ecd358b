"""Domain objects for unit tests, built one way."""

from __future__ import annotations

from datetime import UTC, datetime

from connectors.models import Account

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def make_account(account_no: str = "A-1", owner: str | None = None, region: str = "east") -> Account:
    """A company customer with every contact field filled; in the pool when ``owner`` is None."""
    return Account(
        account_no=account_no,
        kind="company",
        name="Chengchuan Trading",
        contact_name="Wang Fang",
        title="Purchasing",
        email="wang.fang@chengchuan.cn",
        phone="+8613812345678",
        address="上海市浦东新区张江路 88 号",
        tax_id="91310115MA1K4Q2X3L",
        region=region,
        status="customer",
        owner_id=owner,
        owner_since=T0 if owner else None,
        pool_since=None if owner else T0,
        created_at=T0,
        updated_at=T0,
        version=1,
    )
