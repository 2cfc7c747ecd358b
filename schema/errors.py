"""The graph's error vocabulary (``extensions.code`` in graph.md) and how any error is shown.

Resolvers raise these; ``format_error`` turns whatever reached the response into the documented
shape. Messages are written here or by the raiser and never carry values, secrets or URLs.
"""

from __future__ import annotations

from typing import Any

from graphql import GraphQLError

from connectors.errors import UpstreamError, UpstreamUnavailable
from policies.guard import Denied


class GraphError(Exception):
    code = "INTERNAL"

    def __init__(self, message: str, **extensions: Any) -> None:
        super().__init__(message)
        self.extensions = extensions


class Unauthenticated(GraphError):
    code = "UNAUTHENTICATED"


class Forbidden(GraphError):
    code = "FORBIDDEN"


class NotFound(GraphError):
    code = "NOT_FOUND"


class BadUserInput(GraphError):
    code = "BAD_USER_INPUT"


class Conflict(GraphError):
    code = "CONFLICT"


class QueryTooComplex(GraphError):
    code = "QUERY_TOO_COMPLEX"


class RateLimited(GraphError):
    code = "RATE_LIMITED"


INTERNAL_MESSAGE = "Internal error. The request id in the response headers identifies it in the logs."


def format_error(error: GraphQLError) -> dict[str, Any]:
    """The documented error shape: message, locations, path and ``extensions.code``."""
    original = error.original_error
    extensions: dict[str, Any]
    if original is None or isinstance(original, GraphQLError):
        # Syntax, validation and variable-coercion errors: the caller's document or input.
        message = error.message
        extensions = {"code": (error.extensions or {}).get("code", "BAD_USER_INPUT")}
    elif isinstance(original, GraphError):
        message = str(original)
        extensions = {"code": original.code, **original.extensions}
    elif isinstance(original, Denied):
        message = str(original)
        extensions = {"code": "FORBIDDEN"}
    elif isinstance(original, UpstreamUnavailable):
        message = f"The {original.system.value} system is unavailable ({original.kind})."
        extensions = {"code": "UPSTREAM_UNAVAILABLE", "system": original.system.value}
    elif isinstance(original, UpstreamError):
        message = f"The {original.system.value} system could not answer this."
        extensions = {"code": "UPSTREAM_UNAVAILABLE", "system": original.system.value}
    else:
        message = INTERNAL_MESSAGE
        extensions = {"code": "INTERNAL"}
    formatted: dict[str, Any] = {"message": message}
    if error.locations:
        formatted["locations"] = [{"line": loc.line, "column": loc.column} for loc in error.locations]
    if error.path is not None:
        formatted["path"] = error.path
    formatted["extensions"] = extensions
    return formatted


def is_internal(error: GraphQLError) -> bool:
    original = error.original_error
    return original is not None and not isinstance(
        original, GraphError | UpstreamError | GraphQLError | Denied
    )


def path_pattern(path: list[str | int] | None) -> tuple[str, ...]:
    """A path without list indices: ``customers.edges.node.payments`` for every customer's payments."""
    return tuple(part for part in path or () if isinstance(part, str))


def formatted_errors(errors: list[GraphQLError]) -> list[dict[str, Any]]:
    """Every error in the documented shape; a FORBIDDEN once per field path pattern (policy.md)."""
    out: list[dict[str, Any]] = []
    forbidden: set[tuple[str, ...]] = set()
    for error in errors:
        formatted = format_error(error)
        if formatted["extensions"]["code"] == "FORBIDDEN":
            pattern = path_pattern(error.path)
            if pattern in forbidden:
                continue
            forbidden.add(pattern)
        out.append(formatted)
    return out
