"""Domain objects the connectors speak.

Every upstream quirk (envelopes, cents, epochs, date strings, mixed-case e-mails, free-text phones)
ends in the connectors; what leaves them is one of these plain, typed, immutable records.
Times are timezone-aware UTC ``datetime``; days are ``date``; money is ``Money`` (``Decimal``);
e-mails are lower-cased; phones are E.164 where they can be parsed (else the trimmed text).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum


class System(StrEnum):
    SALES = "sales"
    SUPPORT = "support"
    CONTRACTS = "contracts"


@dataclass(frozen=True, slots=True)
class Money:
    amount: Decimal
    currency: str


# --- sales -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Account:
    account_no: str
    kind: str  # "company" | "person"
    name: str
    contact_name: str | None
    title: str | None
    email: str | None  # lower-cased
    phone: str | None  # E.164 when parseable
    address: str | None
    tax_id: str | None
    region: str  # "east" | "north" | "south" | "west" | "central"
    status: str  # "lead" | "prospect" | "customer" | "churned"
    owner_id: str | None
    owner_since: datetime | None
    pool_since: datetime | None
    created_at: datetime
    updated_at: datetime
    version: int


@dataclass(frozen=True, slots=True)
class AccountPage:
    accounts: list[Account]
    page: int
    per_page: int
    total: int


@dataclass(frozen=True, slots=True)
class OrderItem:
    sku: str
    name: str
    qty: int
    unit_price: Money


@dataclass(frozen=True, slots=True)
class Order:
    order_no: str
    account_no: str
    ordered_at: datetime
    status: str  # "pending" | "paid" | "shipped" | "cancelled" | "refunded"
    total: Money
    items: list[OrderItem]


@dataclass(frozen=True, slots=True)
class Payment:
    payment_id: str
    account_no: str
    order_no: str | None
    paid_at: datetime
    amount: Money
    method: str  # "card" | "bank_transfer" | "alipay" | "wechat_pay"
    card_last4: str | None
    bank_account: str | None
    invoice_no: str | None


@dataclass(frozen=True, slots=True)
class Opportunity:
    opportunity_id: str
    account_no: str
    title: str
    stage: str  # "qualify" | "propose" | "negotiate" | "won" | "lost"
    amount: Money
    expected_close: datetime | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Activity:
    activity_id: str
    account_no: str
    type: str  # "call" | "email" | "meeting" | "visit" | "wechat"
    occurred_at: datetime
    subject: str
    notes: str | None
    by_user: str


@dataclass(frozen=True, slots=True)
class SalesUser:
    user_id: str
    name: str
    email: str | None
    region: str | None
    role: str  # "rep" | "manager"


# --- support ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TicketRating:
    score: int
    comment: str | None


@dataclass(frozen=True, slots=True)
class Ticket:
    id: str  # the helpdesk's integer id, as a string
    requester_email: str
    subject: str
    category: str  # "complaint" | "question" | "incident" | "request"
    priority: str  # "low" | "normal" | "high" | "urgent"
    status: str  # "new" | "open" | "pending" | "solved" | "closed"
    channel: str  # "email" | "phone" | "chat" | "web"
    assignee: str | None
    created_at: datetime
    updated_at: datetime
    satisfaction: TicketRating | None


@dataclass(frozen=True, slots=True)
class TicketComment:
    id: str
    author: str
    body: str
    public: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class TicketDetail:
    ticket: Ticket
    comments: list[TicketComment]


@dataclass(frozen=True, slots=True)
class Requester:
    email: str
    display_name: str | None
    phone: str | None
    vip: bool
    language: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Satisfaction:
    email: str
    rated: int
    average: Decimal | None  # rounded to 2 decimals
    last_rated_at: datetime | None


# --- contracts -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContractDocument:
    name: str
    pages: int
    uploaded_on: date


@dataclass(frozen=True, slots=True)
class Contract:
    contract_id: str
    party_tax_id: str
    party_name: str
    type: str  # "sales" | "service" | "framework" | "nda"
    status: str  # "draft" | "active" | "expired" | "terminated"
    signed_on: date | None
    starts_on: date
    ends_on: date | None
    auto_renew: bool
    value: Money | None
    payment_terms: str | None
    confidential: bool
    updated_on: date
    documents: list[ContractDocument] | None = None  # only from the single-contract read
