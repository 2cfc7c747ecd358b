"""Every write rule of policy.md ("## Writes")."""

from __future__ import annotations

import pytest

from policies import Policy

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
    "privacy_officer",
)
OWN, POOL, OTHERS = account(owner=REP), account(owner=None), account(owner=OTHER_REP)
IN_REGION, OUT_OF_REGION = account(owner=OTHER_REP, region="east"), account(owner=OTHER_REP, region="north")

# operation → role → the customers it may do it on (None: not about a customer)
EXPECTED: dict[str, dict[str, set[str]]] = {
    "changeContact": {"support_agent": {"own", "pool", "others", "region", "elsewhere"},
                      "data_steward": {"own", "pool", "others", "region", "elsewhere"}},
    "logActivity": {"sales_rep": {"own"}, "sales_manager": {"region"},
                    "support_agent": {"own", "pool", "others", "region", "elsewhere"}},
    "openTicket": {"support_agent": {"own", "pool", "others", "region", "elsewhere"}, "sales_rep": {"own"}},
    "claimCustomer": {"sales_rep": {"pool"}},
    "releaseCustomer": {"sales_rep": {"own"}},
    "assignOwner": {"sales_manager": {"region"},
                    "data_steward": {"own", "pool", "others", "region", "elsewhere"}},
    "decideAccessRequest": {"sales_manager": {"region"},
                            "data_steward": {"own", "pool", "others", "region", "elsewhere"}},
    "reviewAccessGrants": {"sales_manager": {"region"},
                           "data_steward": {"own", "pool", "others", "region", "elsewhere"}},
    "revokeAccessGrant": {"sales_manager": {"region"},
                          "data_steward": {"own", "pool", "others", "region", "elsewhere"}},
    "reviewPoolEntry": {"sales_manager": {"region"},
                        "data_steward": {"own", "pool", "others", "region", "elsewhere"}},
    "linkIdentity": {"data_steward": {"own", "pool", "others", "region", "elsewhere"}},
    "markNotDuplicate": {"data_steward": {"own", "pool", "others", "region", "elsewhere"}},
    "requestDataExport": {"privacy_officer": {"own", "pool", "others", "region", "elsewhere"}},
    "requestErasure": {"privacy_officer": {"own", "pool", "others", "region", "elsewhere"}},
    "approveErasure": {"privacy_officer": {"own", "pool", "others", "region", "elsewhere"}},
}  # fmt: skip
CUSTOMERS = {"own": OWN, "pool": POOL, "others": OTHERS, "region": IN_REGION, "elsewhere": OUT_OF_REGION}


@pytest.mark.parametrize("where", sorted(CUSTOMERS))
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("operation", sorted(EXPECTED))
def test_write_rule(policy: Policy, operation: str, role: str, where: str) -> None:
    customer = CUSTOMERS[where]
    if role == "sales_manager" and where in ("own", "pool", "others"):
        customer = account(owner=customer.owner_id, region="north")  # ownership alone opens nothing
    decision = policy.can_write(who(role, region="east"), operation, customer, requester="u-5")
    assert decision.allowed == (where in EXPECTED[operation].get(role, set())), decision.message


@pytest.mark.parametrize("role", ROLES)
def test_read_audit_log(policy: Policy, role: str) -> None:
    decision = policy.can_write(who(role), "readAuditLog")
    assert decision.allowed == (role in ("auditor", "data_steward"))


def test_customer_scoped_operation_without_customer_is_denied_for_scoped_roles(policy: Policy) -> None:
    assert not policy.can_write(who("sales_rep"), "logActivity").allowed
    assert policy.can_write(who("support_agent"), "logActivity").allowed


def test_never_decide_ones_own_access_request(policy: Policy) -> None:
    steward = who("data_steward", sub="u-7")
    assert policy.can_write(steward, "decideAccessRequest", OTHERS, requester="u-8").allowed
    own = policy.can_write(steward, "decideAccessRequest", OTHERS, requester="u-7")
    assert not own.allowed and "own request" in own.rule
    assert not policy.can_write(steward, "decideAccessRequest", OTHERS).allowed  # requester unknown: closed


def test_change_contact_fields(policy: Policy) -> None:
    agent = who("support_agent")
    assert policy.can_write(agent, "changeContact", OTHERS, fields=["email", "phone"]).allowed
    refused = policy.can_write(agent, "changeContact", OTHERS, fields=["email", "taxId"])
    assert not refused.allowed and "taxId" in refused.rule


def test_sales_roles_never_change_contact_data(policy: Policy) -> None:
    for customer in (OWN, POOL, IN_REGION):
        assert not policy.can_write(who("sales_rep", "sales_manager"), "changeContact", customer).allowed


def test_multi_role_write_uses_any_role(policy: Policy) -> None:
    rep_agent = who("sales_rep", "support_agent")
    assert policy.can_write(rep_agent, "logActivity", OTHERS).allowed
    assert policy.can_write(rep_agent, "claimCustomer", POOL).allowed


def test_write_decision_names_the_rule_and_no_values(policy: Policy) -> None:
    denied = policy.can_write(who("finance"), "logActivity", OWN)
    assert not denied.allowed
    assert denied.rule.startswith("writes.logActivity")
    assert denied.source is not None and denied.source.line > 0
    assert "default.yaml:" in denied.message
    for value in (OWN.email, OWN.phone, OWN.account_no, OWN.name, REP):
        assert str(value) not in denied.message
    allowed = policy.can_write(who("sales_rep"), "claimCustomer", POOL)
    assert (
        allowed.allowed and allowed.rule == "writes.claimCustomer: sales_rep on customers in the public pool"
    )


def test_unknown_operation_is_a_bug(policy: Policy) -> None:
    with pytest.raises(ValueError):
        policy.can_write(who("data_steward"), "dropDatabase")


@pytest.mark.parametrize("role", ROLES)
def test_review_identities(policy: Policy, role: str) -> None:
    assert policy.can_write(who(role), "reviewIdentities").allowed == (role == "data_steward")
