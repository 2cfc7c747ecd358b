"""GraphQL over HTTP, strictly: what a request may look like, and what every answer looks like.

The view answers ``POST /graphql`` (``application/json`` bodies) and ``GET /graphql`` (queries in the
URL; a browser without a query gets GraphiQL), in ``application/json`` or
``application/graphql-response+json`` as the ``Accept`` header asks (406 when it accepts neither):

* a malformed request — body too large (413), not JSON or not UTF-8 (400), a batch (400), wrong
  content type (415), wrong method (405), parameters of the wrong type (400) — is refused before
  anything runs, with a body in the documented error shape (``extensions.code``), never a stack trace;
* a GraphQL request error (syntax, validation, variable coercion, limits, unknown operation) has no
  ``data`` entry and is 400 under ``application/graphql-response+json`` (403 for the allow-list),
  200 under ``application/json``; once execution started the answer is 200 with ``data``;
* ``RATE_LIMITED`` is 429 with ``Retry-After`` (and ``extensions.retryAfter``) under both media types:
  a throttle is the HTTP layer's business, and retrying clients and proxies read the status;
* a mutation over GET is 405 with ``Allow: POST``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from graphql import GraphQLError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from strawberry.asgi import GraphQL
from strawberry.exceptions import MissingQueryError
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType

from schema.context import RequestContext
from schema.errors import INTERNAL_MESSAGE, BadUserInput, GraphError, RateLimited, formatted_errors

from .body import BodyTooLarge, BodyTooSlow, read_body
from .limits import longest_variable
from .persisted import PersistedQueryNotFound, PersistedQueryNotSupported

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from .app import Gateway

log = logging.getLogger("customer_graph.http")

JSON = "application/json"
GRAPHQL_RESPONSE = "application/graphql-response+json"
_UTF8 = frozenset({"utf-8", "utf8"})
_GET_OPERATIONS = frozenset({OperationType.QUERY})
_POST_OPERATIONS = frozenset({OperationType.QUERY, OperationType.MUTATION})

__all__ = ["GRAPHQL_RESPONSE", "JSON", "GraphQLOverHTTP", "RequestError", "negotiate"]


class RequestError(Exception):
    """A request answered with one error instead of running: the error and the statuses per media type."""

    def __init__(
        self,
        error: GraphError,
        *,
        status: int = 400,
        json_status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(str(error))
        self.error = error
        self.status = status  # under application/graphql-response+json
        self.json_status = status if json_status is None else json_status  # under application/json
        self.headers = dict(headers or {})

    @classmethod
    def malformed(cls, message: str, status: int = 400, **headers: str) -> RequestError:
        """Not a well-formed GraphQL-over-HTTP request: the same status under both media types."""
        return cls(BadUserInput(message), status=status, headers=dict(headers))

    @classmethod
    def graphql(cls, error: GraphError, status: int = 400) -> RequestError:
        """A well-formed request that GraphQL refuses: 200 under application/json (the spec's SHOULD)."""
        return cls(error, status=status, json_status=200)


def negotiate(accept: str | None) -> str | None:
    """The media type to answer in, by the ``Accept`` header's preferences; ``None``: none acceptable."""
    if accept is None or not accept.strip():
        return JSON
    best: str | None = None
    best_q = 0.0
    for part in accept.split(","):
        media, _, params = part.partition(";")
        media = media.strip().lower()
        if media == GRAPHQL_RESPONSE:
            candidate = GRAPHQL_RESPONSE
        elif media in (JSON, "application/*", "*/*"):
            candidate = JSON
        else:
            continue
        q = 1.0
        acceptable = True
        for param in params.split(";"):
            key, _, value = param.partition("=")
            key = key.strip().lower()
            value = value.strip().strip('"').lower()
            if key == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
            elif key == "charset" and value not in _UTF8:
                acceptable = False
        if acceptable and q > best_q and q <= 1.0:
            best, best_q = candidate, q
    return best


def _content_type(header: str) -> tuple[str, dict[str, str]]:
    media, *params = header.split(";")
    parsed: dict[str, str] = {}
    for param in params:
        key, _, value = param.partition("=")
        parsed[key.strip().lower()] = value.strip().strip('"').lower()
    return media.strip().lower(), parsed


@dataclass(slots=True)
class _Operation:
    query: str | None
    operation_name: str | None
    variables: dict[str, Any] | None
    extensions: dict[str, Any] | None


def _operation(params: Mapping[str, Any]) -> _Operation:
    query = params.get("query")
    if query is not None and not isinstance(query, str):
        raise RequestError.malformed("The `query` parameter must be a string.")
    operation_name = params.get("operationName")
    if operation_name is not None and not isinstance(operation_name, str):
        raise RequestError.malformed("The `operationName` parameter must be a string or null.")
    variables = params.get("variables")
    if variables is not None and not isinstance(variables, dict):
        raise RequestError.malformed("The `variables` parameter must be an object or null.")
    extensions = params.get("extensions")
    if extensions is not None and not isinstance(extensions, dict):
        raise RequestError.malformed("The `extensions` parameter must be an object or null.")
    return _Operation(query or None, operation_name or None, variables, extensions)


class GraphQLOverHTTP(GraphQL[RequestContext, None]):
    """Strawberry's ASGI view with the request checks and answers of the module doc."""

    gateway: Gateway

    def decode_json(self, data: str | bytes) -> object:
        return orjson.loads(data)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope=scope, receive=receive)
        try:
            response = await self.answer(request)
        except ClientDisconnect:
            raise  # nobody to answer: the request log line says 499 (gateway/request_id.py)
        except Exception:
            log.exception("request failed", extra={"path": scope.get("path")})
            response = self._answer(
                {"errors": [{"message": INTERNAL_MESSAGE, "extensions": {"code": "INTERNAL"}}]}, JSON, 500
            )
        await response(scope, receive, send)

    async def answer(self, request: Request) -> Response:
        """One HTTP request, from its method to the response (strawberry's ``run`` serves WebSockets)."""
        sub_response = await self.get_sub_response(request)
        media = JSON
        try:
            if request.method not in ("GET", "POST"):
                raise RequestError.malformed(
                    "Use GET (queries) or POST for GraphQL requests.", 405, Allow="GET, POST"
                )
            if (
                request.method == "GET"
                and self.graphql_ide
                and self.should_render_graphql_ide(self.request_adapter_class(request))
            ):
                return await self.render_graphql_ide(request)
            negotiated = negotiate(request.headers.get("accept"))
            if negotiated is None:
                raise RequestError.malformed(
                    f"Accept {GRAPHQL_RESPONSE} or {JSON}; this endpoint answers in nothing else.", 406
                )
            media = negotiated
            context = await self.get_context(request, response=sub_response)
            await self._check_rate(request, context)
            operation = await self._read_operation(request)
            return await self._execute(request, operation, context, media, sub_response)
        except RequestError as refused:
            return self._refusal(refused, media, sub_response)

    async def _check_rate(self, request: Request, context: RequestContext) -> None:
        limiter = self.gateway.rate_limiter
        if not limiter.enabled:
            return
        principal = context.principal
        if principal is not None:
            key, roles = "sub:" + principal.sub, principal.roles
        else:
            key, roles = "ip:" + (request.client.host if request.client else "unknown"), frozenset()
        wait = await limiter.check(key, roles)
        if wait:
            self.gateway.metrics.limit_rejected("rate")
            raise RequestError(
                RateLimited(f"Too many requests; retry in {wait} s.", retryAfter=wait),
                status=429,
                json_status=429,
                headers={"Retry-After": str(wait)},
            )

    async def _read_operation(self, request: Request) -> _Operation:
        if request.method == "GET":
            params: dict[str, Any] = dict(request.query_params)
            for name in ("variables", "extensions"):
                if params.get(name):
                    try:
                        params[name] = orjson.loads(params[name])
                    except orjson.JSONDecodeError:
                        raise RequestError.malformed(f"The `{name}` parameter is not valid JSON.") from None
                else:
                    params.pop(name, None)
            return _operation(params)

        header = request.headers.get("content-type")
        if not header:
            raise RequestError.malformed(
                f"Send the request body as {JSON} (the Content-Type is missing).", 415
            )
        media, params_ = _content_type(header)
        if media != JSON:
            raise RequestError.malformed(f"Send the request body as {JSON}, not {media[:64]}.", 415)
        if params_.get("charset", "utf-8") not in _UTF8:
            raise RequestError.malformed("Send the request body in UTF-8.", 415)
        body = await self._read_body(request)
        if not body.strip():
            raise RequestError.malformed("The request body is empty; send a JSON object with `query`.")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError.malformed("The request body is not valid UTF-8.") from None
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise RequestError.malformed("The request body is not valid JSON.") from None
        if isinstance(data, list):
            raise RequestError.malformed("Batching is not supported: send one operation per request.")
        if not isinstance(data, dict):
            raise RequestError.malformed("The request body must be a JSON object with `query`.")
        return _operation(data)

    async def _read_body(self, request: Request) -> bytes:
        settings = self.gateway.settings
        try:
            return await read_body(request, settings.max_body_bytes, settings.body_timeout)
        except BodyTooLarge:
            raise RequestError.malformed(
                f"The request body is larger than {settings.max_body_bytes} bytes.", 413
            ) from None
        except BodyTooSlow:
            slow = f"The request body did not arrive within {settings.body_timeout:g} s."
            raise RequestError.malformed(slow, 408) from None

    async def _execute(
        self,
        request: Request,
        operation: _Operation,
        context: RequestContext,
        media: str,
        sub_response: Response,
    ) -> Response:
        principal = context.principal
        roles = principal.roles if principal is not None else frozenset()
        limit = self.gateway.limits.max_string_length
        too_long = longest_variable(operation.variables, limit) if operation.variables else None
        if too_long is not None:
            refusal = BadUserInput(f"Variable '${too_long[:64]}' has a string over {limit} characters.")
            raise RequestError.graphql(refusal)
        try:
            resolved = self.gateway.persisted.resolve(operation.query, operation.extensions, roles)
            request.state.apq = resolved.apq
        except (PersistedQueryNotFound, PersistedQueryNotSupported) as exc:
            request.state.apq = "miss" if isinstance(exc, PersistedQueryNotFound) else "unsupported"
            # Apollo clients read these from a 200 answer (a 4xx would make them give up on APQ).
            raise RequestError(exc, status=200, json_status=200) from None
        except GraphError as exc:
            raise RequestError.graphql(exc, status=403 if exc.code == "FORBIDDEN" else 400) from None
        if resolved.query is None:
            raise RequestError.malformed("The request has no `query` (a GraphQL document).")

        method = request.method
        try:
            result = await self.schema.execute(
                resolved.query,
                variable_values=operation.variables,
                context_value=context,
                operation_name=operation.operation_name,
                allowed_operation_types=_GET_OPERATIONS if method == "GET" else _POST_OPERATIONS,
                operation_extensions=operation.extensions,
            )
        except CannotGetOperationTypeError as exc:
            message = (
                f'Unknown operation named "{exc.operation_name[:100]}".'
                if exc.operation_name is not None
                else "The document has no operation to run; name one with `operationName`."
            )
            raise RequestError.graphql(BadUserInput(message)) from None
        except InvalidOperationTypeError as exc:
            if method == "GET" and exc.operation_type is OperationType.MUTATION:
                raise RequestError.malformed("Send mutations with POST.", 405, Allow="POST") from None
            raise RequestError.graphql(
                BadUserInput("Subscriptions are served over WebSocket (graphql-transport-ws), not HTTP.")
            ) from None
        except MissingQueryError:
            raise RequestError.malformed("The request has no `query` (a GraphQL document).") from None

        request.state.operation = context.operation_name or operation.operation_name
        request_error = _is_request_error(result)
        if request_error:
            self.gateway.limits.mark_token_errors(result.errors, anonymous=principal is None)
        payload: dict[str, Any] = dict(await self.process_result(request, result))
        if request_error:
            payload.pop("data", None)  # the spec: no data entry when execution did not start
        elif resolved.register is not None:
            self.gateway.persisted.remember(resolved.register, resolved.query)
        status = 400 if request_error and media == GRAPHQL_RESPONSE else 200
        return self._answer(payload, media, status, sub_response)

    def _refusal(self, refused: RequestError, media: str, sub_response: Response) -> Response:
        error = GraphQLError(str(refused.error), original_error=refused.error)
        status = refused.status if media == GRAPHQL_RESPONSE else refused.json_status
        response = self._answer({"errors": formatted_errors([error])}, media, status, sub_response)
        response.headers.update(refused.headers)
        return response

    def _answer(
        self, payload: Mapping[str, Any], media: str, status: int, sub_response: Response | None = None
    ) -> Response:
        response = Response(
            self.encode_json(payload), status_code=status, media_type=f"{media}; charset=utf-8"
        )
        if sub_response is not None:
            response.headers.raw.extend(sub_response.headers.raw)
            if sub_response.background:
                response.background = sub_response.background
            if sub_response.status_code:
                response.status_code = sub_response.status_code
        return response


def _is_request_error(result: ExecutionResult) -> bool:
    """Execution never started: no data, and no error belongs to a field (field errors have a path)."""
    errors = result.errors or []
    return result.data is None and bool(errors) and all(e.path is None for e in errors)
