"""What a policy file may speak of: the fields, list-item flags, write operations and vocabulary.

The catalogue is code because it mirrors the schema: every Customer field and every nested field the
graph exposes that a policy decides on. A policy file that names anything else is rejected, so a typo
(``emial``) is an error at load time, never a silently unprotected field. Roles are *not* here: they
are the policy file's own.

Field names are the GraphQL names: ``email`` is ``Customer.email``; a nested field is
``Type.field`` (``Payment.cardLast4``) and is reached through its ``parent`` (a Customer field).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

Shape = Literal["scalar", "list", "object"]


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str  # GraphQL name: "email", "Payment.cardLast4"
    shape: Shape  # a list or object is allow or deny; only a scalar with a mask kind can be masked
    parent: str | None  # the Customer field a nested field is reached through
    mask: str | None  # the mask kind that fits the datum (masks.MASKS), None = cannot be masked
    attr: str  # the attribute on the connectors' domain object it is read from
    doc: str


def _f(
    name: str, shape: Shape, attr: str, doc: str, *, parent: str | None = None, mask: str | None = None
) -> FieldSpec:
    return FieldSpec(name=name, shape=shape, parent=parent, mask=mask, attr=attr, doc=doc)


_FIELDS: tuple[FieldSpec, ...] = (
    # --- Customer: identity and derived fields ----------------------------------------------------
    _f("id", "scalar", "account_no", "global Relay id"),
    _f("accountNo", "scalar", "account_no", "sales account number"),
    _f("kind", "scalar", "kind", "company or person"),
    _f("name", "scalar", "name", "customer name"),
    _f("region", "scalar", "region", "sales region"),
    _f("status", "scalar", "status", "lead, prospect, customer, churned"),
    _f("inPool", "scalar", "owner_id", "no owner: in the public pool"),
    _f("owner", "object", "owner_id", "the owning sales rep"),
    _f("createdAt", "scalar", "created_at", "when the account was created"),
    _f("lastContactAt", "scalar", "", "derived: newest activity, ticket or non-confidential contract"),
    _f("dormant", "scalar", "", "derived: no contact in the last 365 days"),
    _f("history", "list", "", "the customer's timeline; its values follow the reader's other decisions"),
    # --- Customer: record keeping (not identity: an identity-only role does not get them) ---------
    _f("updatedAt", "scalar", "updated_at", "when the sales record last changed"),
    _f("version", "scalar", "version", "the sales record's version (sent back with a write)"),
    _f("recycleAt", "scalar", "", "derived: when the customer goes back to the pool"),
    # --- Customer: contact data -------------------------------------------------------------------
    _f("contactName", "scalar", "contact_name", "contact person"),
    _f("title", "scalar", "title", "contact person's title"),
    _f("email", "scalar", "email", "e-mail address (PII)", mask="email"),
    _f("phone", "scalar", "phone", "phone number, E.164 (PII)", mask="phone"),
    _f("address", "scalar", "address", "postal address (PII)", mask="address"),
    _f("taxId", "scalar", "tax_id", "unified social credit code", mask="taxId"),
    # --- Customer: departmental data --------------------------------------------------------------
    _f("orders", "list", "", "orders (sales system)"),
    _f("payments", "list", "", "payments (sales system, finance data)"),
    _f("opportunities", "list", "", "opportunities (sales system)"),
    _f("activities", "list", "", "communication history (sales system)"),
    _f("tickets", "list", "", "tickets (support system)"),
    _f("satisfaction", "object", "", "rated count and average score (support system)"),
    _f("contracts", "list", "", "contracts (contract register)"),
    # --- Customer: identity across the systems (features/identity) --------------------------------
    _f("possibleDuplicates", "list", "", "other accounts that are probably the same customer"),
    _f("supportIdentities", "list", "", "the e-mails support knows the customer by"),
    # --- nested fields ----------------------------------------------------------------------------
    _f("Payment.cardLast4", "scalar", "card_last4", "last 4 digits of the card", parent="payments"),
    _f("Payment.bankAccount", "scalar", "bank_account", "paying bank account", parent="payments"),
    _f("Ticket.comments", "list", "", "the conversation, internal notes included", parent="tickets"),
    _f(
        "Ticket.requesterEmail",
        "scalar",
        "requester_email",
        "requester's e-mail",
        parent="tickets",
        mask="email",
    ),
    _f("Contract.value", "object", "value", "contract value (Money)", parent="contracts"),
    _f("Contract.paymentTerms", "scalar", "payment_terms", "payment terms", parent="contracts"),
    _f(
        "Contract.partyTaxId",
        "scalar",
        "party_tax_id",
        "the party's tax id",
        parent="contracts",
        mask="taxId",
    ),
    _f("Contract.partyName", "scalar", "party_name", "the party's name", parent="contracts"),
    _f(
        "SupportIdentity.email",
        "scalar",
        "email",
        "an e-mail support knows the customer by",
        parent="supportIdentities",
        mask="email",
    ),
)

FIELDS: Mapping[str, FieldSpec] = MappingProxyType({f.name: f for f in _FIELDS})


@dataclass(frozen=True, slots=True)
class ItemFlag:
    """A boolean attribute of a list item that a policy may use to leave the item out of the list."""

    name: str  # "Contract.confidential"
    list_field: str  # the Customer list field: "contracts"
    attr: str  # the domain object's attribute: "confidential"


ITEM_FLAGS: Mapping[str, ItemFlag] = MappingProxyType(
    {"Contract.confidential": ItemFlag("Contract.confidential", "contracts", "confidential")}
)


@dataclass(frozen=True, slots=True)
class OperationSpec:
    name: str
    on_customer: bool  # False: not about one customer (its only scope is "any")
    takes_fields: bool  # the rule must list the fields the operation may change
    doc: str


OPERATIONS: Mapping[str, OperationSpec] = MappingProxyType(
    {
        op.name: op
        for op in (
            OperationSpec("changeContact", True, True, "change contact data"),
            OperationSpec("logActivity", True, False, "log an activity (communication)"),
            OperationSpec("openTicket", True, False, "open a ticket"),
            OperationSpec("claimCustomer", True, False, "claim a pool customer"),
            OperationSpec("releaseCustomer", True, False, "release an own customer to the pool"),
            OperationSpec("assignOwner", True, False, "assign or reassign an owner"),
            OperationSpec("decideAccessRequest", True, False, "approve or deny an access request"),
            OperationSpec(
                "reviewAccessGrants", True, False, "list the access grants in force (activeGrants)"
            ),
            OperationSpec("revokeAccessGrant", True, False, "end an access grant before it expires"),
            OperationSpec("readAuditLog", False, False, "read the audit log"),
            OperationSpec("reviewPoolEntry", True, False, "review a customer that entered the pool"),
            OperationSpec("requestDataExport", True, False, "export everything held about a customer"),
            OperationSpec("requestErasure", True, False, "ask for a customer's erasure"),
            OperationSpec("approveErasure", True, False, "approve or reject (and resume) an erasure"),
            OperationSpec("linkIdentity", True, False, "link or unlink a support e-mail to a customer"),
            OperationSpec("markNotDuplicate", True, False, "mark two customers as not the same"),
            OperationSpec(
                "reviewIdentities", False, False, "list duplicate pairs, unmatched requesters, gaps"
            ),
        )
    }
)

# How a customer relates to the caller: it owns it, nobody owns it (public pool), someone else does.
SITUATIONS: tuple[str, ...] = ("own", "pool", "other")

# Row rules: which customers a role sees. ``own_or_pool`` is shorthand for ``[own, pool]``.
ROW_RULES: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "own": frozenset({"own"}),
        "pool": frozenset({"pool"}),
        "own_or_pool": frozenset({"own", "pool"}),
        "region": frozenset({"region"}),
        "all": frozenset({"all"}),
    }
)

# The situations a row rule can show a role (a region can hold customers in every situation).
ROW_SITUATIONS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "own": frozenset({"own"}),
        "pool": frozenset({"pool"}),
        "region": frozenset(SITUATIONS),
        "all": frozenset(SITUATIONS),
    }
)

# Write scopes: on which customers a role may perform an operation (always within its rows).
WRITE_SCOPES: Mapping[str, str] = MappingProxyType(
    {
        "any": "on any customer it sees",
        "own": "on its own customers",
        "pool": "on customers in the public pool",
        "region": "on customers in its region",
    }
)


def is_customer_field(name: str) -> bool:
    """A field of Customer itself (not of a nested type)."""
    return "." not in name
