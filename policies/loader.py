"""Read and check a policy file: YAML in, a validated ``PolicySpec`` out, or every problem at once.

The file is composed into YAML nodes (not constructed), so every message can name its line, duplicate
keys are caught (plain YAML keeps the last one silently), and no scalar is reinterpreted
(``no`` stays the text ``no``). Problems are collected, not raised one by one: a reviewer fixing a
file sees them all. Each reads ``<file>:<line>: <what is wrong>``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .catalogue import FIELDS, ITEM_FLAGS, OPERATIONS, ROW_RULES, SITUATIONS, WRITE_SCOPES, is_customer_field
from .decisions import DENY, Decision, Effect, parse_decision
from .masks import MASKS
from .spec import (
    AuditRules,
    Cell,
    Column,
    FieldRule,
    HideRule,
    LinkRule,
    PolicySpec,
    RoleSpec,
    Source,
    WriteGrant,
    WriteRule,
)

T = TypeVar("T")

FORMAT_VERSION = 1
REQUIRED_SECTIONS = (
    "version",
    "roles",
    "identity_fields",
    "columns",
    "fields",
    "hidden_items",
    "writes",
    "access_requests",
    "audit",
)
OPTIONAL_SECTIONS = ("description", "same_datum")
_ROLE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
_DURATION = re.compile(r"^\s*(\d+)\s*([dhm])\s*$")
_MINUTES = {"d": 24 * 60, "h": 60, "m": 1}


class PolicyError(Exception):
    """A policy file that cannot be used; ``problems`` lists every ``file:line: message``."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        head = f"{count} problem{'s' if count != 1 else ''} in the policy"
        super().__init__(head + ":\n" + "\n".join(self.problems))


def load_spec(path: str | Path, name: str | None = None) -> PolicySpec:
    """Read and check the policy file at ``path`` (``name``: how messages call it, default the path);
    raises ``PolicyError`` listing every problem."""
    name = str(path) if name is None else name
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError([f"{name}: cannot read the policy file: {exc.__class__.__name__}"]) from None
    return parse_spec(text, name)


def parse_spec(text: str, name: str = "policy.yaml") -> PolicySpec:
    """Check policy text (``name`` is used in messages); raises ``PolicyError`` listing every problem."""
    reader = _Reader(name)
    spec = reader.read(text)
    if reader.problems or spec is None:
        raise PolicyError(reader.problems or [f"{name}:1: the policy could not be read"])
    return spec


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.7)
    return f" (did you mean {close[0]}?)" if close else ""


def _who(column: str) -> str:
    """``sales_rep.own`` → ``sales_rep (own)``; ``finance`` → ``finance``."""
    role, _, situation = column.partition(".")
    return f"{role} ({situation})" if situation else role


class _Reader:
    def __init__(self, name: str) -> None:
        self.name = name
        self.found: list[tuple[int, str]] = []  # (line, message)
        self.mentioned: set[str] = set()  # fields given a same_datum entry, good or bad
        self.roles: dict[str, RoleSpec] = {}
        self.columns: list[tuple[str, tuple[Column, ...]] | None] = []  # per position: text, cells it fills
        self.columns_line = 0
        self.column_names: dict[str, int] = {}  # column text → position

    # --- plumbing -------------------------------------------------------------------------------

    def source(self, node: Node) -> Source:
        return Source(self.name, node.start_mark.line + 1)

    def error(self, at: Node | int, message: str) -> None:
        line = at if isinstance(at, int) else at.start_mark.line + 1
        self.found.append((line, f"{self.name}:{line}: {message}"))

    @property
    def problems(self) -> list[str]:
        """Every problem so far, in the order of the file."""
        return [message for _, message in sorted(self.found, key=lambda found: found[0])]

    def mapping(self, node: Node, what: str) -> list[tuple[str, Node, Node]]:
        """The (key, key node, value node) entries of a mapping; reports duplicates and non-mappings."""
        if not isinstance(node, MappingNode):
            self.error(node, f"{what} must be a mapping (key: value)")
            return []
        seen: dict[str, int] = {}
        entries: list[tuple[str, Node, Node]] = []
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self.error(key_node, f"{what}: a key must be a plain name")
                continue
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                self.error(key_node, f'duplicate key "{key}" in {what} (first at line {seen[key]})')
                continue
            seen[key] = line
            entries.append((key, key_node, value_node))
        return entries

    def scalar(self, node: Node, what: str) -> str | None:
        if not isinstance(node, ScalarNode):
            self.error(node, f"{what} must be a single value")
            return None
        return str(node.value)

    def sequence(self, node: Node, what: str) -> list[Node] | None:
        if not isinstance(node, SequenceNode):
            self.error(node, f"{what} must be a list ([a, b, c])")
            return None
        return list(node.value)

    def names(self, node: Node, what: str) -> list[tuple[str, Node]]:
        """A list of plain names, duplicates reported."""
        items = self.sequence(node, what)
        if items is None:
            return []
        seen: dict[str, int] = {}
        out: list[tuple[str, Node]] = []
        for item in items:
            value = self.scalar(item, f"an entry of {what}")
            if value is None:
                continue
            if value in seen:
                self.error(item, f'"{value}" appears twice in {what} (first at line {seen[value]})')
                continue
            seen[value] = item.start_mark.line + 1
            out.append((value, item))
        return out

    def boolean(self, node: Node, what: str) -> bool | None:
        value = self.scalar(node, what)
        if value is None:
            return None
        if value in ("true", "false"):
            return value == "true"
        self.error(node, f'{what} must be true or false, not "{value}"')
        return None

    def keys(
        self, entries: list[tuple[str, Node, Node]], what: str, allowed: Sequence[str]
    ) -> dict[str, Node]:
        """Entries by key; reports keys outside ``allowed``."""
        out: dict[str, Node] = {}
        for key, key_node, value_node in entries:
            if key in allowed:
                out[key] = value_node
            else:
                self.error(key_node, f'unknown key "{key}" in {what} (keys: {", ".join(allowed)})')
        return out

    # --- the file -------------------------------------------------------------------------------

    def read(self, text: str) -> PolicySpec | None:
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else 1
            self.error(line, f"not valid YAML: {exc.problem or exc.context}")
            return None
        except yaml.YAMLError as exc:
            self.error(1, f"not valid YAML: {exc}")
            return None
        if root is None:
            self.error(1, "the policy file is empty")
            return None

        sections: dict[str, Node] = {}
        section_lines: dict[str, int] = {}
        known = REQUIRED_SECTIONS + OPTIONAL_SECTIONS
        for key, key_node, value_node in self.mapping(root, "the policy file"):
            if key not in known:
                self.error(
                    key_node, f'unknown section "{key}"{_suggest(key, known)} (sections: {", ".join(known)})'
                )
                continue
            sections[key] = value_node
            section_lines[key] = key_node.start_mark.line + 1
        for key in REQUIRED_SECTIONS:
            if key not in sections:
                self.error(1, f'missing required section "{key}"')
        if "description" in sections:
            self.scalar(sections["description"], "description")

        version = self.read_version(sections.get("version"))
        self.read_roles(sections.get("roles"))
        identity, identity_source = self.read_identity(sections.get("identity_fields"))
        self.read_columns(sections.get("columns"))
        fields = self.read_fields(sections.get("fields"), identity)
        links = self.read_links(sections.get("same_datum"), identity, fields)
        self.check_coverage(identity, fields, links, section_lines.get("fields", 1))
        hidden = self.read_hidden(sections.get("hidden_items"), section_lines.get("hidden_items", 1))
        writes = self.read_writes(sections.get("writes"))
        max_ttl, access_source = self.read_access(sections.get("access_requests"))
        audit = self.read_audit(sections.get("audit"))

        if self.problems or version is None or max_ttl is None or audit is None:
            return None
        return PolicySpec(
            file=self.name,
            version=version,
            roles=self.roles,
            identity_fields=frozenset(identity),
            identity_source=identity_source,
            columns=tuple(c[0] for c in self.columns if c is not None),
            fields=fields,
            links=links,
            hidden=hidden,
            writes=writes,
            access_max_ttl=max_ttl,
            access_source=access_source,
            audit=audit,
        )

    def read_version(self, node: Node | None) -> int | None:
        if node is None:
            return None
        value = self.scalar(node, "version")
        if value is None:
            return None
        if value != str(FORMAT_VERSION):
            self.error(node, f'version must be {FORMAT_VERSION} (this format), not "{value}"')
            return None
        return FORMAT_VERSION

    # --- roles ----------------------------------------------------------------------------------

    def read_roles(self, node: Node | None) -> None:
        if node is None:
            return
        entries = self.mapping(node, "roles")
        if not entries and isinstance(node, MappingNode):
            self.error(node, "roles: no role is defined")
        rules = ", ".join(sorted(ROW_RULES))
        for name, key_node, value_node in entries:
            if not _ROLE_NAME.fullmatch(name):
                self.error(key_node, f'role name "{name}" may hold only letters, digits, _ and -')
            what = f"role {name}"
            body = self.keys(self.mapping(value_node, what), what, ("rows", "identity_only", "description"))
            rows: set[str] = set()
            if "rows" not in body:
                self.error(key_node, f"role {name} has no rows (which customers it sees: {rules})")
            else:
                rows_node = body["rows"]
                if isinstance(rows_node, SequenceNode):
                    words = [w for w, _ in self.names(rows_node, f"rows of role {name}")]
                else:
                    word = self.scalar(rows_node, f"rows of role {name}")
                    words = [word] if word is not None else []
                for word in words:
                    if word in ROW_RULES:
                        rows |= ROW_RULES[word]
                    else:
                        self.error(
                            rows_node,
                            f'unknown row rule "{word}" for role {name}{_suggest(word, ROW_RULES)} '
                            f"(rules: {rules})",
                        )
            identity_only = False
            if "identity_only" in body:
                identity_only = bool(self.boolean(body["identity_only"], f"identity_only of role {name}"))
            if "description" in body:
                self.scalar(body["description"], f"description of role {name}")
            self.roles[name] = RoleSpec(name, frozenset(rows), identity_only, self.source(key_node))

    def role_named(self, name: str, node: Node, where: str) -> RoleSpec | None:
        role = self.roles.get(name)
        if role is None:
            self.error(node, f'unknown role "{name}" in {where}{_suggest(name, self.roles)}')
        return role

    # --- identity fields and columns ------------------------------------------------------------

    def read_identity(self, node: Node | None) -> tuple[set[str], Source]:
        identity: set[str] = set()
        if node is None:
            return identity, Source(self.name, 1)
        for name, item in self.names(node, "identity_fields"):
            if name not in FIELDS:
                self.error(item, f'unknown field "{name}" in identity_fields{_suggest(name, FIELDS)}')
            elif not is_customer_field(name):
                self.error(item, f"identity_fields: {name} is not a Customer field")
            else:
                identity.add(name)
        return identity, self.source(node)

    def read_columns(self, node: Node | None) -> None:
        if node is None:
            return
        self.columns_line = node.start_mark.line + 1
        covered: dict[str, dict[str, str]] = {}  # role → situation → column text
        for position, (text, item) in enumerate(self.names(node, "columns")):
            role_name, dot, situation = text.partition(".")
            role = self.role_named(role_name, item, f"column {text}")
            self.column_names[text] = position
            if role is None:
                self.columns.append(None)
                continue
            if dot and situation not in SITUATIONS:
                self.error(
                    item,
                    f'unknown situation "{situation}" in column {text}{_suggest(situation, SITUATIONS)} '
                    f"(situations: {', '.join(SITUATIONS)})",
                )
                self.columns.append(None)
                continue
            if dot and situation not in role.situations:
                self.error(
                    item, f"column {text}: role {role_name} never sees customers in situation {situation}"
                )
                self.columns.append(None)
                continue
            wanted = [situation] if dot else sorted(role.situations)
            mine = covered.setdefault(role_name, {})
            for s in wanted:
                if s in mine:
                    self.error(
                        item, f"column {text} overlaps column {mine[s]} (both decide {role_name} for {s})"
                    )
                mine[s] = text
            self.columns.append((text, tuple((role_name, s) for s in wanted)))
        for name, role in self.roles.items():
            missing = sorted(role.situations - covered.get(name, {}).keys())
            if name not in covered:
                self.error(node, f"role {name} has no column in columns")
            elif missing:
                self.error(node, f"role {name} has no column for situation {', '.join(missing)} in columns")

    def row(
        self,
        node: Node,
        what: str,
        cell: Callable[[str, Node, str, RoleSpec], T | None],
    ) -> dict[Column, tuple[T, Source, str]]:
        """A table row (a list in column order, or a mapping by column) → its cells by (role, situation)."""
        placed: list[tuple[int, Node]] = []
        if not self.columns:
            return {}  # no usable columns: reported where they are declared (or missing)
        if isinstance(node, SequenceNode):
            width = len(self.columns)
            if len(node.value) != width:
                self.error(
                    node,
                    f"{what}: {len(node.value)} decisions for {width} columns (columns at line "
                    f"{self.columns_line}); give one for every column, in its order",
                )
                return {}
            placed = list(enumerate(node.value))
        elif isinstance(node, MappingNode):
            given: set[int] = set()
            for key, key_node, value_node in self.mapping(node, what):
                position = self.column_names.get(key)
                if position is None:
                    self.error(key_node, f'{what}: unknown column "{key}"{_suggest(key, self.column_names)}')
                    continue
                given.add(position)
                placed.append((position, value_node))
            for text, position in self.column_names.items():
                if position not in given and self.columns[position] is not None:
                    self.error(node, f"{what} has no decision for column {text}")
        else:
            self.error(node, f"{what} must be a list with one entry per column, or a mapping by column")
            return {}
        out: dict[Column, tuple[T, Source, str]] = {}
        for position, value_node in placed:
            column = self.columns[position] if position < len(self.columns) else None
            if column is None:
                continue  # a bad column, reported once where it is declared
            text, cells = column
            value = self.scalar(value_node, f"{what}, column {text}")
            role = self.roles[cells[0][0]]
            if value is None:
                continue
            parsed = cell(value, value_node, text, role)
            if parsed is None:
                continue
            for column_key in cells:
                out[column_key] = (parsed, self.source(value_node), text)
        return out

    # --- fields ---------------------------------------------------------------------------------

    def read_fields(self, node: Node | None, identity: set[str]) -> dict[str, FieldRule]:
        rules: dict[str, FieldRule] = {}
        if node is None:
            return rules
        for name, key_node, value_node in self.mapping(node, "fields"):
            spec = FIELDS.get(name)
            if spec is None:
                self.error(key_node, f'unknown field "{name}"{_suggest(name, FIELDS)}')
                continue
            if name in identity:
                self.error(
                    key_node, f"field {name} is an identity field (allowed wherever the row is); drop its row"
                )
                continue

            def cell(text: str, at: Node, column: str, role: RoleSpec, field: str = name) -> Decision | None:
                return self.decision(text, at, column, role, field)

            cells = self.row(value_node, f"field {name}", cell)
            rules[name] = FieldRule(
                field=name,
                cells={key: Cell(d, column, src) for key, (d, src, column) in cells.items()},
                source=self.source(key_node),
            )
        for name, rule in rules.items():
            parent = FIELDS[name].parent
            parent_rule = rules.get(parent) if parent is not None else None
            if parent_rule is None:
                continue
            for key, c in rule.cells.items():
                above = parent_rule.cells.get(key)
                if above is not None and c.decision.effect > above.decision.effect:
                    self.error(
                        c.source.line,
                        f"field {name} is {c.decision} for role {_who(c.column)} but its parent {parent} is "
                        f"{above.decision}: a nested field can only narrow its parent",
                    )
        return rules

    def decision(self, text: str, at: Node, column: str, role: RoleSpec, field: str) -> Decision | None:
        who = _who(column)
        decision = parse_decision(text)
        if decision is None:
            kind = text.removeprefix("mask:")
            if kind != text:
                self.error(
                    at,
                    f'unknown mask kind "{kind}" for role {who} field {field}{_suggest(kind, MASKS)} '
                    f"(kinds: {', '.join(MASKS)})",
                )
            else:
                choices = ("allow", "deny", "mask")
                self.error(
                    at,
                    f'unknown decision "{text}" for role {who} field {field}{_suggest(text, choices)} '
                    "(allow, deny or mask:<kind>)",
                )
            return None
        spec = FIELDS[field]
        if decision.effect is Effect.MASK:
            if spec.mask is None:
                shape = "a list" if spec.shape == "list" else "an object" if spec.shape == "object" else "it"
                self.error(
                    at,
                    f"field {field} cannot be masked (role {who}): {shape} has no mask kind; "
                    "use allow or deny",
                )
                return None
            if decision.mask != spec.mask:
                self.error(at, f"{decision} does not fit field {field} (role {who}): use mask:{spec.mask}")
                return None
        if role.identity_only and decision is not DENY:
            self.error(
                at, f"role {role.name} sees identity fields only, but field {field} is {decision} for it"
            )
            return None
        return decision

    def read_links(
        self, node: Node | None, identity: set[str], fields: dict[str, FieldRule]
    ) -> dict[str, LinkRule]:
        links: dict[str, LinkRule] = {}
        if node is None:
            return links
        for name, key_node, value_node in self.mapping(node, "same_datum"):
            target = self.scalar(value_node, f"same_datum {name}")
            spec = FIELDS.get(name)
            if spec is None:
                self.error(key_node, f'unknown field "{name}" in same_datum{_suggest(name, FIELDS)}')
                continue
            self.mentioned.add(name)  # a bad link is reported as such, not again as a missing decision
            if target is None:
                continue
            if is_customer_field(name):
                self.error(key_node, f"same_datum: {name} is a Customer field; give it a row in fields")
                continue
            if name in fields:
                self.error(
                    key_node, f"field {name} has its own decision, so it cannot follow another in same_datum"
                )
                continue
            if spec.shape != "scalar":
                self.error(
                    key_node, f"same_datum: {name} is a {spec.shape}, only a single value can follow a datum"
                )
                continue
            target_spec = FIELDS.get(target)
            if target_spec is None:
                self.error(value_node, f'unknown field "{target}" in same_datum{_suggest(target, FIELDS)}')
                continue
            if not is_customer_field(target):
                self.error(value_node, f"same_datum: {name} must follow a Customer field, not {target}")
                continue
            if spec.mask != target_spec.mask:
                self.error(
                    value_node,
                    f"same_datum: {name} (masked as {spec.mask or 'nothing'}) cannot follow {target} "
                    f"(masked as {target_spec.mask or 'nothing'}): not the same kind of datum",
                )
                continue
            links[name] = LinkRule(name, target, self.source(key_node))
        return links

    def check_coverage(
        self, identity: set[str], fields: dict[str, FieldRule], links: dict[str, LinkRule], line: int
    ) -> None:
        if not self.roles or not self.columns:
            return  # already reported: nothing to cover with
        for name in FIELDS:
            if (
                name not in identity
                and name not in fields
                and name not in links
                and name not in self.mentioned
            ):
                self.error(
                    line,
                    f"field {name} has no decision: give it a row in fields, list it in identity_fields "
                    "or make it follow a field in same_datum",
                )

    # --- list items -----------------------------------------------------------------------------

    def read_hidden(self, node: Node | None, line: int) -> dict[str, HideRule]:
        rules: dict[str, HideRule] = {}
        if node is None:
            return rules
        for name, key_node, value_node in self.mapping(node, "hidden_items"):
            if name not in ITEM_FLAGS:
                self.error(key_node, f'unknown list-item flag "{name}"{_suggest(name, ITEM_FLAGS)}')
                continue

            def cell(text: str, at: Node, column: str, role: RoleSpec, flag: str = name) -> bool | None:
                if text in ("hide", "show"):
                    return text == "hide"
                self.error(
                    at,
                    f'unknown value "{text}" for role {_who(column)} in hidden_items {flag} (hide or show)',
                )
                return None

            cells = self.row(value_node, f"hidden_items {name}", cell)
            rules[name] = HideRule(
                flag=name,
                hide={key: hide for key, (hide, _, _) in cells.items()},
                sources={key: src for key, (_, src, _) in cells.items()},
                source=self.source(key_node),
            )
        for name in ITEM_FLAGS:
            if name not in rules and self.roles and self.columns:
                self.error(
                    line, f"hidden_items: no row for {name} (which roles see such items: hide or show)"
                )
        return rules

    # --- writes ---------------------------------------------------------------------------------

    def read_writes(self, node: Node | None) -> dict[str, WriteRule]:
        rules: dict[str, WriteRule] = {}
        if node is None:
            return rules
        scopes = ", ".join(WRITE_SCOPES)
        for op_name, key_node, value_node in self.mapping(node, "writes"):
            op = OPERATIONS.get(op_name)
            if op is None:
                self.error(
                    key_node,
                    f'unknown write operation "{op_name}"{_suggest(op_name, OPERATIONS)} '
                    f"(operations: {', '.join(OPERATIONS)})",
                )
                continue
            what = f"writes.{op_name}"
            body = self.keys(
                self.mapping(value_node, what), what, ("who", "fields", "not_by_requester", "description")
            )
            grants: list[WriteGrant] = []
            if "who" not in body:
                self.error(
                    key_node, f"{what} has no who (role: scope); write who: {{}} to allow it to nobody"
                )
            else:
                for role_name, role_node, scope_node in self.mapping(body["who"], f"{what}.who"):
                    role = self.role_named(role_name, role_node, what)
                    scope = self.scalar(scope_node, f"{what} scope of {role_name}")
                    if role is None or scope is None:
                        continue
                    if scope not in WRITE_SCOPES:
                        self.error(
                            scope_node,
                            f'unknown scope "{scope}" for role {role_name} in {what}'
                            f"{_suggest(scope, WRITE_SCOPES)} (scopes: {scopes})",
                        )
                        continue
                    if not op.on_customer and scope != "any":
                        self.error(scope_node, f"{what} is not about one customer: its only scope is any")
                        continue
                    grants.append(WriteGrant(role_name, scope, self.source(role_node)))
            allowed_fields: frozenset[str] | None = None
            if "fields" in body:
                if not op.takes_fields:
                    self.error(body["fields"], f"{what} changes no fields, so it takes no fields list")
                else:
                    good: set[str] = set()
                    for name, item in self.names(body["fields"], f"{what}.fields"):
                        if name not in FIELDS or not is_customer_field(name):
                            self.error(
                                item,
                                f'unknown Customer field "{name}" in {what}.fields{_suggest(name, FIELDS)}',
                            )
                        else:
                            good.add(name)
                    allowed_fields = frozenset(good)
            elif op.takes_fields:
                self.error(key_node, f"{what} must list the fields it may change (fields: [...])")
            not_by_requester = False
            if "not_by_requester" in body:
                not_by_requester = bool(self.boolean(body["not_by_requester"], f"{what}.not_by_requester"))
            if "description" in body:
                self.scalar(body["description"], f"{what}.description")
            rules[op_name] = WriteRule(
                op_name, tuple(grants), allowed_fields, not_by_requester, self.source(key_node)
            )
        for op_name in OPERATIONS:
            if op_name not in rules:
                self.error(
                    node,
                    f"writes: no rule for operation {op_name} (write {op_name}: {{who: {{}}}} for nobody)",
                )
        return rules

    # --- access requests and audit --------------------------------------------------------------

    def read_access(self, node: Node | None) -> tuple[timedelta | None, Source]:
        if node is None:
            return None, Source(self.name, 1)
        body = self.keys(self.mapping(node, "access_requests"), "access_requests", ("max_ttl",))
        if "max_ttl" not in body:
            self.error(node, "access_requests needs max_ttl (the longest a grant may last, e.g. 7d)")
            return None, self.source(node)
        value = self.scalar(body["max_ttl"], "access_requests.max_ttl")
        if value is None:
            return None, self.source(node)
        match = _DURATION.fullmatch(value)
        if match is None or int(match.group(1)) == 0:
            self.error(
                body["max_ttl"],
                f'access_requests.max_ttl must be a duration like 7d, 12h or 30m, not "{value}"',
            )
            return None, self.source(body["max_ttl"])
        amount, unit = int(match.group(1)), match.group(2)
        return timedelta(minutes=amount * _MINUTES[unit]), self.source(body["max_ttl"])

    def read_audit(self, node: Node | None) -> AuditRules | None:
        if node is None:
            return None
        keys = ("served_values", "denials", "writes", "fail_closed")
        body = self.keys(self.mapping(node, "audit"), "audit", keys)
        values: dict[str, bool] = {}
        for key in keys:
            if key not in body:
                self.error(node, f"audit needs {key} (true or false)")
                continue
            value = self.boolean(body[key], f"audit.{key}")
            if value is not None:
                values[key] = value
        if len(values) != len(keys):
            return None
        return AuditRules(
            served_values=values["served_values"],
            denials=values["denials"],
            writes=values["writes"],
            fail_closed=values["fail_closed"],
            source=self.source(node),
        )
