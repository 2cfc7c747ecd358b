"""Which customers each role sees (policy.md, "## Rows"), as a RowScope and per customer."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies import Policy, RowScope

from .conftest import OTHER_REP, REP, account, who

ALL_ROWS = ("support_agent", "finance", "legal", "executive", "data_steward")


def test_sales_rep_sees_own_and_pool(policy: Policy) -> None:
    scope = policy.rows(who("sales_rep"))
    assert scope == RowScope(owner_in=frozenset({REP}), include_pool=True)
    assert scope.admits(account(owner=REP))
    assert scope.admits(account(owner=None))
    assert not scope.admits(account(owner=OTHER_REP))


def test_sales_rep_never_sees_another_reps_customer(policy: Policy) -> None:
    view = policy.view(who("sales_rep"), account(owner=OTHER_REP))
    assert not view.visible
    assert view.situation == "other"
    assert all(d.denied for d in view.decisions.values())  # identity fields too: it does not exist


def test_sales_manager_sees_its_region(policy: Policy) -> None:
    manager = who("sales_manager", region="east")
    scope = policy.rows(manager)
    assert scope == RowScope(regions=frozenset({"east"}))
    assert scope.admits(account(owner=OTHER_REP, region="east"))
    assert scope.admits(account(owner=None, region="east"))
    assert not scope.admits(account(owner=OTHER_REP, region="north"))
    assert not policy.view(manager, account(owner=None, region="north")).visible


def test_sales_manager_without_region_claim_sees_nothing(policy: Policy) -> None:
    manager = who("sales_manager", region=None)
    assert policy.rows(manager).empty
    assert not policy.view(manager, account(region="east")).visible


def test_region_claim_is_compared_case_insensitively(policy: Policy) -> None:
    assert policy.view(who("sales_manager", region="EAST"), account(region="east")).visible


@pytest.mark.parametrize("role", ALL_ROWS)
def test_roles_that_see_all_rows(policy: Policy, role: str) -> None:
    scope = policy.rows(who(role))
    assert scope == RowScope(all=True)
    for owner in (REP, None, OTHER_REP):
        for region in ("east", "west"):
            assert policy.view(who(role, region="north"), account(owner=owner, region=region)).visible


def test_auditor_sees_all_rows_identity_only(policy: Policy) -> None:
    assert policy.rows(who("auditor")) == RowScope(all=True, identity_only=True)
    view = policy.view(who("auditor"), account(owner=OTHER_REP))
    assert view.visible
    identity = policy.identity_fields
    assert all(d.allowed for f, d in view.decisions.items() if f in identity)
    assert all(d.denied for f, d in view.decisions.items() if f not in identity)


def test_no_known_role_sees_nothing(policy: Policy) -> None:
    nobody = who("admin", "root")
    assert policy.rows(nobody).empty
    assert not policy.view(nobody, account()).visible
    assert policy.fields_needed(nobody) == frozenset()


def test_rows_are_united_across_roles(policy: Policy) -> None:
    rep_manager = who("sales_rep", "sales_manager", region="north")
    scope = policy.rows(rep_manager)
    assert scope == RowScope(owner_in=frozenset({REP}), include_pool=True, regions=frozenset({"north"}))
    assert scope.admits(account(owner=OTHER_REP, region="north"))
    assert scope.admits(account(owner=None, region="south"))
    assert not scope.admits(account(owner=OTHER_REP, region="south"))
    assert policy.rows(who("sales_rep", "finance")) == RowScope(all=True)


def test_auditor_with_another_role_is_not_identity_only(policy: Policy) -> None:
    assert not policy.rows(who("auditor", "sales_rep")).identity_only
    view = policy.view(who("auditor", "sales_rep"), account(owner=OTHER_REP))
    assert view.visible and view.roles == ("auditor",)
    assert view["email"].denied
    assert policy.view(who("auditor", "sales_rep"), account(owner=REP))["email"].allowed


def test_situation(policy: Policy) -> None:
    rep = who("sales_rep")
    assert policy.situation(rep, account(owner=REP)) == "own"
    assert policy.situation(rep, account(owner=None)) == "pool"
    assert policy.situation(rep, account(owner=OTHER_REP)) == "other"


ROLES = st.frozensets(
    st.sampled_from(
        [
            "sales_rep",
            "sales_manager",
            "support_agent",
            "finance",
            "legal",
            "executive",
            "auditor",
            "data_steward",
            "x",
        ]
    )
)


@given(
    roles=ROLES,
    owner=st.sampled_from([REP, OTHER_REP, None]),
    region=st.sampled_from(["east", "north"]),
    claim=st.sampled_from(["east", None]),
)
def test_row_scope_agrees_with_view(policy: Policy, roles, owner, region, claim) -> None:
    principal = who(*roles, region=claim)
    customer = account(owner=owner, region=region)
    assert policy.rows(principal).admits(customer) == policy.view(principal, customer).visible
