"""A policy file as validated data: what the loader produces and the engine compiles.

Every rule keeps its ``Source`` (file and line) so that ``explain`` and write denials can name it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from .catalogue import ROW_SITUATIONS
from .decisions import Decision

Column = tuple[str, str]  # (role, situation): one cell of a role's column in one situation


@dataclass(frozen=True, slots=True)
class Source:
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class RoleSpec:
    name: str
    rows: frozenset[str]  # row atoms: own, pool, region, all
    identity_only: bool
    source: Source

    @property
    def situations(self) -> frozenset[str]:
        """The situations in which a customer can be among this role's rows."""
        seen: frozenset[str] = frozenset()
        for atom in self.rows:
            seen |= ROW_SITUATIONS[atom]
        return seen


@dataclass(frozen=True, slots=True)
class Cell:
    decision: Decision
    column: str  # as written in `columns`: "sales_rep.own", "finance"
    source: Source


@dataclass(frozen=True, slots=True)
class FieldRule:
    field: str
    cells: Mapping[Column, Cell]  # every (role, situation) the role can see
    source: Source


@dataclass(frozen=True, slots=True)
class LinkRule:
    field: str  # "Ticket.requesterEmail"
    target: str  # "email"
    source: Source


@dataclass(frozen=True, slots=True)
class HideRule:
    flag: str  # "Contract.confidential"
    hide: Mapping[Column, bool]
    sources: Mapping[Column, Source]
    source: Source


@dataclass(frozen=True, slots=True)
class WriteGrant:
    role: str
    scope: str  # catalogue.WRITE_SCOPES
    source: Source


@dataclass(frozen=True, slots=True)
class WriteRule:
    operation: str
    grants: tuple[WriteGrant, ...]
    fields: frozenset[str] | None  # what the operation may change, when it changes fields
    not_by_requester: bool  # never on one's own request
    source: Source


@dataclass(frozen=True, slots=True)
class AuditRules:
    served_values: bool  # record every allowed or masked value of a policy-controlled field
    denials: bool  # record every denial
    writes: bool  # record every write, values before and after
    fail_closed: bool  # a value that cannot be audited is not served
    source: Source


@dataclass(frozen=True, slots=True)
class PolicySpec:
    file: str
    version: int
    roles: Mapping[str, RoleSpec]
    identity_fields: frozenset[str]
    identity_source: Source
    columns: tuple[str, ...]
    fields: Mapping[str, FieldRule]
    links: Mapping[str, LinkRule]
    hidden: Mapping[str, HideRule]
    writes: Mapping[str, WriteRule]
    access_max_ttl: timedelta
    access_source: Source
    audit: AuditRules
