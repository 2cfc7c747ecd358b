"""Domain objects for unit tests, built one way."""

from __future__ import annotations

from datetime import UTC, datetime

from connectors.models import Account
from features.store.sealed import Keyring

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


# Data keys of the tests' gateway databases (features/store/sealed.py): fixed, so a test may open what
# another Database of the same test wrote. KEY_B and KEY_C are for rotation and wrong-key tests.
KEY_A = "mBMPdMMnJXdmZbw1WFVIFIS6d0pAXLjT9s2wpvpR14U="
KEY_B = "xJv-krBIf9jnmiC33paosY0h89r43tN1f31k1UHHR5E="
KEY_C = "J_lfxK-tlZuPKapQ46HRCVCyikcnEuc3CqEg32f4M6A="


def data_keyring(*keys: str) -> Keyring:
    """The tests' data keys (KEY_A unless others are given), newest first."""
    return Keyring(list(keys) or [KEY_A])
