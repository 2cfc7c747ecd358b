"""The decision engine: rows, field decisions, writes and explanations for one loaded policy.

Everything a request needs is precomputed per set of roles, the first time that set is seen: for each
of the six ways a customer can relate to a caller (own / pool / someone else's × in the caller's
region or not) one immutable ``CustomerView``. ``Policy.view`` is then two comparisons and two dict
lookups, and the views it returns are shared, never copied.

How decisions combine (documented in the policy file as well):

- a role decides only for customers among its rows; several roles: the most permissive decision wins
  (allow > mask > deny) and the rows are united;
- identity fields are allowed wherever the row is seen;
- a nested field (``Payment.cardLast4``) is denied wherever its parent (``payments``) is denied;
- a field in ``same_datum`` takes its datum's decision (``Ticket.requesterEmail`` follows ``email``),
  denied wherever its own parent is denied;
- a list item is left out when every role that sees the row hides items with that flag;
- a granted field (approved access request) is allowed for that caller and customer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Protocol, TypeVar

from .catalogue import FIELDS, ITEM_FLAGS, OPERATIONS, SITUATIONS, WRITE_SCOPES, is_customer_field
from .decisions import ALLOW, DENY, Decision
from .loader import load_spec, parse_spec
from .principal import Principal
from .spec import AuditRules, PolicySpec, Source, WriteGrant

T = TypeVar("T")

_CACHE_LIMIT = 4096  # role sets / granted views kept; cleared wholesale beyond (never reached in practice)


class AccountLike(Protocol):
    """What the engine reads of a customer (``connectors.models.Account`` fits)."""

    @property
    def owner_id(self) -> str | None: ...

    @property
    def region(self) -> str: ...


# --- results ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RowScope:
    """Which customers a caller sees, as upstream list filters: all, or the union of the parts."""

    all: bool = False
    owner_in: frozenset[str] = frozenset()  # owner_id in these
    include_pool: bool = False  # owner_id is null
    regions: frozenset[str] = frozenset()  # region in these
    identity_only: bool = False  # every role the caller has sees identity fields only

    @property
    def empty(self) -> bool:
        return not (self.all or self.owner_in or self.include_pool or self.regions)

    def admits(self, account: AccountLike) -> bool:
        if self.all:
            return True
        owner = account.owner_id
        if owner is None:
            if self.include_pool:
                return True
        elif owner in self.owner_in:
            return True
        return account.region in self.regions


@dataclass(frozen=True, slots=True, eq=False)
class CustomerView:
    """Every policy-controlled decision for one caller and one customer. Shared and immutable.

    ``view[field]`` → ``Decision`` for every catalogue field (identity fields too). ``hidden`` maps a
    list field to the item attributes that leave an item out (``{"contracts": ("confidential",)}``).
    A customer outside the caller's rows gets ``visible=False`` and every field denied.
    """

    visible: bool
    situation: str  # own | pool | other
    roles: tuple[str, ...]  # the caller's roles that see this customer
    decisions: Mapping[str, Decision]
    hidden: Mapping[str, tuple[str, ...]]
    grants: frozenset[str] = frozenset()
    _table: dict[str, Decision] = field(default_factory=dict, repr=False)

    def __getitem__(self, name: str) -> Decision:
        return self._table[name]

    def keep(self, list_field: str, items: Sequence[T]) -> list[T]:
        """The items of a list field the caller may see (hidden ones left out, order kept)."""
        flags = self.hidden.get(list_field)
        if not flags:
            return list(items)
        return [item for item in items if not any(getattr(item, flag) for flag in flags)]


@dataclass(frozen=True, slots=True)
class WriteDecision:
    """Whether a write is allowed and the rule that said so; ``message`` names rules, never values."""

    allowed: bool
    operation: str
    rule: str  # e.g. "writes.logActivity: sales_rep on its own customers"
    source: Source | None

    @property
    def message(self) -> str:
        where = f" ({self.source})" if self.source is not None else ""
        verdict = "allowed" if self.allowed else "not allowed"
        return f"{self.operation} is {verdict}: {self.rule}{where}"


@dataclass(frozen=True, slots=True)
class Step:
    text: str
    source: Source | None = None

    def __str__(self) -> str:
        return f"{self.text}  [{self.source}]" if self.source is not None else self.text


@dataclass(frozen=True, slots=True)
class Explanation:
    """A decision and the rules that made it (``source``: the one that decided)."""

    field: str
    roles: tuple[str, ...]
    situation: str | None  # None: no role's decision depends on the situation
    decision: Decision
    source: Source | None
    steps: tuple[Step, ...]

    def __str__(self) -> str:
        where = f" ({self.situation})" if self.situation is not None else ""
        lines = [f"{self.field} for {' + '.join(self.roles)}{where}: {self.decision}"]
        lines += [f"  {step}" for step in self.steps]
        if self.source is not None:
            lines.append(f"  decided by {self.source}")
        return "\n".join(lines)


# --- the engine ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _RoleSet:
    roles: tuple[str, ...]  # the known roles, sorted
    views: tuple[CustomerView, ...]  # by _index(): situation × in-region
    raw: tuple[dict[str, Decision] | None, ...]  # the rows' combined decisions, before links and grants
    needed: frozenset[str]
    # views with grants applied, by (index, grants as passed): built on first use
    granted: dict[tuple[int, frozenset[str]], CustomerView] = field(default_factory=dict)


def _index(situation: int, in_region: bool) -> int:
    return situation * 2 + in_region


class Policy:
    """A loaded, checked policy. Thread-safe: state after construction is caches of immutable values."""

    def __init__(self, spec: PolicySpec) -> None:
        self.spec = spec
        self.file = spec.file
        self.roles: frozenset[str] = frozenset(spec.roles)
        self.identity_fields = spec.identity_fields
        self.access_request_max_ttl: timedelta = spec.access_max_ttl
        self.audit: AuditRules = spec.audit
        self._split = {
            role: any(column.startswith(role + ".") for column in spec.columns) for role in spec.roles
        }
        # evaluation order: Customer rows, then nested rows (their parents are Customer fields), then links
        rows = list(spec.fields)
        self._order: tuple[str, ...] = tuple(
            [f for f in rows if is_customer_field(f)] + [f for f in rows if not is_customer_field(f)]
        )
        self._hidden_views = tuple(self._view(False, s, (), DENY, {}) for s in SITUATIONS)
        self._by_roles: dict[frozenset[str], _RoleSet] = {}

    @classmethod
    def from_file(cls, path: str | Path, name: str | None = None) -> Policy:
        """Load and check the file (``name``: how messages and sources call it, default the path)."""
        return cls(load_spec(path, name))

    @classmethod
    def from_text(cls, text: str, name: str = "policy.yaml") -> Policy:
        return cls(parse_spec(text, name))

    # --- rows -----------------------------------------------------------------------------------

    def rows(self, principal: Principal) -> RowScope:
        known = [self.spec.roles[r] for r in principal.roles if r in self.spec.roles]
        atoms: set[str] = set()
        for role in known:
            atoms |= role.rows
        identity_only = bool(known) and all(role.identity_only for role in known)
        if "all" in atoms:
            return RowScope(all=True, identity_only=identity_only)
        region = principal.region
        return RowScope(
            owner_in=frozenset({principal.sub}) if "own" in atoms else frozenset(),
            include_pool="pool" in atoms,
            regions=frozenset({region}) if "region" in atoms and region else frozenset(),
            identity_only=identity_only,
        )

    def situation(self, principal: Principal, account: AccountLike) -> str:
        """``own`` (the caller owns it), ``pool`` (nobody does) or ``other`` (someone else does)."""
        owner = account.owner_id
        if owner is None:
            return "pool"
        return "own" if owner == principal.sub else "other"

    # --- fields ---------------------------------------------------------------------------------

    def view(
        self, principal: Principal, account: AccountLike, grants: frozenset[str] | None = None
    ) -> CustomerView:
        """The decisions for this caller on this customer (``grants``: fields an access request opened)."""
        role_set = self._by_roles.get(principal.roles)
        if role_set is None:
            role_set = self._compile(principal.roles)
        owner = account.owner_id
        region = principal.region
        index = (2 if owner is None else 0 if owner == principal.sub else 4) + (
            region is not None and account.region == region
        )
        if grants:
            return self._with_grants(role_set, index, grants)
        return role_set.views[index]

    def fields_needed(self, principal: Principal) -> frozenset[str]:
        """Fields allowed or masked on at least one customer the caller can see; skip fetching the rest.

        Grants are not included: add the fields of the caller's live grants yourself.
        """
        role_set = self._by_roles.get(principal.roles)
        if role_set is None:
            role_set = self._compile(principal.roles)
        return role_set.needed

    def requestable(self, principal: Principal, account: AccountLike, name: str) -> bool:
        """May the caller ask for access to this field of this customer (it sees the row, and the field is
        masked or denied to it)?"""
        current = self.view(principal, account)
        return current.visible and name in FIELDS and not current[name].allowed

    def _compile(self, roles: frozenset[str]) -> _RoleSet:
        known = tuple(sorted(r for r in roles if r in self.spec.roles))
        views: list[CustomerView] = []
        raws: list[dict[str, Decision] | None] = []
        built: dict[tuple[str, tuple[str, ...]], tuple[dict[str, Decision], CustomerView]] = {}
        for position, situation in enumerate(SITUATIONS):
            for in_region in (False, True):
                assert len(views) == _index(position, in_region)
                seeing = tuple(r for r in known if self._sees(r, situation, in_region))
                if not seeing:
                    views.append(self._hidden_views[position])
                    raws.append(None)
                    continue
                if (situation, seeing) not in built:
                    raw = self._combine(seeing, situation)
                    built[(situation, seeing)] = (raw, self._finish(raw, seeing, situation, frozenset()))
                raw, view = built[(situation, seeing)]
                raws.append(raw)
                views.append(view)
        needed = frozenset(
            name for v in views if v.visible for name, d in v.decisions.items() if not d.denied
        )
        role_set = _RoleSet(known, tuple(views), tuple(raws), needed)
        if len(self._by_roles) >= _CACHE_LIMIT:
            self._by_roles.clear()
        self._by_roles[roles] = role_set
        return role_set

    def _sees(self, role: str, situation: str, in_region: bool) -> bool:
        rows = self.spec.roles[role].rows
        return "all" in rows or situation in rows or ("region" in rows and in_region)

    def _combine(self, seeing: tuple[str, ...], situation: str) -> dict[str, Decision]:
        raw: dict[str, Decision] = {}
        for name, rule in self.spec.fields.items():
            best = DENY
            for role in seeing:
                cell = rule.cells.get((role, situation))
                if cell is not None and cell.decision.effect > best.effect:
                    best = cell.decision
            raw[name] = best
        return raw

    def _finish(
        self, raw: dict[str, Decision], seeing: tuple[str, ...], situation: str, grants: frozenset[str]
    ) -> CustomerView:
        table: dict[str, Decision] = dict.fromkeys(FIELDS, DENY)
        for name in self.identity_fields:
            table[name] = ALLOW
        for name in self._order:
            decision = ALLOW if name in grants else raw[name]
            parent = FIELDS[name].parent
            if parent is not None and table[parent].denied:
                decision = DENY
            table[name] = decision
        for name, link in self.spec.links.items():
            decision = ALLOW if name in grants else table[link.target]
            parent = FIELDS[name].parent
            if parent is not None and table[parent].denied:
                decision = DENY
            table[name] = decision
        hidden: dict[str, list[str]] = {}
        for flag, rule in self.spec.hidden.items():
            if all(rule.hide.get((role, situation), True) for role in seeing):
                item_flag = ITEM_FLAGS[flag]
                hidden.setdefault(item_flag.list_field, []).append(item_flag.attr)
        return self._view(True, situation, seeing, table, {k: tuple(v) for k, v in hidden.items()}, grants)

    def _view(
        self,
        visible: bool,
        situation: str,
        seeing: tuple[str, ...],
        table: dict[str, Decision] | Decision,
        hidden: dict[str, tuple[str, ...]],
        grants: frozenset[str] = frozenset(),
    ) -> CustomerView:
        if isinstance(table, Decision):
            table = dict.fromkeys(FIELDS, table)
        if not visible:
            hidden = {flag.list_field: (flag.attr,) for flag in ITEM_FLAGS.values()}
        return CustomerView(
            visible=visible,
            situation=situation,
            roles=seeing,
            decisions=MappingProxyType(table),
            hidden=MappingProxyType(hidden),
            grants=grants,
            _table=table,
        )

    def _with_grants(self, role_set: _RoleSet, index: int, grants: frozenset[str]) -> CustomerView:
        cache = role_set.granted
        cached = cache.get((index, grants))
        if cached is not None:
            return cached
        raw = role_set.raw[index]
        base = role_set.views[index]
        known = frozenset(grants & FIELDS.keys())
        # grants never open a row, and unknown field names open nothing
        view = self._finish(raw, base.roles, base.situation, known) if raw is not None and known else base
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[(index, grants)] = view
        return view

    # --- writes ---------------------------------------------------------------------------------

    def can_write(
        self,
        principal: Principal,
        operation: str,
        account: AccountLike | None = None,
        *,
        requester: str | None = None,
        fields: Iterable[str] | None = None,
    ) -> WriteDecision:
        """May the caller perform ``operation`` (on ``account``, when it is about one customer)?

        ``requester``: for a rule that forbids deciding one's own request (``not_by_requester``), the
        user who made the request; without it such a rule denies. ``fields``: for an operation that
        changes fields, the ones it would change. Raises ``ValueError`` for an operation the catalogue
        does not know (a bug in the caller, not a denial).
        """
        if operation not in OPERATIONS:
            raise ValueError(f"unknown write operation {operation!r}")
        rule = self.spec.writes[operation]
        name = f"writes.{operation}"
        if fields is not None and rule.fields is not None:
            extra = sorted(set(fields) - rule.fields)
            if extra:
                return WriteDecision(
                    False, operation, f"{name}.fields does not include {', '.join(extra)}", rule.source
                )
        if rule.not_by_requester and (requester is None or requester == principal.sub):
            return WriteDecision(False, operation, f"{name}: never on one's own request", rule.source)
        for grant in rule.grants:
            if grant.role in principal.roles and self._write_scope_holds(grant, principal, account):
                return WriteDecision(True, operation, f"{name}: {_grant_text(grant)}", grant.source)
        allowed = "; ".join(_grant_text(g) for g in rule.grants) or "nobody"
        return WriteDecision(False, operation, f"{name} allows only {allowed}", rule.source)

    def _write_scope_holds(
        self, grant: WriteGrant, principal: Principal, account: AccountLike | None
    ) -> bool:
        if account is None:
            return grant.scope == "any"
        rows = self.spec.roles[grant.role].rows
        owner = account.owner_id
        situation = "pool" if owner is None else "own" if owner == principal.sub else "other"
        in_region = principal.region is not None and account.region == principal.region
        if not ("all" in rows or situation in rows or ("region" in rows and in_region)):
            return False  # a role never writes outside its rows
        if grant.scope == "any":
            return True
        if grant.scope == "region":
            return in_region
        return grant.scope == situation  # own | pool

    # --- explanations ---------------------------------------------------------------------------

    def situations_for(self, roles: Iterable[str]) -> tuple[str, ...]:
        """The situations whose decisions may differ for these roles: () when none of their columns is
        split; else every situation one of the roles sees (explain each)."""
        known = [r for r in roles if r in self.spec.roles]
        if not any(self._split[r] for r in known):
            return ()
        return tuple(s for s in SITUATIONS if any(s in self.spec.roles[r].situations for r in known))

    def explain(self, roles: str | Iterable[str], situation: str | None, name: str) -> Explanation:
        """Why ``name`` resolves as it does for these roles on a customer in ``situation`` (own, pool,
        other; the customer taken to be in the caller's region). ``situation`` may be None when no
        role's column depends on it. Raises ``ValueError`` for an unknown role, field or situation."""
        names = (roles,) if isinstance(roles, str) else tuple(sorted(set(roles)))
        for role in names:
            if role not in self.spec.roles:
                raise ValueError(f"unknown role {role!r} (roles: {', '.join(sorted(self.spec.roles))})")
        if name not in FIELDS:
            raise ValueError(f"unknown field {name!r}")
        if situation is None:
            split = [r for r in names if self._split[r]]
            if split:
                options = ", ".join(sorted(self.spec.roles[split[0]].situations))
                raise ValueError(f"{split[0]} decides by situation: give one of {options}")
            seen = [s for s in SITUATIONS if any(s in self.spec.roles[r].situations for r in names)]
            situation = seen[0] if seen else SITUATIONS[0]
        elif situation not in SITUATIONS:
            raise ValueError(f"unknown situation {situation!r} (situations: {', '.join(SITUATIONS)})")
        shown = situation if any(self._split[r] for r in names) else None
        steps: list[Step] = []
        seeing = tuple(r for r in names if self._sees(r, situation, True))
        for role in names:
            if role not in seeing:
                steps.append(
                    Step(
                        f"{role} does not see customers in situation {situation}",
                        self.spec.roles[role].source,
                    )
                )
        if not seeing:
            steps.append(Step("the customer is outside the caller's rows: every field is denied"))
            return Explanation(name, names, shown, DENY, None, tuple(steps))
        decision, source = self._trace(name, seeing, situation, steps, "")
        return Explanation(name, names, shown, decision, source, tuple(steps))

    def _trace(
        self, name: str, seeing: tuple[str, ...], situation: str, steps: list[Step], indent: str
    ) -> tuple[Decision, Source | None]:
        if name in self.identity_fields:
            steps.append(
                Step(
                    f"{indent}{name} is an identity field: allowed wherever the row is seen",
                    self.spec.identity_source,
                )
            )
            return ALLOW, self.spec.identity_source
        link = self.spec.links.get(name)
        if link is not None:
            steps.append(Step(f"{indent}{name} is the same datum as {link.target} (same_datum)", link.source))
            decision, source = self._trace(link.target, seeing, situation, steps, indent + "  ")
        else:
            cells = [self.spec.fields[name].cells[(role, situation)] for role in seeing]
            for cell in cells:
                steps.append(Step(f"{indent}{name}, column {cell.column}: {cell.decision}", cell.source))
            best = max(cells, key=lambda cell: cell.decision.effect)
            decision, source = best.decision, best.source
            if len(seeing) > 1:
                steps.append(Step(f"{indent}several roles: the most permissive wins (allow > mask > deny)"))
        parent = FIELDS[name].parent
        if parent is not None:
            parent_steps: list[Step] = []
            parent_decision, parent_source = self._trace(
                parent, seeing, situation, parent_steps, indent + "  "
            )
            if parent_decision.denied:
                steps.append(Step(f"{indent}its parent {parent} is denied, so {name} is denied"))
                steps.extend(parent_steps)
                return DENY, parent_source
        return decision, source


def _grant_text(grant: WriteGrant) -> str:
    return f"{grant.role} {WRITE_SCOPES[grant.scope]}"
