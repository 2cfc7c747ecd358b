"""Writes: each checked against the policy's write rules, sent to the owning system with an
idempotency key, recorded for the audit trail, and answered through the same read policy."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any, cast

import strawberry
from cachetools import TTLCache

from connectors import models
from connectors.errors import UpstreamConflict, UpstreamInvalid, UpstreamNotFound
from features.pool.rules import PoolEventKind, PoolRecord
from features.store.db import StoreUnavailable

from .context import RequestContext, WriteRecord
from .customer import Customer
from .enums import ActivityType, TicketCategory, TicketChannel, TicketPriority
from .errors import BadUserInput, Conflict, Forbidden, GraphError, NotFound
from .ids import customer_key
from .records import Activity, Ticket

log = logging.getLogger(__name__)

# GraphQL input name → sales field name, for contact changes
_CONTACT_FIELDS = {
    "contactName": "contact_name",
    "title": "title",
    "email": "email",
    "phone": "phone",
    "address": "address",
}
_MAX_TEXT = 2000


# A retry with the same idempotency key must send the system the same body (the sales system answers a
# key reused with another body with 409). An activity's time defaults to "now", so the first attempt's
# "now" is kept for the caller's key: in this process, for a day (a retry reaching another gateway
# process, or one started since, gets its own "now" and the system's 409: CONFLICT).
_FIRST_NOW: TTLCache[tuple[str, str], datetime] = TTLCache(maxsize=10_000, ttl=24 * 3600)


def _first_now(context: RequestContext, idempotency_key: str | None) -> datetime:
    if not idempotency_key:
        return context.now
    return _FIRST_NOW.setdefault((context.require_principal().sub, idempotency_key), context.now)


def _context(info: strawberry.Info) -> RequestContext:
    return cast(RequestContext, info.context)


async def _target(context: RequestContext, customer_id: strawberry.ID) -> models.Account:
    """The customer a write is about, read fresh; NOT_FOUND when unknown or outside the caller's rows."""
    guard = context.require_guard()
    account_no = customer_key(customer_id)
    try:
        account = await context.loaders.upstreams.sales.account(account_no)
    except UpstreamNotFound:
        account = None
    if account is None or not guard.view(account).visible:
        raise NotFound("No such customer.")
    return account


def _authorize(context: RequestContext, operation: str, account: models.Account, **kwargs: Any) -> None:
    guard = context.require_guard()
    decision = guard.can_write(operation, account, **kwargs)
    if not decision.allowed:
        context.record(WriteRecord(operation, account.account_no, denied=True, rule=decision.rule))
        raise Forbidden(f"Not allowed: {decision.rule}.")


def answer_with_policy(context: RequestContext, account: models.Account) -> Customer:
    """The customer after a write, through the read policy (and the request's cache refreshed)."""
    loaders = context.loaders
    loaders.account.clear(account.account_no).prime(account.account_no, account)
    return Customer.from_account(account, context.require_guard().view(account))


def clean_text(name: str, value: str | None, *, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise BadUserInput(f"'{name}' is required.")
        return None
    value = value.strip()
    if required and not value:
        raise BadUserInput(f"'{name}' must not be empty.")
    if len(value) > _MAX_TEXT:
        raise BadUserInput(f"'{name}' is longer than {_MAX_TEXT} characters.")
    return value


def refused_values(exc: UpstreamInvalid) -> BadUserInput:
    fields = sorted(exc.fields)
    where = f" ({', '.join(fields)})" if fields else ""
    return BadUserInput(f"The {exc.system.value} system refused the values{where}.", fields=fields)


# --- inputs and payloads ------------------------------------------------------------------------


@strawberry.input(description="Change a customer's contact data. Omitted fields stay as they are.")
class UpdateCustomerContactInput:
    customer_id: strawberry.ID
    version: int | None = strawberry.field(
        default=None, description="The version read; a stale one gives CONFLICT (optimistic concurrency)."
    )
    contact_name: str | None = strawberry.UNSET
    title: str | None = strawberry.UNSET
    email: str | None = strawberry.UNSET
    phone: str | None = strawberry.UNSET
    address: str | None = strawberry.UNSET
    idempotency_key: str | None = strawberry.field(
        default=None, description="Repeat a write safely: the same key returns the first answer."
    )


@strawberry.type
class UpdateCustomerContactPayload:
    customer: Customer | None


@strawberry.input(description="Log a communication with a customer (sales system).")
class LogActivityInput:
    customer_id: strawberry.ID
    type: ActivityType
    subject: str
    notes: str | None = None
    occurred_at: datetime | None = strawberry.field(default=None, description="Default: now.")
    idempotency_key: str | None = None


@strawberry.type
class LogActivityPayload:
    customer: Customer | None
    activity_record: strawberry.Private[models.Activity]

    @strawberry.field(description="The logged activity, if the caller may read activities.")
    def activity(self, info: strawberry.Info) -> Activity | None:
        customer = self.customer
        if customer is None:
            return None
        _context(info).require_guard().relation(customer.account_no, customer.view, "activities")
        return cast(Activity, self.activity_record)


@strawberry.input(description="Open a support ticket for a customer (helpdesk), from its e-mail.")
class OpenTicketInput:
    customer_id: strawberry.ID
    subject: str
    body: str
    category: TicketCategory = TicketCategory.QUESTION
    priority: TicketPriority = TicketPriority.NORMAL
    channel: TicketChannel = TicketChannel.WEB
    idempotency_key: str | None = None


@strawberry.type
class OpenTicketPayload:
    customer: Customer | None
    ticket_record: strawberry.Private[models.Ticket]

    @strawberry.field(description="The new ticket, if the caller may read tickets.")
    def ticket(self, info: strawberry.Info) -> Ticket | None:
        customer = self.customer
        if customer is None:
            return None
        _context(info).require_guard().relation(customer.account_no, customer.view, "tickets")
        return cast(Ticket, self.ticket_record)


@strawberry.input(description="Give a customer to a sales rep, or back to the public pool (ownerId null).")
class AssignOwnerInput:
    customer_id: strawberry.ID
    owner_id: strawberry.ID | None
    version: int | None = None


@strawberry.type
class AssignOwnerPayload:
    customer: Customer | None


# --- the mutations ------------------------------------------------------------------------------


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Change contact data (support_agent, data_steward by default).")
    async def update_customer_contact(
        self, info: strawberry.Info, input: UpdateCustomerContactInput
    ) -> UpdateCustomerContactPayload | None:
        context = _context(info)
        changes: dict[str, str | None] = {}
        for graph_name, sales_name in _CONTACT_FIELDS.items():
            value = getattr(input, sales_name)
            if value is not strawberry.UNSET:
                changes[sales_name] = clean_text(graph_name, value)
        if not changes:
            raise BadUserInput("Nothing to change: give at least one contact field.")
        account = await _target(context, input.customer_id)
        changed = [g for g, s in _CONTACT_FIELDS.items() if s in changes]
        _authorize(context, "changeContact", account, fields=changed)
        await context.begin_write("changeContact", account.account_no)
        key = input.idempotency_key or uuid.uuid4().hex
        try:
            updated = await context.loaders.upstreams.sales.update_account(
                account.account_no, changes, version=input.version, idempotency_key=key
            )
        except UpstreamConflict:
            raise Conflict("The customer changed since that version; read it again and retry.") from None
        except UpstreamInvalid as exc:
            raise refused_values(exc) from None
        context.evict(account.account_no, email=account.email)
        if account.email and updated.email != account.email and context.identity is not None:
            # the helpdesk keeps the tickets filed under the old e-mail: it stays a support identity
            try:
                await context.identity.previous_email(
                    account.account_no, account.email, actor=context.require_principal().sub
                )
            except StoreUnavailable:  # the sales change event brings it again (features/identity)
                log.warning("previous e-mail not kept now: the gateway database is unavailable")
        context.record(
            WriteRecord(
                "changeContact",
                account.account_no,
                before={s: getattr(account, s) for s in changes},
                after={s: getattr(updated, s) for s in changes},
            )
        )
        return UpdateCustomerContactPayload(customer=answer_with_policy(context, updated))

    @strawberry.mutation(description="Log a communication (activity) with a customer.")
    async def log_activity(self, info: strawberry.Info, input: LogActivityInput) -> LogActivityPayload | None:
        context = _context(info)
        subject = cast(str, clean_text("subject", input.subject, required=True))
        notes = clean_text("notes", input.notes)
        account = await _target(context, input.customer_id)
        _authorize(context, "logActivity", account)
        await context.begin_write("logActivity", account.account_no)
        principal = context.require_principal()
        try:
            activity = await context.loaders.upstreams.sales.create_activity(
                account.account_no,
                input.type.value,
                input.occurred_at or _first_now(context, input.idempotency_key),
                subject,
                notes,
                principal.sub,
                idempotency_key=input.idempotency_key or uuid.uuid4().hex,
            )
        except UpstreamInvalid as exc:
            raise refused_values(exc) from None
        context.loaders.activities.clear(account.account_no)
        context.evict(account.account_no)
        context.record(
            WriteRecord(
                "logActivity",
                account.account_no,
                after={"activity_id": activity.activity_id, "type": activity.type, "subject": subject},
            )
        )
        return LogActivityPayload(customer=answer_with_policy(context, account), activity_record=activity)

    @strawberry.mutation(description="Open a support ticket for a customer.")
    async def open_ticket(self, info: strawberry.Info, input: OpenTicketInput) -> OpenTicketPayload | None:
        context = _context(info)
        subject = cast(str, clean_text("subject", input.subject, required=True))
        body = cast(str, clean_text("body", input.body, required=True))
        account = await _target(context, input.customer_id)
        _authorize(context, "openTicket", account)
        await context.begin_write("openTicket", account.account_no)
        if account.email is None:
            raise BadUserInput("The customer has no e-mail; the helpdesk knows requesters by e-mail.")
        try:
            ticket = await context.loaders.upstreams.support.create_ticket(
                account.email,
                subject,
                input.category.value,
                input.priority.value,
                input.channel.value,
                body,
                request_id=input.idempotency_key or uuid.uuid4().hex,
            )
        except UpstreamInvalid as exc:
            raise refused_values(exc) from None
        context.loaders.tickets.clear(account.email)
        context.evict(account.account_no, email=account.email)
        context.record(
            WriteRecord("openTicket", account.account_no, after={"ticket_id": ticket.id, "subject": subject})
        )
        return OpenTicketPayload(customer=answer_with_policy(context, account), ticket_record=ticket)

    @strawberry.mutation(description="Assign a customer to a sales rep, or return it to the pool.")
    async def assign_owner(self, info: strawberry.Info, input: AssignOwnerInput) -> AssignOwnerPayload | None:
        context = _context(info)
        account = await _target(context, input.customer_id)
        _authorize(context, "assignOwner", account)
        await context.begin_write("assignOwner", account.account_no)
        owner_id = str(input.owner_id) if input.owner_id is not None else None
        if owner_id is not None and await context.loaders.user.load(owner_id) is None:
            raise BadUserInput("No sales user has that id.")
        review: int | None = None
        if owner_id is None and account.owner_id is not None and context.pool is not None:
            try:  # to the pool: its review first (no customer reaches the pool unreviewed)
                review = await context.pool.open_review(
                    account_no=account.account_no,
                    region=account.region,
                    cause="reassign",
                    note=None,
                    previous_owner=account.owner_id,
                    actor=context.require_principal().sub,
                    at=context.now,
                )
            except StoreUnavailable:
                raise GraphError("The pool's database is unavailable, so nothing was changed.") from None
        try:
            updated = await context.loaders.upstreams.sales.set_owner(
                account.account_no, owner_id, version=input.version
            )
        except BaseException as exc:
            if context.pool is not None:
                await context.pool.cancel_review(review)
            if isinstance(exc, UpstreamConflict):
                raise Conflict("The customer changed since that version; read it again and retry.") from None
            if isinstance(exc, UpstreamInvalid):
                raise refused_values(exc) from None
            raise
        context.evict(account.account_no)
        if context.pool is not None and account.owner_id != owner_id:
            # the pool history: the previous owner lost it (its cooldown starts); to nobody: a review
            reassign = PoolRecord(
                kind=PoolEventKind.REASSIGN,
                account_no=account.account_no,
                actor=context.require_principal().sub,
                at=context.now,
                owner_id=account.owner_id,
                reason="reassign",
                assigned_to=owner_id,
                sales_stamp=updated.owner_since or updated.pool_since,
                request_id=context.request_id,
                region=account.region,
            )
            try:
                await context.pool.record([reassign])
            except Exception:  # the owner change happened (the sales system is the truth)
                log.exception("pool history not recorded", extra={"request_id": context.request_id})
        context.record(
            WriteRecord(
                "assignOwner",
                account.account_no,
                before={"owner_id": account.owner_id},
                after={"owner_id": owner_id},
            )
        )
        return AssignOwnerPayload(customer=answer_with_policy(context, updated))
