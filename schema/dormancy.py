"""Dormancy of many customers at once, for filters and bulk operations over scanned pages.

Dormant = no contact in 365 days across the three systems (``Customer.dormant``: activities, tickets
created/updated, non-confidential contracts signed). Deciding it needs each customer's activities,
tickets and contracts; this asks the cheapest system first and the others only for the customers still
undecided: activities (sales, 100 customers a call) clear most; tickets (helpdesk search by e-mail)
clear more; only the rest are looked up in the contract register (one call per tax id, 4 in flight).
Everything goes through the request's loaders, so ``dormant``/``lastContactAt`` of the customers served
afterwards cost nothing more. A system that fails fails the decision (``UPSTREAM_UNAVAILABLE``): a
customer is never called dormant because the helpdesk was down.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from connectors.models import Account

from .customer import DORMANT_AFTER, last_contact
from .loaders import Loaders
from .paging import BatchPredicate

if TYPE_CHECKING:
    from .context import RequestContext


def _recent(moment: datetime | None, cut: datetime) -> bool:
    return moment is not None and moment >= cut


def _no_extra(account_no: str) -> tuple[str, ...]:
    return ()


async def dormant_flags(
    loaders: Loaders,
    accounts: Sequence[Account],
    now: datetime,
    extra_emails: Callable[[str], tuple[str, ...]] = _no_extra,
) -> list[bool]:
    """Per account: dormant as of ``now`` (the same answer ``Customer.dormant`` gives). ``extra_emails``:
    an account's previous and linked support e-mails (features/identity), whose tickets count too."""
    cut = now - DORMANT_AFTER
    activities = await loaders.activities.load_many([a.account_no for a in accounts])
    undecided = [i for i, items in enumerate(activities) if not _recent(last_contact(items, (), ()), cut)]
    support = {i: _support_emails(accounts[i], extra_emails) for i in undecided}
    emails = sorted({e for i in undecided for e in support[i]})
    if emails:
        tickets = dict(zip(emails, await loaders.tickets.load_many(emails), strict=True))
        undecided = [
            i
            for i in undecided
            if not _recent(last_contact((), [t for e in support[i] for t in tickets.get(e, ())], ()), cut)
        ]
    tax_ids = sorted({t for i in undecided if (t := accounts[i].tax_id)})
    if tax_ids:
        contracts = dict(zip(tax_ids, await loaders.contracts.load_many(tax_ids), strict=True))
        undecided = [
            i
            for i in undecided
            if not _recent(last_contact((), (), contracts.get(accounts[i].tax_id or "", ())), cut)
        ]
    flags = [False] * len(accounts)
    for i in undecided:
        flags[i] = True
    return flags


def dormancy_select(context: RequestContext, dormant: bool) -> BatchPredicate:
    """A scan condition for ``customers(filter: {dormant: …})``: dormant (or not) as of the request."""

    async def select(accounts: Sequence[Account]) -> list[bool]:
        flags = await dormant_flags(context.loaders, accounts, context.now, extra_emails_of(context))
        return flags if dormant else [not flag for flag in flags]

    return select


def extra_emails_of(context: RequestContext) -> Callable[[str], tuple[str, ...]]:
    """The request's view of previous and linked support e-mails (none without identity)."""
    return context.identity.extra_emails if context.identity is not None else _no_extra


def _support_emails(account: Account, extra: Callable[[str], tuple[str, ...]]) -> tuple[str, ...]:
    current = (account.email,) if account.email else ()
    return current + tuple(e for e in extra(account.account_no) if e != account.email)
