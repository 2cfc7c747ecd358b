"""The enforcement point: every policy-controlled value a request serves passes through one ``Guard``.

The schema asks the guard, never the roles: ``guard.view(account)`` decides a customer's row and
fields once; ``guard.scalar(...)`` / ``guard.relation(...)`` / ``guard.nested(...)`` apply those
decisions to what leaves, raise ``Denied`` for a denied field, and note every decision for the audit
trail. Nested records (payments, tickets, contracts) find their customer's view by the key the
record carries (account number, requester e-mail, party tax id), so no record is wrapped or copied.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from .decisions import Decision, Effect
from .engine import AccountLike, CustomerView, Policy, RowScope, WriteDecision
from .principal import Principal

T = TypeVar("T")


class Denied(Exception):
    """The policy denies ``field`` to the caller; the message names the field, never a value."""

    def __init__(self, field: str) -> None:
        super().__init__(f"Not allowed to see '{field}' of this customer.")
        self.field = field


class Account(AccountLike, Protocol):
    """What the guard reads of a customer (``connectors.models.Account`` fits)."""

    @property
    def account_no(self) -> str: ...

    @property
    def email(self) -> str | None: ...

    @property
    def tax_id(self) -> str | None: ...


@dataclass(slots=True)
class Served:
    """What one request served of one customer: field → decision word, grants used."""

    fields: dict[str, str] = field(default_factory=dict)
    grants: dict[str, str] = field(default_factory=dict)  # field → grant id


@dataclass(frozen=True, slots=True)
class _Probe:
    owner_id: str | None
    region: str


class Guard:
    """One request's enforcement state. Cheap: decisions are shared tables; bookkeeping is dict sets."""

    def __init__(self, policy: Policy, principal: Principal) -> None:
        self.policy = policy
        self.principal = principal
        self.rows: RowScope = policy.rows(principal)
        self.needed = policy.fields_needed(principal)
        self.served: dict[str, Served] = {}
        self.hidden_rows: set[str] = set()  # customers asked for by id that are outside the rows
        self.searches: list[tuple[str, tuple[str, ...]]] = []  # (term, the fields it was matched on)
        self._grants: dict[str, Mapping[str, str]] = {}  # account_no → field → grant id
        self._by_account: dict[str, _Entry] = {}
        self._by_email: dict[str, _Entry] = {}
        self._by_tax_id: dict[str, _Entry] = {}

    # --- rows and views -------------------------------------------------------------------------

    def add_grants(self, grants: Mapping[str, Mapping[str, str]]) -> None:
        """Live grants of the caller, by account number (from the access-request store)."""
        self._grants.update(grants)

    def view(self, account: Account) -> CustomerView:
        """Decide the customer once; remember the view for its nested records."""
        grants = self._grants.get(account.account_no)
        view = self.policy.view(self.principal, account, frozenset(grants) if grants else None)
        if not view.visible:
            self.hidden_rows.add(account.account_no)
            return view
        entry = (account.account_no, view)
        self._by_account[account.account_no] = entry
        if account.email:
            self._remember(self._by_email, account.email, entry)
        if account.tax_id:
            self._remember(self._by_tax_id, account.tax_id, entry)
        return view

    def also_known_as(self, account_no: str, emails: Sequence[str]) -> None:
        """More e-mails the customer's records are filed under (previous or linked support identities):
        a ticket of one of them is that customer's, decided by its view."""
        entry = self._by_account.get(account_no)
        if entry is None:
            return
        for email in emails:
            self._remember(self._by_email, email, entry)

    @staticmethod
    def _remember(index: dict[str, _Entry], key: str, entry: _Entry) -> None:
        # Two customers sharing an e-mail or tax id in different situations: keep the stricter view.
        known = index.get(key)
        if known is None or _strictness(entry[1]) > _strictness(known[1]):
            index[key] = entry

    def clear_everywhere(self, name: str) -> bool:
        """Is ``name`` allowed in clear on every customer the caller can see (ignoring grants)?"""
        return self.clear_within(name)

    def clear_within(
        self, name: str, *, owner_id: str | None = None, unowned: bool = False, region: str | None = None
    ) -> bool:
        """Is ``name`` allowed in clear on every customer the caller can see among those a list query
        narrows to (``owner_id``, ``unowned``, ``region``; ignoring grants)? Decisions depend only on
        the situation (own, pool, other) and on whether the customer is in the caller's region, so one
        probe per possible combination decides it."""
        return all(
            self.policy.view(self.principal, probe)[name].allowed
            for probe in self._probes(owner_id=owner_id, unowned=unowned, region=region)
        )

    def note_search(self, term: str, fields: Sequence[str]) -> None:
        """A search term matched against customer fields: audited (a guess at a masked e-mail is a
        look at personal data even when nothing is served)."""
        self.searches.append((term, tuple(fields)))

    def datum(self, account: Account | None, name: str, value: object) -> object:
        """A value of customer field ``name`` shown somewhere else (an audit record's before/after):
        as the caller's decision for that field on that customer shows it — as it is, masked, or
        ``None`` (the same-datum rule). ``account`` None (no longer known): the strictest decision
        over the caller's rows. Grants are not applied; nothing is noted."""
        decision: Decision | None
        if account is not None:
            decision = self.policy.view(self.principal, account)[name]
        else:
            decision = min(
                (self.policy.view(self.principal, probe)[name] for probe in self._probes()),
                key=lambda d: d.effect,
                default=None,
            )
        if decision is None or decision.effect is Effect.DENY:
            return None
        if decision.effect is Effect.MASK:
            return decision.apply(value) if isinstance(value, str) else None
        return value

    def _probes(
        self, *, owner_id: str | None = None, unowned: bool = False, region: str | None = None
    ) -> list[_Probe]:
        """One stand-in customer per situation (own, pool, other) and region (the caller's, another)
        a list query narrowed by ``owner_id`` / ``unowned`` / ``region`` can return, within the rows:
        decisions depend on nothing else."""
        sub = self.principal.sub
        if owner_id is not None:
            owners: tuple[str | None, ...] = (owner_id,)
        elif unowned:
            owners = (None,)
        else:
            owners = (sub, None, sub + "~other")
        mine = self.principal.region or ""
        regions = (region,) if region is not None else (mine, mine + "~other")
        probes = (_Probe(owner, r) for owner in owners for r in regions)
        return [probe for probe in probes if self.rows.admits(probe)]

    def sees_clear(self, account: Account, name: str) -> bool:
        """Is ``name`` of this customer allowed in clear to the caller (ignoring grants)? Decides
        nothing for the request and notes nothing: for matching a search on what the caller sees."""
        return self.policy.view(self.principal, account)[name].allowed

    # --- values ---------------------------------------------------------------------------------

    def _note(self, account_no: str, view: CustomerView, name: str, decision: Decision) -> None:
        served = self.served.get(account_no)
        if served is None:
            served = self.served[account_no] = Served()
        served.fields[name] = str(decision)
        if name in view.grants:
            grant_id = self._grants.get(account_no, {}).get(name)
            if grant_id is not None:
                served.grants[name] = grant_id

    def scalar(self, account_no: str, view: CustomerView, name: str, value: str | None) -> str | None:
        """A policy-controlled scalar of a customer, as the caller may see it."""
        decision = view[name]
        self._note(account_no, view, name, decision)
        if decision.effect is Effect.DENY:
            raise Denied(name)
        return decision.apply(value)

    def relation(self, account_no: str, view: CustomerView, name: str) -> None:
        """Check a list/object field of a customer before anything is fetched for it."""
        decision = view[name]
        self._note(account_no, view, name, decision)
        if decision.effect is Effect.DENY:
            raise Denied(name)

    def can_write(
        self,
        operation: str,
        account: AccountLike | None = None,
        *,
        requester: str | None = None,
        fields: Iterable[str] | None = None,
    ) -> WriteDecision:
        """May the caller perform the write ``operation`` (on ``account``)? The policy's write rules."""
        return self.policy.can_write(self.principal, operation, account, requester=requester, fields=fields)

    def keep(self, view: CustomerView, name: str, items: Sequence[T]) -> list[T]:
        """The items of a list field the caller may see (e.g. confidential contracts left out)."""
        return view.keep(name, items)

    def served_without_grants(self, account: Account, names: Sequence[str]) -> list[str]:
        """Of the list/object fields ``names``, those this customer's view serves before any access
        grant is known: safe to start loading early (a grant only ever adds fields). Decides
        nothing for the request and notes nothing."""
        view = self.policy.view(self.principal, account, None)
        if not view.visible:
            return []
        return [name for name in names if view[name].effect is not Effect.DENY]

    def fetches(self, name: str) -> bool:
        """Is ``name`` served (allowed or masked) on at least one customer the caller can see?"""
        return name in self.needed

    # --- nested records, found by the key they carry ----------------------------------------------

    def for_account(self, account_no: str, name: str, value: T | None) -> T | None:
        return self._nested(self._by_account.get(account_no), name, value)

    def for_email(self, email: str, name: str, value: T | None) -> T | None:
        return self._nested(self._by_email.get(email), name, value)

    def for_tax_id(self, tax_id: str, name: str, value: T | None) -> T | None:
        return self._nested(self._by_tax_id.get(tax_id), name, value)

    def _nested(self, entry: _Entry | None, name: str, value: T | None) -> T | None:
        """A nested value; a record of no customer this request decided is denied (fail closed)."""
        if entry is None:
            raise Denied(name)
        account_no, view = entry
        decision = view[name]
        self._note(account_no, view, name, decision)
        if decision.effect is Effect.DENY:
            raise Denied(name)
        if decision.effect is Effect.MASK and isinstance(value, str):
            return decision.apply(value)  # type: ignore[return-value]
        return value


_Entry = tuple[str, CustomerView]


def _strictness(view: CustomerView) -> int:
    return -sum(int(d.effect) for d in view.decisions.values())
