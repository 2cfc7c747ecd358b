"""Resolver fields without arguments, called straight from graphql-core.

Strawberry already resolves a plain attribute field (no resolver) with a bare ``getattr``. A field
with a resolver but no arguments — every policy-guarded scalar (``Customer.email``,
``Payment.cardLast4``) and most relations (``Customer.owner``, ``Customer.satisfaction``) — still goes
through its general wrapper on every execution: argument conversion, the field-extension chain, and
for a coroutine one more awaiting layer. None of that does anything for such a field, and in a page of
50 customers it runs thousands of times. ``direct_resolvers()`` installs, for exactly those fields, a
resolver that calls the method with the source and a ``strawberry.Info`` and returns what it returns
(a coroutine is awaited by graphql-core itself). Fields with arguments, field extensions (permission
classes are extensions), or ``root``/``parent`` parameters keep strawberry's wrapper.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import strawberry
from graphql import GraphQLObjectType, GraphQLResolveInfo
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types.field import StrawberryField

Resolve = Callable[[Any, GraphQLResolveInfo[Any]], Any]


def direct_resolvers(schema: strawberry.Schema) -> int:
    """Replace the wrapper of every eligible field of the schema's non-root object types; returns how
    many fields now resolve directly."""
    graphql_schema = schema._schema
    roots = {graphql_schema.query_type, graphql_schema.mutation_type, graphql_schema.subscription_type}
    info_class = schema.config.info_class
    replaced = 0
    for graphql_type in graphql_schema.type_map.values():
        if not isinstance(graphql_type, GraphQLObjectType) or graphql_type in roots:
            continue
        for graphql_field in graphql_type.fields.values():
            field = graphql_field.extensions.get(GraphQLCoreConverter.DEFINITION_BACKREF)
            if isinstance(field, StrawberryField):
                resolve = _direct(field, info_class)
                if resolve is not None:
                    graphql_field.resolve = resolve
                    replaced += 1
    return replaced


def _direct(field: StrawberryField, info_class: type[strawberry.Info]) -> Resolve | None:
    resolver = field.base_resolver
    if resolver is None or field.extensions or field.arguments or resolver.self_parameter is None:
        return None
    if resolver.root_parameter is not None or resolver.parent_parameter is not None:
        return None
    function: Callable[..., Any] = resolver.wrapped_func  # type: ignore[assignment]
    if resolver.info_parameter is None:

        def resolve_without_info(source: Any, info: GraphQLResolveInfo[Any]) -> Any:
            return function(source)

        return resolve_without_info
    info_name = resolver.info_parameter.name

    def resolve(source: Any, info: GraphQLResolveInfo[Any]) -> Any:
        return function(source, **{info_name: info_class(_raw_info=info, _field=field)})

    return resolve
