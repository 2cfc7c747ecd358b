"""Document limits — depth, aliases, tokens and cost — checked before anything runs.

A document is measured once: its depth, its aliases and a *cost plan* are kept per parsed document
(the parser cache hands out the same ``DocumentNode`` for the same text, so the lookup is by
identity, not by hashing the tree). Each request then only evaluates the plan with its variables and
compares the figures with the limits of the caller's roles — nothing that depends on the caller is
ever cached with the document.

Cost model (README "Limits"): every field costs 1; a field with a ``first`` argument multiplies the
cost of its selections by ``first`` (a literal, a variable, the variable's default or the argument's
schema default); a list field without ``first`` multiplies by ``cost_list_size``, except the
``edges``/``nodes`` lists right under a field with ``first`` (a connection), which ``first``
already bounds. ``__typename`` is free; ``__schema``/``__type`` cost 1 and their insides are not
counted (graphql-core's introspection depth rule bounds them).

Tokens are limited while parsing (graphql-core's ``max_lexical_tokens``), so an oversized document
is never built; that parse error is reported as ``QUERY_TOO_COMPLEX`` too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLList,
    GraphQLNonNull,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    StringValueNode,
    VariableNode,
    Visitor,
    visit,
)
from graphql import ExecutionResult as GraphQLExecutionResult
from graphql.type import GraphQLInterfaceType, GraphQLObjectType
from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionContext
from strawberry.types.graphql import OperationType

from schema.documents import DocumentCache
from schema.errors import BadUserInput, GraphError, QueryTooComplex, Unauthenticated

from .settings import Settings

__all__ = ["CostPlan", "LimitsExtension", "Measure", "RequestLimits", "measure_operation"]

_MAX_MULTIPLIER = 2**31  # a multiplier beyond GraphQL's Int range counts as this
_TOKEN_ERROR = re.compile(r"Document contains more than (\d+) tokens")
_UNKNOWN = object()

_PerOperation = dict[str | None, "Measure | None"]


@dataclass(frozen=True, slots=True)
class _Term:
    """A part whose cost is only known per request: ``weight + n × inner`` (a field: weight 1)."""

    variable: str | None  # None: ``factor`` is the size
    factor: int  # the size, or the fallback when the variable is missing or null
    inner: CostPlan
    weight: int = 1  # the field itself; 0 for a fragment's group of terms


@dataclass(frozen=True, slots=True)
class CostPlan:
    """A selection set's cost: ``fixed`` plus the terms that depend on variables."""

    fixed: int
    terms: tuple[_Term, ...] = ()

    def evaluate(self, variables: Mapping[str, Any] | None) -> int:
        if not self.terms:
            return self.fixed
        return self._evaluate(variables or {}, {})

    def _evaluate(self, variables: Mapping[str, Any], seen: dict[int, int]) -> int:
        # Fragments make plans shared; ``seen`` keeps evaluation linear in the distinct plans.
        known = seen.get(id(self))
        if known is not None:
            return known
        total = self.fixed
        for term in self.terms:
            size = term.factor
            if term.variable is not None:
                value = variables.get(term.variable)
                if type(value) is int:  # not bool; a wrong type fails variable coercion anyway
                    size = value
            size = min(max(size, 0), _MAX_MULTIPLIER)
            total += term.weight + size * term.inner._evaluate(variables, seen)
        seen[id(self)] = total
        return total


@dataclass(frozen=True, slots=True)
class Measure:
    """What one operation of a document weighs, independent of the caller."""

    depth: int
    aliases: int
    cost: CostPlan


@dataclass(slots=True)
class _Part:
    depth: int
    aliases: int
    fixed: int
    terms: list[_Term]


class _Measurer:
    def __init__(
        self, schema: GraphQLSchema, document: DocumentNode, variable_defaults: dict[str, int], list_size: int
    ) -> None:
        self.schema = schema
        self.fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        self.variable_defaults = variable_defaults
        self.list_size = list_size
        self.memo: dict[tuple[str, bool], _Part] = {}
        self.visiting: set[str] = set()

    def selections(self, selection_set: SelectionSetNode | None, parent: Any, in_connection: bool) -> _Part:
        part = _Part(depth=0, aliases=0, fixed=0, terms=[])
        if selection_set is None:
            return part
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                self._field(selection, parent, in_connection, part)
            elif isinstance(selection, InlineFragmentNode):
                condition = (
                    self.schema.get_type(selection.type_condition.name.value)
                    if selection.type_condition
                    else parent
                )
                _merge(part, self.selections(selection.selection_set, condition, in_connection))
            elif isinstance(selection, FragmentSpreadNode):
                _merge(part, self._fragment(selection.name.value, in_connection))
        return part

    def _fragment(self, name: str, in_connection: bool) -> _Part:
        key = (name, in_connection)
        known = self.memo.get(key)
        if known is not None:
            return known
        fragment = self.fragments.get(name)
        if fragment is None or name in self.visiting:  # unknown or cyclic: validation reports it
            return _Part(depth=0, aliases=0, fixed=0, terms=[])
        self.visiting.add(name)
        try:
            condition = self.schema.get_type(fragment.type_condition.name.value)
            result = self.selections(fragment.selection_set, condition, in_connection)
        finally:
            self.visiting.discard(name)
        if len(result.terms) > 1:
            # One shared term per spread, so fragments spreading fragments cannot blow the plan up.
            group = _Term(None, 1, CostPlan(0, tuple(result.terms)), weight=0)
            result = _Part(depth=result.depth, aliases=result.aliases, fixed=result.fixed, terms=[group])
        self.memo[key] = result
        return result

    def _field(self, node: FieldNode, parent: Any, in_connection: bool, part: _Part) -> None:
        name = node.name.value
        if node.alias is not None:
            part.aliases += 1
        if name.startswith("__"):
            part.depth = max(part.depth, 1)
            if name != "__typename":
                part.fixed += 1
            return
        fields = (
            getattr(parent, "fields", None)
            if isinstance(parent, GraphQLObjectType | GraphQLInterfaceType)
            else None
        )
        definition = fields.get(name) if fields else None
        field_type: Any = definition.type if definition is not None else None
        if isinstance(field_type, GraphQLNonNull):
            field_type = field_type.of_type
        is_list = isinstance(field_type, GraphQLList)
        named: Any = field_type
        while isinstance(named, GraphQLList | GraphQLNonNull):
            named = named.of_type

        variable: str | None = None
        has_first = definition is not None and "first" in definition.args
        if has_first:
            assert definition is not None
            factor, variable = self._first(node, definition.args["first"].default_value)
        elif is_list:
            factor = 1 if in_connection else self.list_size
        else:
            factor = 1
        inner = self.selections(node.selection_set, named, has_first and not is_list)

        part.depth = max(part.depth, 1 + inner.depth)
        part.aliases += inner.aliases
        if variable is None and not inner.terms:
            part.fixed += 1 + factor * inner.fixed
        else:
            part.terms.append(_Term(variable, factor, CostPlan(inner.fixed, tuple(inner.terms))))

    def _first(self, node: FieldNode, schema_default: Any) -> tuple[int, str | None]:
        fallback = schema_default if type(schema_default) is int else self.list_size
        for argument in node.arguments or ():
            if argument.name.value != "first":
                continue
            value = argument.value
            if isinstance(value, IntValueNode):
                return (_int_literal(value.value), None)
            if isinstance(value, VariableNode):
                variable = value.name.value
                return (self.variable_defaults.get(variable, fallback), variable)
            return (fallback, None)  # null: the resolver's default applies
        return (fallback, None)


def _int_literal(text: str) -> int:
    if len(text.lstrip("-")) > 10:  # far beyond Int; validation refuses it anyway
        return 0 if text.startswith("-") else _MAX_MULTIPLIER
    return int(text)


def _merge(into: _Part, other: _Part) -> None:
    into.depth = max(into.depth, other.depth)
    into.aliases += other.aliases
    into.fixed += other.fixed
    into.terms.extend(other.terms)


def _select_operation(document: DocumentNode, operation_name: str | None) -> OperationDefinitionNode | None:
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is None:
        return operations[0] if len(operations) == 1 else None
    for operation in operations:
        if operation.name is not None and operation.name.value == operation_name:
            return operation
    return None


def measure_operation(
    schema: GraphQLSchema, document: DocumentNode, operation_name: str | None, *, list_size: int = 10
) -> Measure | None:
    """The operation's depth, aliases and cost plan; ``None`` when the document names no such operation."""
    operation = _select_operation(document, operation_name)
    if operation is None:
        return None
    defaults: dict[str, int] = {}
    for definition in operation.variable_definitions or ():
        default = definition.default_value
        if isinstance(default, IntValueNode):
            defaults[definition.variable.name.value] = _int_literal(default.value)
    root = {
        "query": schema.query_type,
        "mutation": schema.mutation_type,
        "subscription": schema.subscription_type,
    }[operation.operation.value]
    part = _Measurer(schema, document, defaults, list_size).selections(operation.selection_set, root, False)
    return Measure(depth=part.depth, aliases=part.aliases, cost=CostPlan(part.fixed, tuple(part.terms)))


INTROSPECTION_TOKENS = 400  # GraphiQL's introspection query has about 190


def _introspection_only(document: DocumentNode) -> bool:
    """Every operation selects only ``__schema``, ``__type`` and ``__typename`` at its root."""
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            for selection in definition.selection_set.selections:
                if not (isinstance(selection, FieldNode) and selection.name.value.startswith("__")):
                    return False
    return True


def longest_string(document: DocumentNode, limit: int) -> int:
    """The longest string literal in the document, once the document's text is longer than ``limit``
    (a shorter document cannot hold a longer string); else 0."""
    source = document.loc.source.body if document.loc is not None else ""
    if len(source) <= limit:
        return 0
    longest = 0

    class Strings(Visitor):
        def enter_string_value(self, node: StringValueNode, *_: Any) -> None:
            nonlocal longest
            longest = max(longest, len(node.value))

    visit(document, Strings())
    return longest


def longest_variable(value: Any, limit: int, path: str = "") -> str | None:
    """The path of the first string longer than ``limit`` in a request's variables, or None."""
    if isinstance(value, str):
        return path if len(value) > limit else None
    if isinstance(value, dict):
        for key, inner in value.items():
            found = longest_variable(inner, limit, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found = longest_variable(inner, limit, f"{path}[{index}]")
            if found is not None:
                return found
    return None


class _OverBudget(Exception):
    pass


def selection_weight(document: DocumentNode, budget: int) -> int:
    """The operation's selections with fragments expanded, ``n`` fields sharing a response name in a
    selection set (their sub-selections merged) weighing ``n²``; past ``budget`` it returns
    ``budget + 1`` at once. Linear in the budget: every field visited adds at least 1."""
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    total = 0

    def collect(sets: list[SelectionSetNode], groups: dict[str, list[SelectionSetNode | None]]) -> None:
        nonlocal total
        spread: set[str] = set()
        pending = list(sets)
        while pending:
            selection_set = pending.pop()
            for selection in selection_set.selections:
                if isinstance(selection, FieldNode):
                    key = (selection.alias or selection.name).value
                    groups.setdefault(key, []).append(selection.selection_set)
                    total += 1
                    if total > budget:
                        raise _OverBudget
                elif isinstance(selection, InlineFragmentNode):
                    pending.append(selection.selection_set)
                elif isinstance(selection, FragmentSpreadNode):
                    name = selection.name.value
                    fragment = fragments.get(name)
                    if fragment is not None and name not in spread:  # one spread twice adds nothing
                        spread.add(name)
                        pending.append(fragment.selection_set)

    def weigh(sets: list[SelectionSetNode], depth: int) -> None:
        nonlocal total
        if depth > 64:  # deeper than any depth limit: validation and the depth limit refuse it
            return
        groups: dict[str, list[SelectionSetNode | None]] = {}
        collect(sets, groups)
        for subs in groups.values():
            total += len(subs) * (len(subs) - 1)  # with the n counted while collecting: n²
            if total > budget:
                raise _OverBudget
        for subs in groups.values():
            inner = [s for s in subs if s is not None]
            if inner:
                weigh(inner, depth + 1)

    try:
        weigh([d.selection_set for d in document.definitions if isinstance(d, OperationDefinitionNode)], 0)
    except _OverBudget:
        return budget + 1
    return total


class RequestLimits:
    """The configured limits; measures are kept with the cached document (``schema/documents.py``)."""

    def __init__(
        self,
        settings: Settings,
        documents: DocumentCache | None = None,
        on_refusal: Callable[[str], None] | None = None,
    ) -> None:
        self.on_refusal = on_refusal or (lambda limit: None)  # counts refusals by limit (/metrics)
        self.max_depth = settings.max_depth
        self.max_aliases = settings.max_aliases
        self.max_tokens = settings.max_tokens
        self.max_selections = settings.max_selections
        self.max_string_length = settings.max_string_length
        self.anonymous_max_tokens = settings.anonymous_max_tokens
        self.anonymous_max_selections = settings.anonymous_max_selections
        # With introspection on (development), a caller without a token may load the schema (GraphiQL
        # does before a token is pasted): its documents may be as long as an introspection query.
        self.introspection = settings.introspection
        self.anonymous_parse_tokens = (
            max(self.anonymous_max_tokens, INTROSPECTION_TOKENS)
            if settings.introspection
            else self.anonymous_max_tokens
        )
        self.max_cost = settings.max_cost
        self.cost_per_role = dict(settings.max_cost_per_role)
        self.list_size = settings.cost_list_size
        self.documents = documents if documents is not None else DocumentCache(settings.document_cache_bytes)
        self._role_limits: dict[frozenset[str], int] = {}

    def cost_limit(self, roles: frozenset[str]) -> int:
        """The most generous of the caller's roles; ``max_cost`` for a role without its own limit."""
        limit = self._role_limits.get(roles)
        if limit is None:
            limit = max((self.cost_per_role.get(r, self.max_cost) for r in roles), default=self.max_cost)
            if len(self._role_limits) < 1024:
                self._role_limits[roles] = limit
        return limit

    def measure(
        self, schema: GraphQLSchema, document: DocumentNode, operation_name: str | None
    ) -> Measure | None:
        memo = self.documents.memo(document)
        per_operation: _PerOperation | None = None
        if memo is not None:
            per_operation = memo.get("measures")  # type: ignore[assignment]
            if per_operation is None:
                per_operation = memo["measures"] = {}
        if per_operation is None:  # not cached: measured for this request only
            return measure_operation(schema, document, operation_name, list_size=self.list_size)
        found = per_operation.get(operation_name, _UNKNOWN)
        if found is _UNKNOWN:
            found = measure_operation(schema, document, operation_name, list_size=self.list_size)
            per_operation[operation_name] = found
        return found  # type: ignore[return-value]

    def precheck(self, document: DocumentNode, context: ExecutionContext) -> GraphQLError | None:
        """Before validation: the document's selections, fragments expanded, with ``n`` fields of one
        response name in one selection set weighing ``n²`` (what checking that they merge costs).
        Counting stops at the budget, so the check itself is bounded."""
        longest = longest_string(document, self.max_string_length)
        if longest > self.max_string_length:
            self.on_refusal("string")
            too_long = BadUserInput(
                f"The document has a string of more than {self.max_string_length} characters, the limit."
            )
            return GraphQLError(str(too_long), original_error=too_long)
        anonymous = getattr(context.context, "principal", None) is None
        budget = self.max_selections
        if anonymous and not (self.introspection and _introspection_only(document)):
            budget = self.anonymous_max_selections
        weight = selection_weight(document, budget)
        if weight <= budget:
            return None
        self.on_refusal(
            "anonymous" if anonymous and budget == self.anonymous_max_selections else "selections"
        )
        if anonymous:
            refusal: GraphError = Unauthenticated(
                f"Without a valid token a document may select at most {budget} fields "
                "(e.g. { __typename }). Send 'Authorization: Bearer <token>'."
            )
        else:
            refusal = QueryTooComplex(
                f"Query selects more than {budget} fields (fields repeated under one name count "
                "their square), the limit.",
                limit="selections",
                max=budget,
            )
        return GraphQLError(str(refusal), original_error=refusal)

    def check(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        operation_name: str | None,
        variables: Mapping[str, Any] | None,
        roles: frozenset[str],
    ) -> QueryTooComplex | None:
        """The first limit the operation exceeds, as the error to report; ``None`` when within all."""
        refusal = self._check(schema, document, operation_name, variables, roles)
        if refusal is not None:
            self.on_refusal(str(refusal.extensions.get("limit", "other")))
        return refusal

    def _check(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        operation_name: str | None,
        variables: Mapping[str, Any] | None,
        roles: frozenset[str],
    ) -> QueryTooComplex | None:
        measure = self.measure(schema, document, operation_name)
        if measure is None:
            return None  # no such operation: execution reports it
        if measure.depth > self.max_depth:
            return QueryTooComplex(
                f"Query depth {measure.depth} exceeds the limit {self.max_depth}.",
                limit="depth",
                value=measure.depth,
                max=self.max_depth,
            )
        if measure.aliases > self.max_aliases:
            return QueryTooComplex(
                f"Query has {measure.aliases} aliases, more than the limit {self.max_aliases}.",
                limit="aliases",
                value=measure.aliases,
                max=self.max_aliases,
            )
        cost = measure.cost.evaluate(variables)
        limit = self.cost_limit(roles)
        if cost > limit:
            return QueryTooComplex(
                f"Query cost {cost} exceeds the limit {limit} for your roles.",
                limit="cost",
                value=cost,
                max=limit,
            )
        return None

    def mark_token_errors(self, errors: list[GraphQLError] | None, *, anonymous: bool = False) -> None:
        """Report the parser's token-limit error as QUERY_TOO_COMPLEX, naming the limit (for a caller
        without a valid token: UNAUTHENTICATED, saying what a token allows)."""
        for error in errors or ():
            if error.original_error is None and error.path is None and _TOKEN_ERROR.search(error.message):
                self.on_refusal("anonymous" if anonymous else "tokens")
                refusal: GraphError
                if anonymous:
                    refusal = Unauthenticated(
                        f"Without a valid token a document may have at most {self.anonymous_parse_tokens} "
                        "tokens (e.g. { __typename }). Send 'Authorization: Bearer <token>'."
                    )
                else:
                    refusal = QueryTooComplex(
                        f"Query has more than {self.max_tokens} tokens, the limit.",
                        limit="tokens",
                        max=self.max_tokens,
                    )
                error.message = str(refusal)
                error.original_error = refusal


class LimitsExtension(SchemaExtension):
    """Per request: the token limit for the parser, then the document's limits before execution."""

    def __init__(self, limits: RequestLimits) -> None:
        self.limits = limits

    def on_operation(self) -> Iterator[None]:
        # Part of the parser cache's key, so documents parsed under this limit are cached as usual.
        anonymous = getattr(self.execution_context.context, "principal", None) is None
        tokens = self.limits.anonymous_parse_tokens if anonymous else self.limits.max_tokens
        self.execution_context.parse_options["max_lexical_tokens"] = tokens  # type: ignore[typeddict-unknown-key]
        yield

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        if document is not None and context.result is None:
            refusal = self._refusal(context.schema._schema, document)
            if refusal is not None:
                error = GraphQLError(str(refusal), original_error=refusal)
                if _is_subscription(context):
                    raise error  # no result to preset: strawberry reports what on_execute raises
                context.result = GraphQLExecutionResult(data=None, errors=[error])
        yield

    def _refusal(self, schema: GraphQLSchema, document: DocumentNode) -> GraphError | None:
        context = self.execution_context
        # The name the request gave (strawberry's ``operation_name`` falls back to the first operation).
        operation_name: str | None = getattr(context, "_provided_operation_name", None)
        if operation_name is None and _operation_count(document) > 1:
            # The GraphQL spec's GetOperation: several operations and no name is a request error.
            return BadUserInput("The document has several operations; name one in `operationName`.")
        principal = getattr(context.context, "principal", None)
        roles: frozenset[str] = principal.roles if principal is not None else frozenset()
        return self.limits.check(schema, document, operation_name, context.variables, roles)


def _is_subscription(context: ExecutionContext) -> bool:
    try:
        return context.operation_type is OperationType.SUBSCRIPTION
    except Exception:  # no such operation: graphql-core reports it
        return False


def _operation_count(document: DocumentNode) -> int:
    return sum(1 for d in document.definitions if isinstance(d, OperationDefinitionNode))
