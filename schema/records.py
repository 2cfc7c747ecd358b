"""Departmental records as GraphQL types.

These types resolve straight from the connectors' domain objects (``connectors.models``): each
field reads the attribute of the same name, so no record is copied on the way out. Names follow
graph.md's rule: the departmental name in camelCase, cents as ``Money``, enums upper-cased.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, cast

import strawberry

from connectors import models

from .enums import (
    ActivityType,
    ContractStatus,
    ContractType,
    OpportunityStage,
    OrderStatus,
    PaymentMethod,
    Region,
    SalesRole,
    TicketCategory,
    TicketChannel,
    TicketPriority,
    TicketStatus,
)

if TYPE_CHECKING:
    from policies.guard import Guard

    from .context import RequestContext


def _guard(info: strawberry.Info) -> Guard:
    return cast("RequestContext", info.context).require_guard()


@strawberry.type(description="An amount of money in one currency.")
class Money:
    amount: Decimal
    currency: str


@strawberry.type
class OrderItem:
    sku: str
    name: str
    qty: int
    unit_price: Money


@strawberry.type(description="An order in the sales system.")
class Order:
    order_no: str
    account_no: str
    ordered_at: datetime
    status: OrderStatus
    total: Money
    items: list[OrderItem]


@strawberry.type(description="A payment in the sales system (finance data).")
class Payment:
    payment_id: str
    account_no: str
    order_no: str | None
    paid_at: datetime
    amount: Money
    method: PaymentMethod
    invoice_no: str | None

    @strawberry.field(description="Last 4 digits of the card (finance data).")
    def card_last4(self, info: strawberry.Info) -> str | None:
        payment = cast(models.Payment, self)
        return _guard(info).for_account(payment.account_no, "Payment.cardLast4", payment.card_last4)

    @strawberry.field(description="The paying bank account, as the sales system masks it.")
    def bank_account(self, info: strawberry.Info) -> str | None:
        payment = cast(models.Payment, self)
        return _guard(info).for_account(payment.account_no, "Payment.bankAccount", payment.bank_account)


@strawberry.type(description="A sales opportunity.")
class Opportunity:
    opportunity_id: str
    account_no: str
    title: str
    stage: OpportunityStage
    amount: Money
    expected_close: datetime | None
    updated_at: datetime


@strawberry.type(description="One entry of the communication history in the sales system.")
class Activity:
    activity_id: str
    account_no: str
    type: ActivityType
    occurred_at: datetime
    subject: str
    notes: str | None
    by_user: str


@strawberry.type(description="A member of the sales staff.")
class SalesUser:
    user_id: str
    name: str
    email: str | None
    region: Region | None  # graph.md: enum values upper-cased, like Customer.region
    role: SalesRole


@strawberry.type(description="A requester's rating of one ticket.")
class TicketSatisfaction:
    score: int
    comment: str | None


@strawberry.type(description="One message of a ticket's conversation.")
class TicketComment:
    id: str
    author: str
    body: str
    public: bool
    created_at: datetime


@strawberry.type(description="A support ticket in the helpdesk.")
class Ticket:
    id: str
    subject: str
    category: TicketCategory
    priority: TicketPriority
    status: TicketStatus
    channel: TicketChannel
    assignee: str | None
    created_at: datetime
    updated_at: datetime
    satisfaction: TicketSatisfaction | None

    @strawberry.field(description="The requester's e-mail (follows the customer's e-mail decision).")
    def requester_email(self, info: strawberry.Info) -> str | None:
        ticket = cast(models.Ticket, self)
        return _guard(info).for_email(ticket.requester_email, "Ticket.requesterEmail", ticket.requester_email)

    @strawberry.field(description="The conversation, internal notes included (helpdesk).")
    async def comments(self, info: strawberry.Info) -> list[TicketComment] | None:
        context = cast("RequestContext", info.context)
        ticket = cast(models.Ticket, self)
        context.require_guard().for_email(ticket.requester_email, "Ticket.comments", None)
        detail = await context.loaders.ticket_detail.load(ticket.id)
        return cast(list[TicketComment], detail.comments) if detail is not None else None


@strawberry.type(description="A customer's satisfaction across its rated tickets.")
class Satisfaction:
    rated: int
    last_rated_at: datetime | None

    @strawberry.field(description="Average score, rounded to 2 decimals; null when nothing is rated.")
    def average(self) -> float | None:
        value = cast(models.Satisfaction, self).average
        return None if value is None else round(float(value), 2)


@strawberry.type(description="A contract in the legal register.")
class Contract:
    contract_id: str
    type: ContractType
    status: ContractStatus
    signed_on: date | None
    starts_on: date
    ends_on: date | None
    auto_renew: bool
    confidential: bool
    updated_on: date

    @strawberry.field(description="The party's tax id (follows the customer's taxId decision).")
    def party_tax_id(self, info: strawberry.Info) -> str | None:
        contract = cast(models.Contract, self)
        return _guard(info).for_tax_id(contract.party_tax_id, "Contract.partyTaxId", contract.party_tax_id)

    @strawberry.field(description="The party's name.")
    def party_name(self, info: strawberry.Info) -> str | None:
        contract = cast(models.Contract, self)
        return _guard(info).for_tax_id(contract.party_tax_id, "Contract.partyName", contract.party_name)

    @strawberry.field(description="Null for an NDA.")
    def value(self, info: strawberry.Info) -> Money | None:
        contract = cast(models.Contract, self)
        return cast(
            Money | None, _guard(info).for_tax_id(contract.party_tax_id, "Contract.value", contract.value)
        )

    @strawberry.field
    def payment_terms(self, info: strawberry.Info) -> str | None:
        contract = cast(models.Contract, self)
        return _guard(info).for_tax_id(contract.party_tax_id, "Contract.paymentTerms", contract.payment_terms)
