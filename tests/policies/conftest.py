from __future__ import annotations

from datetime import UTC, datetime

import pytest

from connectors.models import Account
from policies import DEFAULT_POLICY_PATH, Policy, Principal

REP = "u-1021"
OTHER_REP = "u-2042"
T0 = datetime(2025, 1, 1, tzinfo=UTC)


def account(owner: str | None = None, region: str = "east", account_no: str = "A-1") -> Account:
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


def who(*roles: str, sub: str = REP, region: str | None = "east") -> Principal:
    return Principal.of(sub, roles, region=region)


@pytest.fixture(scope="session")
def policy() -> Policy:
    return Policy.from_file(DEFAULT_POLICY_PATH, "default.yaml")


@pytest.fixture(scope="session")
def default_text() -> str:
    return DEFAULT_POLICY_PATH.read_text(encoding="utf-8")
