"""``WS /graphql`` (graphql-transport-ws): the connection's caller, and one context per operation.

The token comes from the ``connection_init`` payload (``{"Authorization": "Bearer …"}``, what GraphiQL
sends from its Headers tab) or else from the upgrade request's ``Authorization`` header. Without a
valid one the connection is acknowledged and every subscription fails with ``UNAUTHENTICATED`` (the
message says why a token was refused); a subscription stops with ``UNAUTHENTICATED`` when the token
expires. The socket serves subscriptions only: queries and mutations go over HTTP, where rate
limits, the persisted-query rules and the audit apply; the persisted-query allow-list, when on,
applies to subscriptions too.
"""

from __future__ import annotations

import contextvars
import dataclasses
from typing import TYPE_CHECKING, Any, cast

import jwt
import orjson
from graphql import GraphQLError, GraphQLSyntaxError, OperationType, get_operation_ast, parse
from starlette.websockets import WebSocketDisconnect
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import SubscribeMessage
from strawberry.types.unset import UNSET, UnsetType

from schema.context import RequestContext
from schema.errors import BadUserInput, GraphError, format_error
from schema.live import LiveContext, LiveFeed

from ..auth import AuthError

if TYPE_CHECKING:
    from ..app import Gateway

__all__ = ["LiveTransportWSHandler", "TextFrames", "live_context", "on_connect"]


class TextFrames(ASGIWebSocketAdapter):
    """graphql-transport-ws messages are JSON in *text* frames: graphql-ws (Node), gql (Python) and
    GraphiQL refuse binary ones (the HTTP view's encoder gives bytes, which strawberry sends as such)."""

    async def send_json(self, message: Any) -> None:
        try:
            await self.ws.send_text(orjson.dumps(message).decode())
        except WebSocketDisconnect as exc:
            raise WebSocketDisconnected from exc


_OPERATION: contextvars.ContextVar[LiveContext | None] = contextvars.ContextVar(
    "customer_graph_ws_operation", default=None
)


def token_expiry(authorization: str | None) -> float | None:
    """The ``exp`` of an already verified bearer token."""
    if not authorization:
        return None
    token = authorization.partition(" ")[2].strip()
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    exp = claims.get("exp")
    return float(exp) if isinstance(exp, int | float) else None


def live_context(context: RequestContext, feed: LiveFeed, authorization: str | None) -> LiveContext:
    """The WebSocket connection's context, from the one the view made of the upgrade request."""
    values = {f.name: getattr(context, f.name) for f in dataclasses.fields(RequestContext)}
    expires_at = token_expiry(authorization) if context.principal is not None else None
    return LiveContext(**values, feed=feed, expires_at=expires_at)


async def on_connect(gateway: Gateway, context: RequestContext) -> UnsetType | dict[str, object] | None:
    """``connection_init``: a token in its payload replaces the upgrade request's."""
    unset = cast(UnsetType, UNSET)
    if not isinstance(context, LiveContext):
        return unset
    params = context.connection_params or {}
    authorization = params.get("Authorization", params.get("authorization"))
    if isinstance(authorization, str) and authorization.strip():
        try:
            principal = gateway.authenticator.authenticate(authorization.strip())
        except AuthError as exc:
            context.principal, context.guard, context.auth_error = None, None, str(exc)
            context.expires_at = None
        else:
            context.principal, context.auth_error = principal, None
            context.expires_at = token_expiry(authorization.strip()) if principal is not None else None
            gateway.live.refresh(context)
    return unset


class LiveTransportWSHandler(BaseGraphQLTransportWSHandler[RequestContext, None]):
    """strawberry's handler with a context of its own for each operation (a copy of the connection's,
    so concurrent subscriptions on one socket never share loaders or a guard), subscriptions only."""

    _connection_context: RequestContext

    @property  # type: ignore[override]
    def context(self) -> RequestContext:
        return _OPERATION.get() or self._connection_context

    @context.setter
    def context(self, value: RequestContext) -> None:
        self._connection_context = value

    async def run_operation(self, operation: Operation[RequestContext, None]) -> None:
        # The operation's own task: the variable set here is seen by this operation only.
        connection = self._connection_context
        if isinstance(connection, LiveContext):
            _OPERATION.set(connection.for_operation())
        await super().run_operation(operation)

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        if self.connection_acknowledged and message["id"] not in self.operations:
            refusal = self._refusal(message.get("payload"))
            if refusal is not None:
                error = {"id": message["id"], "type": "error", "payload": [refusal]}
                await self.send_message(cast(Any, error))
                return
        await super().handle_subscribe(message)

    def _refusal(self, payload: Any) -> dict[str, Any] | None:
        """The error for an operation this socket does not run; None: let strawberry handle it."""
        if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
            return None
        query: str = payload["query"]
        gateway: Gateway | None = getattr(self.view, "gateway", None)
        try:
            document = parse(query, max_tokens=gateway.settings.max_tokens if gateway else None)
        except GraphQLSyntaxError:
            return None  # strawberry closes the socket (4400), as the protocol says
        name = payload.get("operationName")
        operation = get_operation_ast(document, name if isinstance(name, str) else None)
        if operation is None:
            return None
        error: GraphError | None = None
        if operation.operation is not OperationType.SUBSCRIPTION:
            error = BadUserInput(
                "This socket serves subscriptions; send queries and mutations over HTTP (POST /graphql)."
            )
        elif gateway is not None:
            principal = self._connection_context.principal
            extensions = payload.get("extensions")
            try:
                gateway.persisted.resolve(
                    query,
                    extensions if isinstance(extensions, dict) else None,
                    principal.roles if principal is not None else frozenset(),
                )
            except GraphError as exc:
                error = exc
        if error is None:
            return None
        return format_error(GraphQLError(str(error), original_error=error))
