"""What one GraphQL request must leave in the audit trail (policy.md, Audit), built from what its
guard noted and the writes it made: served values, denials, grant uses, writes."""

from __future__ import annotations

from typing import Any

from features.store import AuditEntry, AuditKind
from schema.context import RequestContext


def _decision(word: str) -> str:
    """The guard's ``allow`` / ``deny`` / ``mask:<kind>`` as the audit trail's three words."""
    return word if word in ("allow", "deny") else "mask"


def audit_entries(
    context: RequestContext, operation_name: str | None, operation_type: str
) -> list[AuditEntry]:
    guard = context.guard
    if guard is None:
        return []
    principal = guard.principal

    def entry(kind: AuditKind, **facts: Any) -> AuditEntry:
        return AuditEntry(
            kind=kind,
            request_id=context.request_id,
            user_sub=principal.sub,
            roles=sorted(principal.roles),
            operation_name=operation_name,
            operation_type=operation_type,
            **facts,
        )

    served: dict[str, dict[str, str]] = {}
    denied: dict[str, dict[str, str]] = {}
    grants: dict[str, dict[str, dict[str, str]]] = {}  # grant id → account → field → decision
    for account_no, record in guard.served.items():
        for name, word in record.fields.items():
            decision = _decision(word)
            (denied if decision == "deny" else served).setdefault(account_no, {})[name] = decision
        for name, grant_id in record.grants.items():
            grants.setdefault(grant_id, {}).setdefault(account_no, {})[name] = "allow"
    entries: list[AuditEntry] = []
    if served:
        entries.append(entry("read", fields=served))
    refused = [w for w in context.writes if w.denied]
    if denied or guard.hidden_rows or refused:
        detail: dict[str, object] = {}
        if guard.hidden_rows:
            detail["outside_rows"] = sorted(guard.hidden_rows)
        if refused:
            detail["refused"] = [{"operation": w.operation, "rule": w.rule} for w in refused]
        customers = sorted(guard.hidden_rows | {w.account_no for w in refused if w.account_no})
        entries.append(entry("denial", fields=denied, customer_ids=customers, detail=detail or None))
    for term, searched in guard.searches:
        entries.append(entry("search", detail={"search": term, "fields": list(searched)}))
    for grant_id, fields in grants.items():
        entries.append(entry("grant_use", fields=fields, grant_id=grant_id))
    for write in context.writes:
        if not write.denied:
            entries.append(
                entry(
                    "write",
                    customer_ids=[write.account_no],
                    before=dict(write.before or {}),
                    after=dict(write.after or {}),
                    detail={"operation": write.operation},
                )
            )
    return entries
