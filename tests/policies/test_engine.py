"""Combining roles, grants, fields_needed, explain, and the shared views."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies import Policy
from policies.catalogue import FIELDS, SITUATIONS
from policies.decisions import Effect

from .conftest import OTHER_REP, REP, account, who

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


# --- several roles ------------------------------------------------------------------------------


def test_most_permissive_wins(policy: Policy) -> None:
    customer = account(owner=OTHER_REP)
    finance_legal = policy.view(who("finance", "legal"), customer)
    assert str(finance_legal["email"]) == "mask:email"  # mask + mask
    assert finance_legal["orders"].allowed  # allow + deny
    support_finance = policy.view(who("support_agent", "finance"), customer)
    assert support_finance["email"].allowed  # allow + mask
    assert support_finance["address"].allowed  # mask + allow
    assert support_finance["taxId"].allowed  # deny + allow
    assert support_finance["payments"].allowed and support_finance["tickets"].allowed
    exec_auditor = policy.view(who("executive", "auditor"), customer)
    assert str(exec_auditor["phone"]) == "mask:phone"  # mask + deny
    legal_auditor = policy.view(who("legal", "auditor"), customer)
    assert legal_auditor["activities"].denied  # deny + deny


def test_executive_and_finance_see_card_details(policy: Policy) -> None:
    view = policy.view(who("executive", "finance"), account(owner=OTHER_REP))
    assert view["Payment.cardLast4"].allowed and view["Payment.bankAccount"].allowed


def test_same_datum_follows_the_combined_decision(policy: Policy) -> None:
    # executive sees tickets, support_agent the e-mail in clear: the requester e-mail is in clear
    view = policy.view(who("executive", "finance"), account(owner=OTHER_REP))
    assert str(view["Ticket.requesterEmail"]) == "mask:email"
    view = policy.view(who("finance", "support_agent"), account(owner=OTHER_REP))
    assert view["Ticket.requesterEmail"].allowed


def test_rep_and_manager_on_another_reps_customer_get_the_managers_column(policy: Policy) -> None:
    view = policy.view(
        who("sales_rep", "sales_manager", region="east"), account(owner=OTHER_REP, region="east")
    )
    assert view.roles == ("sales_manager",)
    assert view["email"].allowed and view["opportunities"].allowed


SUBSETS = st.frozensets(st.sampled_from((*ROLES, "stranger")))
CUSTOMERS = st.builds(
    account, owner=st.sampled_from([REP, OTHER_REP, None]), region=st.sampled_from(["east", "north"])
)


@given(SUBSETS, SUBSETS, CUSTOMERS, st.sampled_from(["east", None]))
def test_adding_roles_never_narrows(policy: Policy, a, b, customer, region) -> None:
    small = policy.view(who(*a, region=region), customer)
    big = policy.view(who(*(a | b), region=region), customer)
    assert big.visible or not small.visible
    for name in FIELDS:
        assert big[name].effect >= small[name].effect, name
    for list_field, flags in big.hidden.items():
        assert set(flags) <= set(small.hidden.get(list_field, ())) or not small.visible
    assert policy.fields_needed(who(*a)) <= policy.fields_needed(who(*(a | b)))


@given(SUBSETS, CUSTOMERS)
def test_combined_view_is_the_max_of_single_role_views(policy: Policy, roles, customer) -> None:
    combined = policy.view(who(*roles), customer)
    singles = [policy.view(who(r), customer) for r in roles]
    for name in ("email", "taxId", "address", "payments", "tickets", "Ticket.comments", "Payment.cardLast4"):
        best = max((v[name].effect for v in singles), default=Effect.DENY)
        assert combined[name].effect == best


# --- grants -------------------------------------------------------------------------------------


def test_grants_open_fields_for_that_view_only(policy: Policy) -> None:
    rep = who("sales_rep")
    pool = account(owner=None)
    plain = policy.view(rep, pool)
    granted = policy.view(rep, pool, grants=frozenset({"email", "address", "nonsense"}))
    assert granted["email"].allowed and granted["address"].allowed
    assert granted["taxId"].denied and granted["Ticket.requesterEmail"].denied  # tickets still denied
    assert granted.grants == frozenset({"email", "address"})
    assert str(plain["email"]) == "mask:email"  # the shared view is untouched
    assert policy.view(rep, pool, grants=frozenset({"nonsense", "address", "email"})) is granted  # cached
    assert policy.view(rep, pool, grants=frozenset({"nonsense"})) is plain


def test_grants_never_open_a_row(policy: Policy) -> None:
    view = policy.view(who("sales_rep"), account(owner=OTHER_REP), grants=frozenset({"email"}))
    assert not view.visible and view["email"].denied


def test_grant_on_a_nested_field_stays_under_its_parent(policy: Policy) -> None:
    rep = who("sales_rep")
    own = account(owner=REP)
    assert policy.view(rep, own, grants=frozenset({"Payment.cardLast4"}))["Payment.cardLast4"].denied
    opened = policy.view(rep, own, grants=frozenset({"payments"}))
    assert opened["payments"].allowed and opened["Payment.cardLast4"].denied


def test_requestable(policy: Policy) -> None:
    rep = who("sales_rep")
    assert policy.requestable(rep, account(owner=None), "email")
    assert not policy.requestable(rep, account(owner=REP), "email")
    assert not policy.requestable(rep, account(owner=OTHER_REP), "email")
    assert not policy.requestable(rep, account(owner=None), "name")
    assert policy.access_request_max_ttl.days == 7


# --- fields_needed ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "absent", "present"),
    [
        ("finance", {"tickets", "activities", "opportunities", "Ticket.comments"}, {"payments", "contracts"}),
        (
            "support_agent",
            {"payments", "opportunities", "taxId", "Payment.cardLast4"},
            {"tickets", "Ticket.comments"},
        ),
        ("legal", {"orders", "payments", "tickets"}, {"contracts", "taxId"}),
        ("executive", {"activities", "Ticket.comments", "Payment.cardLast4"}, {"payments", "tickets"}),
        ("auditor", {"email", "orders", "satisfaction"}, {"id", "name", "dormant"}),
        ("sales_rep", {"payments", "Ticket.comments"}, {"email", "tickets", "taxId", "opportunities"}),
        ("data_steward", {"orders", "tickets", "contracts"}, {"email", "taxId"}),
    ],
)
def test_fields_needed(policy: Policy, role: str, absent: set[str], present: set[str]) -> None:
    needed = policy.fields_needed(who(role))
    assert not (needed & absent)
    assert present <= needed


def test_fields_needed_is_the_union_over_situations(policy: Policy) -> None:
    # a rep's pool customers deny address, its own allow it: the rep needs it
    assert "address" in policy.fields_needed(who("sales_rep"))


# --- explain ------------------------------------------------------------------------------------


@pytest.mark.parametrize("situation", SITUATIONS)
@pytest.mark.parametrize("roles", [(r,) for r in ROLES] + list(itertools.combinations(ROLES, 2)))
def test_explain_agrees_with_view(policy: Policy, roles: tuple[str, ...], situation: str) -> None:
    owner = {"own": REP, "pool": None, "other": OTHER_REP}[situation]
    view = policy.view(who(*roles, region="east"), account(owner=owner, region="east"))
    for name in FIELDS:
        explanation = policy.explain(roles, situation, name)
        assert explanation.decision is view[name], (name, str(explanation))


def test_explain_names_file_and_line(policy: Policy, default_text: str) -> None:
    explanation = policy.explain("sales_rep", "pool", "email")
    assert str(explanation.decision) == "mask:email"
    line = next(i for i, text in enumerate(default_text.splitlines(), 1) if text.startswith("  email:"))
    assert explanation.source is not None and str(explanation.source) == f"default.yaml:{line}"
    assert f"default.yaml:{line}" in str(explanation)


def test_explain_parent_and_link(policy: Policy) -> None:
    explanation = policy.explain("sales_rep", "pool", "Ticket.requesterEmail")
    assert explanation.decision.denied
    text = str(explanation)
    assert "same datum as email" in text and "parent tickets is denied" in text


def test_explain_needs_a_situation_for_split_roles(policy: Policy) -> None:
    with pytest.raises(ValueError, match="own, pool"):
        policy.explain("sales_rep", None, "email")
    assert policy.explain("finance", None, "email").situation is None
    with pytest.raises(ValueError):
        policy.explain("janitor", None, "email")
    with pytest.raises(ValueError):
        policy.explain("finance", None, "emial")
    assert policy.situations_for(["sales_rep"]) == ("own", "pool")
    assert policy.situations_for(["finance"]) == ()


# --- sharing ------------------------------------------------------------------------------------


def test_views_are_shared_and_immutable(policy: Policy) -> None:
    a = policy.view(who("finance", sub="u-1"), account(owner=OTHER_REP, account_no="A-1"))
    b = policy.view(who("finance", sub="u-2"), account(owner="u-9", account_no="A-2", region="west"))
    assert a is b  # same roles, same situation: one shared view
    with pytest.raises(TypeError):
        a.decisions["email"] = a["id"]  # type: ignore[index]
