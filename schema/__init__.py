"""The graph's schema (graph.md): types, root fields, and the schema object the gateway serves."""

from __future__ import annotations

import logging
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import ParserCache, ValidationCache
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from .customer import Customer
from .errors import is_internal
from .mutations import Mutation
from .query import Query
from .scalars import SCALAR_MAP

log = logging.getLogger("customer_graph.schema")

__all__ = ["GraphSchema", "build_schema"]


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


def build_schema(*, document_cache_size: int = 1000, extensions: list[Any] | None = None) -> GraphSchema:
    """The schema, with parsed and validated documents cached across requests."""
    return GraphSchema(
        query=Query,
        mutation=Mutation,
        types=[Customer],
        config=StrawberryConfig(scalar_map=SCALAR_MAP),
        extensions=[
            lambda: ParserCache(maxsize=document_cache_size),
            lambda: ValidationCache(maxsize=document_cache_size),
            *(extensions or []),
        ],
    )
