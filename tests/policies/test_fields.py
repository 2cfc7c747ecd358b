"""Every cell of policy.md's field table, and its footnotes, against the shipped default policy."""

from __future__ import annotations

import pytest

from policies import Policy, Principal
from policies.catalogue import FIELDS

from .conftest import OTHER_REP, REP, account, who

# policy.md, "## Fields", copied verbatim: the test's own reading of the signed policy.
SIGNED_TABLE = """
| contactName, title | allow | allow | allow | allow | allow | allow | allow | deny | allow |
| email, phone | allow | mask | allow | allow | mask | mask | mask | deny | allow |
| address | allow | deny | allow | mask | allow | allow | mask | deny | allow |
| taxId | mask | deny | mask | deny | allow | allow | mask | deny | allow |
| orders | allow | deny | allow | allow | allow | deny | allow | deny | deny |
| payments | deny | deny | deny | deny | allow | deny | allow¹ | deny | deny |
| opportunities | allow | deny | allow | deny | deny | deny | allow | deny | deny |
| activities | allow | deny | allow | allow | deny | deny | deny | deny | deny |
| tickets | allow² | deny | allow² | allow | deny | deny | allow² | deny | deny |
| satisfaction | allow | allow | allow | allow | allow | allow | allow | deny | allow |
| contracts | allow³ | deny | allow³ | allow⁴ | allow³ | allow | allow | deny | deny |
"""
COLUMNS = (
    "rep own",
    "rep pool",
    "sales_manager",
    "support_agent",
    "finance",
    "legal",
    "executive",
    "auditor",
    "data_steward",
)
MASK_KIND = {"email": "email", "phone": "phone", "address": "address", "taxId": "taxId"}
# policy.md: `id accountNo kind name region status inPool owner createdAt lastContactAt dormant`
IDENTITY: tuple[str, ...] = (
    "id",
    "accountNo",
    "kind",
    "name",
    "region",
    "status",
    "inPool",
    "owner",
    "createdAt",
)
IDENTITY += ("lastContactAt", "dormant")


def _caller(column: str) -> tuple[Principal, object]:
    """A caller in that column and a customer it sees in that situation."""
    if column == "rep own":
        return who("sales_rep"), account(owner=REP)
    if column == "rep pool":
        return who("sales_rep"), account(owner=None)
    return who(column), account(owner=OTHER_REP, region="east")


def _expected(word: str, field: str) -> str:
    word = word.rstrip("¹²³⁴")
    return f"mask:{MASK_KIND[field]}" if word == "mask" else word


def _signed() -> dict[tuple[str, str], str]:
    cells: dict[tuple[str, str], str] = {}
    for line in SIGNED_TABLE.strip().splitlines():
        names, *words = (part.strip() for part in line.strip("|").split("|"))
        assert len(words) == len(COLUMNS)
        for field in (n.strip() for n in names.split(",")):
            for column, word in zip(COLUMNS, words, strict=True):
                cells[(field, column)] = _expected(word, field)
    return cells


SIGNED = _signed()


@pytest.mark.parametrize(("field", "column"), sorted(SIGNED))
def test_field_table_cell(policy: Policy, field: str, column: str) -> None:
    principal, customer = _caller(column)
    view = policy.view(principal, customer)  # type: ignore[arg-type]
    assert view.visible
    assert str(view[field]) == SIGNED[(field, column)]


# Fields the graph adds beyond policy.md's table: record keeping, which policy.md's "identity fields only"
# for the auditor leaves out; every other role that sees the row gets them.
RECORD_KEEPING = ("updatedAt", "version", "recycleAt")
# Identity across the systems (features/identity): like record keeping, every role that sees the row but
# the auditor; what they show is bounded by the caller's rows and its other field decisions.
IDENTITY_ACROSS = ("possibleDuplicates", "supportIdentities", "history")


def test_every_customer_field_is_in_the_table_or_identity() -> None:
    customer_fields = {name for name in FIELDS if "." not in name}
    signed = {field for field, _ in SIGNED}
    assert customer_fields == signed | set(IDENTITY) | set(RECORD_KEEPING) | set(IDENTITY_ACROSS)


@pytest.mark.parametrize("column", COLUMNS)
@pytest.mark.parametrize("field", RECORD_KEEPING)
def test_record_keeping_is_denied_to_the_identity_only_auditor(
    policy: Policy, field: str, column: str
) -> None:
    principal, customer = _caller(column)
    assert str(policy.view(principal, customer)[field]) == ("deny" if column == "auditor" else "allow")  # type: ignore[arg-type]


@pytest.mark.parametrize("column", COLUMNS)
@pytest.mark.parametrize("field", IDENTITY)
def test_identity_fields_are_allowed_for_every_role_that_sees_the_row(
    policy: Policy, column: str, field: str
):
    principal, customer = _caller(column)
    assert policy.view(principal, customer)[field].allowed  # type: ignore[arg-type]


def _nested_expected(field: str, column: str) -> str:
    """Footnotes 1, 2 and 4, and the same-datum rule, read from policy.md."""
    parent = {"Payment": "payments", "Ticket": "tickets", "Contract": "contracts"}[field.split(".")[0]]
    if SIGNED[(parent, column)] == "deny":
        return "deny"
    if field in ("Payment.cardLast4", "Payment.bankAccount"):
        return "deny" if column == "executive" else "allow"  # footnote 1
    if field == "Ticket.comments":
        return "allow" if column == "support_agent" else "deny"  # footnote 2
    if field in ("Contract.value", "Contract.paymentTerms"):
        return "deny" if column == "support_agent" else "allow"  # footnote 4
    datum = {"Ticket.requesterEmail": "email", "Contract.partyTaxId": "taxId", "Contract.partyName": "name"}
    return SIGNED.get((datum[field], column), "allow")  # the same datum wherever it appears


NESTED = (
    "Payment.cardLast4",
    "Payment.bankAccount",
    "Ticket.comments",
    "Ticket.requesterEmail",
    "Contract.value",
    "Contract.paymentTerms",
    "Contract.partyTaxId",
    "Contract.partyName",
)


@pytest.mark.parametrize("column", COLUMNS)
@pytest.mark.parametrize("field", NESTED)
def test_nested_fields(policy: Policy, field: str, column: str) -> None:
    principal, customer = _caller(column)
    assert str(policy.view(principal, customer)[field]) == _nested_expected(field, column)  # type: ignore[arg-type]


@pytest.mark.parametrize("column", COLUMNS)
def test_confidential_contracts_are_left_out_but_for_legal_and_executive(policy: Policy, column: str) -> None:
    principal, customer = _caller(column)
    view = policy.view(principal, customer)  # type: ignore[arg-type]
    if column in ("legal", "executive"):
        assert "contracts" not in view.hidden
    else:
        assert view.hidden["contracts"] == ("confidential",)


def test_keep_drops_hidden_items_and_keeps_order(policy: Policy) -> None:
    class Item:
        def __init__(self, n: int, confidential: bool) -> None:
            self.n, self.confidential = n, confidential

    items = [Item(1, False), Item(2, True), Item(3, False)]
    finance = policy.view(who("finance"), account(owner=OTHER_REP))
    legal = policy.view(who("legal"), account(owner=OTHER_REP))
    assert [i.n for i in finance.keep("contracts", items)] == [1, 3]
    assert [i.n for i in legal.keep("contracts", items)] == [1, 2, 3]
    assert [i.n for i in finance.keep("orders", items)] == [1, 2, 3]


def test_masked_values_as_served(policy: Policy) -> None:
    customer = account(owner=None)
    view = policy.view(who("sales_rep"), customer)
    assert view["email"].apply(customer.email) == "w***@chengchuan.cn"
    assert view["phone"].apply(customer.phone) == "+86*******5678"
    assert view["address"].apply(customer.address) is None
    assert view["contactName"].apply(customer.contact_name) == "Wang Fang"
    exec_view = policy.view(who("executive"), customer)
    assert exec_view["address"].apply(customer.address) == "上海市浦东新****"
    assert exec_view["taxId"].apply(customer.tax_id) == "9131**********2X3L"
    assert exec_view["taxId"].apply(None) is None


def test_manager_column_holds_for_own_pool_and_other_customers_in_region(policy: Policy) -> None:
    manager = who("sales_manager", sub="u-9", region="east")
    views = [policy.view(manager, account(owner=o)) for o in ("u-9", None, OTHER_REP)]
    assert all(v.visible for v in views)
    assert views[0].decisions == views[1].decisions == views[2].decisions
