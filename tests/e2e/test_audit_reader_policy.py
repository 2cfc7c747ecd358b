"""``auditLog`` follows its reader's policy: a value in a record's before/after is shown exactly as the
reader's policy shows that datum on that customer (the same-datum rule). The outside review read raw
phones through ``auditLog`` as a role denied ``phone``.

A policy that lets every role read the audit trail makes the test cover every role × field: for each
reader, each value in the write record equals what ``customer { field }`` shows that reader (the
record's "after" is the customer's current value), or null where the field is denied.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from demo.data import DemoExamples
from demo.servers import DemoSystems
from policies import DEFAULT_POLICY_PATH

from .conftest import customer_id
from .test_request_limits import auth, client_for

ROLES = [
    "sales_rep",
    "sales_manager",
    "support_agent",
    "finance",
    "legal",
    "executive",
    "auditor",
    "data_steward",
]
FIELDS = {
    "contact_name": "contactName",
    "title": "title",
    "email": "email",
    "phone": "phone",
    "address": "address",
}
NEW = {
    "contactName": "审计 读者",
    "title": "Head of Audit Tests",
    "email": "audit.reader@example.cn",
    "phone": "+8613911112222",
    "address": "上海市浦东新区审计路 1 号",
}


@pytest.fixture(scope="module")
def everyone_reads_the_audit_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    text = DEFAULT_POLICY_PATH.read_text(encoding="utf-8")
    old = "    who: {auditor: any, data_steward: any}"
    assert old in text
    everyone = ", ".join(f"{role}: any" for role in ROLES)
    path = tmp_path_factory.mktemp("policy") / "policy.yaml"
    path.write_text(text.replace(old, f"    who: {{{everyone}}}"), encoding="utf-8")
    return path


async def _query(
    client: Any, query: str, variables: dict[str, Any], roles: list[str], sub: str
) -> dict[str, Any]:
    response = await client.post(
        "/graphql", json={"query": query, "variables": variables}, headers=auth(roles, sub)
    )
    body: dict[str, Any] = response.json()
    return body


async def test_every_value_in_the_audit_log_follows_the_readers_policy(
    systems: DemoSystems, examples: DemoExamples, everyone_reads_the_audit_log: Path
) -> None:
    systems.clear_faults()
    target = customer_id(examples.owned)  # a rep's own customer: own, pool and other situations differ
    async with client_for(systems, CG_POLICY_FILE=str(everyone_reads_the_audit_log)) as client:
        write = await _query(
            client,
            "mutation($input: UpdateCustomerContactInput!) { updateCustomerContact(input: $input) { customer { accountNo } } }",
            {"input": {"customerId": target, **NEW}},
            ["data_steward"],
            "u-audit-writer",
        )
        assert "errors" not in write, write
        for role in ROLES:
            sub = examples.rep if role == "sales_rep" else f"u-reader-{role}"
            seen = await _query(
                client,
                "query($id: ID!) { customer(id: $id) { contactName title email phone address } }",
                {"id": target},
                [role],
                sub,
            )
            customer = (seen.get("data") or {}).get("customer") or {}
            log = await _query(
                client,
                '{ auditLog(filter: {userId: "u-audit-writer", kinds: ["write"]}, first: 1) { nodes { before after } } }',
                {},
                [role],
                sub,
            )
            [record] = log["data"]["auditLog"]["nodes"]
            for key, field in FIELDS.items():
                expected = customer.get(field)  # None where denied (or the row is not the reader's)
                assert record["after"][key] == expected, (role, field, record["after"][key])
                if expected is not None and field in ("email", "phone", "address") and "*" in str(expected):
                    assert record["before"][key] is None or "*" in record["before"][key], (role, field)
