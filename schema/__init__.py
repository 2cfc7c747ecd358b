"""The graph's schema (graph.md): types, root fields, and the schema object the gateway serves."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Awaitable, Iterator, Sequence
from typing import Any

import strawberry
from graphql import GraphQLError, GraphQLResolveInfoHelpers
from strawberry.extensions import SchemaExtension
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext

from .access import AccessMutation, AccessQuery
from .context import RequestContext
from .customer import Customer
from .documents import CachedDocuments, DocumentCache, Precheck
from .errors import is_internal
from .fastpath import direct_resolvers
from .identity import IdentityMutation, IdentityQuery
from .live import AuditStream, StreamErrors, Subscription
from .mutations import Mutation
from .pool import PoolMutation, PoolQuery
from .privacy import ErasureMutation, ErasureQuery, PrivacyMutation, PrivacyQuery
from .query import Query
from .scalars import SCALAR_MAP

log = logging.getLogger("customer_graph.schema")

__all__ = ["DocumentCache", "Execution", "GraphSchema", "build_schema"]


class GraphSchema(strawberry.Schema):
    """Strawberry's schema with logging that names error kinds and paths, never values."""

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        for error in errors:
            if is_internal(error):
                log.error(
                    "resolver failed",
                    exc_info=error.original_error,
                    extra={"path": error.path, "error_type": type(error.original_error).__name__},
                )


class Execution(StrawberryGraphQLCoreExecutionContext):
    """graphql-core's execution context, minus its one reference cycle: the resolve-info helpers
    held bound methods of the context, so every request's execution state (the context, its
    loaders, every field's details: ~340 objects an S1 request) waited for the cyclic garbage
    collector. They reach it through a weak reference instead, and a request is freed by
    refcounting the moment it ends."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        this = weakref.ref(self)

        def gather(values: Sequence[Awaitable[Any]]) -> Awaitable[list[Any]]:
            return _alive(this).gather_async_work(values)

        def track(values: Sequence[Any]) -> None:
            _alive(this).track_async_work(values)

        self.async_helpers = GraphQLResolveInfoHelpers(gather=gather, track=track)


def _alive(ref: weakref.ref[Execution]) -> Execution:
    execution = ref()
    assert execution is not None, "resolve-info helpers used after their execution ended"
    return execution


class OperationFacts(SchemaExtension):
    """Once per operation: its name and type onto the request context (for the audit trail)."""

    def on_execute(self) -> Iterator[None]:
        execution = self.execution_context
        context = execution.context
        if isinstance(context, RequestContext):
            context.operation_name = execution.operation_name
            context.operation_type = execution.operation_type.value
        yield


def build_schema(
    *,
    document_cache: DocumentCache | None = None,
    precheck: Precheck | None = None,
    extensions: list[Any] | None = None,
) -> GraphSchema:
    """The schema, with valid documents cached across requests (``schema/documents.py``) and
    ``precheck`` bounding a new document's work before it is validated."""
    cache = document_cache if document_cache is not None else DocumentCache(1 << 20)
    schema = GraphSchema(
        query=merge_types(
            "Query", (Query, PoolQuery, AccessQuery, IdentityQuery, PrivacyQuery, ErasureQuery)
        ),
        mutation=merge_types(
            "Mutation",
            (Mutation, PoolMutation, AccessMutation, IdentityMutation, PrivacyMutation, ErasureMutation),
        ),
        subscription=Subscription,
        types=[Customer],
        config=StrawberryConfig(scalar_map=SCALAR_MAP),
        execution_context_class=Execution,
        extensions=[
            lambda: CachedDocuments(cache, precheck),
            AuditStream,  # WebSocket results: audited before they are sent
            StreamErrors,  # WebSocket results: errors in the documented shape
            OperationFacts,
            *(extensions or []),
        ],
    )
    direct_resolvers(schema)
    return schema
