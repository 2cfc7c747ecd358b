"""Resolver fields without arguments (or with plain scalar ones), called straight from graphql-core.

Strawberry already resolves a plain attribute field (no resolver) with a bare ``getattr``. A field
with a resolver but no arguments — every policy-guarded scalar (``Customer.email``,
``Payment.cardLast4``) and most relations (``Customer.owner``, ``Customer.satisfaction``) — still goes
through its general wrapper on every execution: argument conversion, the field-extension chain, and
for a coroutine one more awaiting layer. None of that does anything for such a field, and in a page of
50 customers it runs thousands of times. ``direct_resolvers()`` installs, for exactly those fields, a
resolver that calls the method with the source and a ``strawberry.Info`` and returns what it returns
(an awaitable is awaited by graphql-core itself). Arguments are allowed when each is a plain
``int``/``str``/``float``/``bool`` (optional or not): graphql-core has already coerced them to exactly
those Python values, so they are only renamed to the method's parameter names (``orders(first: 5)``).
Fields with other arguments (enums, inputs: strawberry converts those), field extensions (permission
classes are extensions), or ``root``/``parent`` parameters keep strawberry's wrapper.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import strawberry
from graphql import GraphQLObjectType, GraphQLResolveInfo
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types.arguments import StrawberryArgument
from strawberry.types.base import StrawberryOptional
from strawberry.types.field import StrawberryField

Resolve = Callable[..., Any]


def direct_resolvers(schema: strawberry.Schema) -> int:
    """Replace the wrapper of every eligible field of the schema's non-root object types; returns how
    many fields now resolve directly."""
    graphql_schema = schema._schema
    roots = {graphql_schema.query_type, graphql_schema.mutation_type, graphql_schema.subscription_type}
    info_class = schema.config.info_class
    names = schema.config.name_converter
    replaced = 0
    for graphql_type in graphql_schema.type_map.values():
        if not isinstance(graphql_type, GraphQLObjectType) or graphql_type in roots:
            continue
        for graphql_field in graphql_type.fields.values():
            field = graphql_field.extensions.get(GraphQLCoreConverter.DEFINITION_BACKREF)
            if isinstance(field, StrawberryField):
                resolve = _direct(
                    field, info_class, {names.from_argument(a): a.python_name for a in field.arguments}
                )
                if resolve is not None:
                    graphql_field.resolve = resolve
                    replaced += 1
    return replaced


_PLAIN = (int, str, float, bool)


def _plain(argument: StrawberryArgument) -> bool:
    kind = argument.type
    if isinstance(kind, StrawberryOptional):
        kind = kind.of_type
    return kind in _PLAIN


def _direct(
    field: StrawberryField, info_class: type[strawberry.Info], renames: dict[str, str]
) -> Resolve | None:
    resolver = field.base_resolver
    if resolver is None or field.extensions or resolver.self_parameter is None:
        return None
    if resolver.root_parameter is not None or resolver.parent_parameter is not None:
        return None
    if not all(_plain(argument) for argument in field.arguments):
        return None
    function: Callable[..., Any] = resolver.wrapped_func  # type: ignore[assignment]
    info_name = resolver.info_parameter.name if resolver.info_parameter is not None else None
    same_names = all(graphql == python for graphql, python in renames.items())

    def resolve(source: Any, info: GraphQLResolveInfo[Any], **arguments: Any) -> Any:
        if not same_names:
            arguments = {renames[name]: value for name, value in arguments.items()}
        if info_name is not None:
            arguments[info_name] = info_class(_raw_info=info, _field=field)
        return function(source, **arguments)

    return resolve
