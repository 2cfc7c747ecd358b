"""The loader rejects a bad file with every problem, each with its line."""

from __future__ import annotations

import re

import pytest

from policies import Policy, PolicyError
from policies.loader import parse_spec


def edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} must occur once"
    return text.replace(old, new)


def line_of(text: str, needle: str) -> int:
    hits = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(hits) == 1, f"{needle!r} on lines {hits}"
    return hits[0]


def at(text: str, needle: str) -> str:
    """The message prefix of a problem on the line holding ``needle``."""
    return f"policy.yaml:{line_of(text, needle)}: "


def problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse_spec(text, "policy.yaml")
    assert caught.value.problems
    assert str(caught.value).startswith(f"{len(caught.value.problems)} problem")
    return caught.value.problems


EMAIL_ROW = "  email:                 [allow,       mask:email,   allow,        allow,        mask:email,"


def test_default_policy_loads(default_text: str) -> None:
    spec = parse_spec(default_text, "policy.yaml")
    assert len(spec.roles) == 9 and "data_steward" in spec.roles and "privacy_officer" in spec.roles
    assert spec.access_max_ttl.days == 7
    assert spec.audit.fail_closed


def test_unknown_decision(default_text: str) -> None:
    text = edit(default_text, EMAIL_ROW, EMAIL_ROW.replace("[allow,", "[alow, "))
    line = line_of(text, "[alow,")
    assert problems(text) == [
        f'policy.yaml:{line}: unknown decision "alow" for role sales_rep (own) field email '
        "(did you mean allow?) (allow, deny or mask:<kind>)"
    ]


def test_unknown_decision_in_a_plain_role_column(default_text: str) -> None:
    row = "  payments:              [deny,        deny,         deny,         deny,         allow,"
    text = edit(default_text, row, row.replace("allow,", "alow, "))
    [problem] = problems(text)
    assert problem.startswith(
        at(text, "  payments:") + 'unknown decision "alow" for role finance field payments'
    )


def test_yaml_booleans_stay_text(default_text: str) -> None:
    text = edit(default_text, EMAIL_ROW, EMAIL_ROW.replace("[allow,", "[no,    "))
    [problem] = problems(text)
    assert 'unknown decision "no" for role sales_rep (own) field email' in problem


def test_unknown_mask_kind_and_misfit(default_text: str) -> None:
    text = edit(default_text, EMAIL_ROW, EMAIL_ROW.replace("mask:email,   allow,", "mask:emial,   allow,"))
    text = edit(
        text,
        "  phone:                 [allow,       mask:phone,",
        "  phone:                 [allow, mask:email,",
    )
    text = edit(text, "  orders:                [allow,", "  orders:                [mask:email,")
    found = problems(text)
    assert found == [
        at(text, "  email:") + 'unknown mask kind "emial" for role sales_rep (pool) field email '
        "(did you mean email?) (kinds: phone, email, address, taxId)",
        at(text, "  phone:") + "mask:email does not fit field phone (role sales_rep (pool)): use mask:phone",
        at(text, "  orders:") + "field orders cannot be masked (role sales_rep (own)): a list has "
        "no mask kind; use allow or deny",
    ]


def test_unknown_field_role_and_all_problems_at_once(default_text: str) -> None:
    text = edit(default_text, "  contactName:  ", "  contctName:   ")
    text = edit(
        text, "  finance:       {rows: all}\n", "  finance:       {rows: all}\n  janitor:       {rows: al}\n"
    )
    text = edit(text, "    who: {sales_rep: pool}", "    who: {sales_rp: pool}")
    found = problems(text)
    assert at(text, "contctName") + 'unknown field "contctName" (did you mean contactName?)' in found
    assert any(p.startswith(at(text, "janitor") + 'unknown row rule "al"') for p in found)
    assert (
        at(text, "sales_rp") + 'unknown role "sales_rp" in writes.claimCustomer (did you mean sales_rep?)'
        in found
    )
    assert any("role janitor has no column in columns" in p for p in found)
    assert any("field contactName has no decision" in p for p in found)  # its row was misnamed
    assert len(found) == 5


def test_missing_required_section(default_text: str) -> None:
    start = default_text.index("\naudit:")
    text = default_text[:start] + "\n"
    assert problems(text) == ['policy.yaml:1: missing required section "audit"']


def test_unknown_section(default_text: str) -> None:
    text = default_text + "\nwirtes: {}\n"
    [problem] = problems(text)
    assert problem.startswith(at(text, "wirtes") + 'unknown section "wirtes" (did you mean writes?)')


def test_duplicate_keys(default_text: str) -> None:
    text = edit(default_text, "  title:  ", "  email:  ")
    first, second = (i for i, line in enumerate(text.splitlines(), 1) if line.startswith("  email:"))
    found = problems(text)
    assert f'policy.yaml:{second}: duplicate key "email" in fields (first at line {first})' in found
    assert any("field title has no decision" in p for p in found)


def test_row_missing_a_column(default_text: str) -> None:
    row = "  activities:            [allow,       deny,         allow,        allow,        deny,"
    text = edit(default_text, row, row.replace("[allow,       deny,", "[allow,"))
    assert problems(text) == [
        at(text, "  activities:") + f"field activities: 9 decisions for 10 columns (columns at "
        f"line {line_of(text, 'columns: [')}); give one for every column, in its order"
    ]


def test_row_as_mapping_missing_a_column(default_text: str) -> None:
    row = next(line for line in default_text.splitlines() if line.startswith("  activities:"))
    mapping = (
        "  activities: {sales_rep.own: allow, sales_rep.pool: deny, sales_manager: allow,\n"
        "               support_agent: allow,\n"
        "               finance: deny, legal: deny, executive: deny, data_steward: deny,\n"
        "               privacy_officer: deny, cashier: deny}"
    )
    text = edit(default_text, row, mapping)
    line = line_of(text, "  activities:")
    assert problems(text) == [
        f"policy.yaml:{line}: field activities has no decision for column auditor",
        at(text, "cashier") + 'field activities: unknown column "cashier"',
    ]


def test_row_as_mapping_is_accepted(default_text: str) -> None:
    row = next(line for line in default_text.splitlines() if line.startswith("  activities:"))
    mapping = (
        "  activities: {sales_rep.own: allow, sales_rep.pool: deny, sales_manager: allow,\n"
        "               support_agent: allow,\n"
        "               finance: deny, legal: deny, executive: deny, auditor: deny, data_steward: deny,\n"
        "               privacy_officer: deny}"
    )
    policy = Policy.from_text(edit(default_text, row, mapping))
    assert str(policy.explain("support_agent", None, "activities").decision) == "allow"


def test_nested_field_cannot_widen_its_parent(default_text: str) -> None:
    row = "  Payment.cardLast4:     [deny,"
    text = edit(default_text, row, "  Payment.cardLast4:     [allow,")
    assert problems(text) == [
        at(text, "Payment.cardLast4:") + "field Payment.cardLast4 is allow for role sales_rep (own) "
        "but its parent payments is deny: a nested field can only narrow its parent"
    ]


def test_identity_only_role_cannot_see_fields(default_text: str) -> None:
    text = edit(
        default_text, "mask:email,   deny,    allow,    deny]", "mask:email,   allow,   allow,    deny]"
    )
    assert problems(text) == [
        at(text, "  email:") + "role auditor sees identity fields only, but field email is allow for it"
    ]


def test_columns_problems(default_text: str) -> None:
    text = edit(
        default_text, "columns: [sales_rep.own, sales_rep.pool,", "columns: [sales_rep.own, sales_rep.pol,"
    )
    found = problems(text)
    line = line_of(text, "columns: [")
    assert found[0] == (
        f'policy.yaml:{line}: unknown situation "pol" in column sales_rep.pol (did you mean pool?) '
        "(situations: own, pool, other)"
    )
    assert f"policy.yaml:{line}: role sales_rep has no column for situation pool in columns" in found
    assert len(found) == 2  # the rows' cells under the bad column are not reported again


def test_split_column_for_a_situation_the_role_never_sees(default_text: str) -> None:
    text = edit(
        default_text, "sales_rep.pool, sales_manager,", "sales_rep.pool, sales_rep.other, sales_manager,"
    )
    found = problems(text)
    assert found[0].endswith("column sales_rep.other: role sales_rep never sees customers in situation other")


def test_same_datum_problems(default_text: str) -> None:
    text = edit(default_text, "  Contract.partyTaxId:   taxId", "  Contract.partyTaxId:   phone")
    text = edit(text, "  Contract.partyName:    name", "  Contract.partyName:    nmae")
    found = problems(text)
    assert found[0] == (
        at(text, "Contract.partyTaxId:") + "same_datum: Contract.partyTaxId (masked as taxId) "
        "cannot follow phone (masked as phone): not the same kind of datum"
    )
    assert found[1].startswith(at(text, "Contract.partyName:") + 'unknown field "nmae"')
    assert len(found) == 2


def test_a_rule_on_a_type_the_graph_does_not_have_is_reported(default_text: str) -> None:
    """The review found ``Requester.*`` rules for a type the schema never had: such a rule matches
    nothing, so ``policy check`` reports it instead of accepting a rule that protects nothing."""
    text = edit(
        default_text,
        "  Contract.partyName:    name",
        "  Contract.partyName:    name\n  Requester.email:       email",
    )
    found = problems(text)
    assert (
        len(found) == 1
        and found[0].startswith(at(text, "Requester.email:"))
        and "Requester.email" in found[0]
    )


def test_write_problems(default_text: str) -> None:
    text = edit(default_text, "    who: {sales_rep: own}\n", "    who: {sales_rep: owned}\n")
    text = edit(text, "  readAuditLog:\n    who: {auditor: any,", "  readAuditLog:\n    who: {auditor: own,")
    text = edit(text, "  openTicket:", "  openTickets:")
    text = edit(text, "not_by_requester: true  # never", "not_by_requester: yes  # never")
    found = problems(text)
    assert any(
        p.startswith(at(text, "owned") + 'unknown scope "owned" for role sales_rep in writes.') for p in found
    )
    assert any(p.startswith(at(text, "openTickets") + 'unknown write operation "openTickets"') for p in found)
    assert any("not_by_requester must be true or false" in p for p in found)
    assert any("writes.readAuditLog is not about one customer: its only scope is any" in p for p in found)
    assert any("writes: no rule for operation openTicket" in p for p in found)


def test_access_and_audit_problems(default_text: str) -> None:
    text = edit(default_text, "max_ttl: 7d", "max_ttl: 7 days")
    text = edit(text, "  denials: true ", "  denials: si   ")
    found = problems(text)
    assert found[0] == (
        at(text, "max_ttl: 7 days") + "access_requests.max_ttl must be a duration like 7d, 12h or 30m, "
        'not "7 days"'
    )
    assert found[1] == at(text, "denials:") + 'audit.denials must be true or false, not "si"'


def test_hidden_items_problems(default_text: str) -> None:
    text = edit(default_text, "  Contract.confidential: [hide,", "  Contract.confidential: [hid,")
    [problem] = problems(text)
    assert problem == (
        at(text, "Contract.confidential:") + 'unknown value "hid" for role sales_rep (own) in '
        "hidden_items Contract.confidential (hide or show)"
    )


def test_not_yaml(default_text: str) -> None:
    text = edit(default_text, "  sales_rep:     {rows: own_or_pool}", "  sales_rep:     {rows: own_or_pool")
    [problem] = problems(text)
    assert re.match(r"policy\.yaml:\d+: not valid YAML: ", problem)


def test_empty_and_wrong_shapes() -> None:
    assert problems("") == ["policy.yaml:1: the policy file is empty"]
    sections = "version roles identity_fields columns fields hidden_items writes access_requests audit"
    assert problems("- a\n- b\n") == ["policy.yaml:1: the policy file must be a mapping (key: value)"] + [
        f'policy.yaml:1: missing required section "{s}"' for s in sections.split()
    ]


def test_wrong_version(default_text: str) -> None:
    text = edit(default_text, "version: 1", "version: 2")
    assert problems(text) == [at(text, "version: 2") + 'version must be 1 (this format), not "2"']


def test_every_field_a_policy_may_name_is_in_the_graph() -> None:
    """The catalogue mirrors the schema: a field the graph does not serve cannot be given a rule."""
    from graphql import GraphQLObjectType

    from policies.catalogue import FIELDS
    from schema import build_schema

    graph = build_schema()._schema
    for name in FIELDS:
        type_name, _, field = name.rpartition(".")
        found = graph.get_type(type_name or "Customer")
        assert isinstance(found, GraphQLObjectType) and field in found.fields, name
