from __future__ import annotations

from datetime import UTC, datetime

import pytest

from connectors.models import Account
from policies import DEFAULT_POLICY_PATH, Policy, Principal
from tests.factories import make_account

REP = "u-1021"
OTHER_REP = "u-2042"
T0 = datetime(2025, 1, 1, tzinfo=UTC)


def account(owner: str | None = None, region: str = "east", account_no: str = "A-1") -> Account:
    return make_account(account_no, owner, region)


def who(*roles: str, sub: str = REP, region: str | None = "east") -> Principal:
    return Principal.of(sub, roles, region=region)


@pytest.fixture(scope="session")
def policy() -> Policy:
    return Policy.from_file(DEFAULT_POLICY_PATH, "default.yaml")


@pytest.fixture(scope="session")
def default_text() -> str:
    return DEFAULT_POLICY_PATH.read_text(encoding="utf-8")
