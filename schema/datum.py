"""A write's before / after values as a reader may see them (policy.md, the same datum): shared by
``auditLog`` (schema/access.py) and ``Customer.history`` (schema/history.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connectors import models
from policies.guard import Guard

# A write record's keys (the connectors' attribute names) → the customer field whose value they carry.
DATUM = {
    "contact_name": "contactName",
    "title": "title",
    "email": "email",
    "phone": "phone",
    "address": "address",
    "tax_id": "taxId",
    "owner_id": "owner",
    "reason": "owner",  # a release's reason: part of the ownership change
    "review": "owner",  # a pool review's state: part of the ownership change
    "duplicate_of": "owner",  # a release as a duplicate: the other customer's account number
}
# Writes whose values all belong to one list field of the customer.
DATUM_OF_OPERATION = {"logActivity": "activities", "openTicket": "tickets"}


def write_values(guard: Guard, account: models.Account | None, operation: str, given: Any) -> Any:
    """Every value as the reader's decision for that datum on that customer shows it; a key that carries
    no known customer field is left out (deny by default)."""
    if not isinstance(given, Mapping):
        return None
    out: dict[str, Any] = {}
    for key, value in given.items():
        datum = DATUM_OF_OPERATION.get(operation) or DATUM.get(key)
        out[key] = guard.datum(account, datum, value) if datum is not None else None
    return out
