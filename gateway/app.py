"""The Starlette application: ``/graphql`` (POST, GET, GraphiQL, WebSocket) and ``/healthz``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson
from graphql.validation import MaxIntrospectionDepthRule
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from strawberry.extensions import AddValidationRules, DisableIntrospection
from strawberry.http import GraphQLHTTPResponse
from strawberry.types import ExecutionResult

from policies import Policy, PolicyHolder, policy_path
from policies.guard import Guard
from schema import build_schema
from schema.context import RequestContext
from schema.errors import formatted_errors
from schema.loaders import Loaders, Upstreams

from .auth import Authenticator, AuthError
from .cache import EntityCache, parse_ttls
from .http import GraphQLOverHTTP
from .limits import LimitsExtension, RequestLimits
from .persisted import PersistedQueries
from .ratelimit import build_limiter
from .settings import Settings, SettingsError, load_settings
from .upstreams import build_upstreams

log = logging.getLogger("customer_graph.gateway")

_REQUEST_ID_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


def request_id_from(headers: Any) -> str:
    """The caller's ``X-Request-Id`` when it is short and plain, else a fresh one."""
    given = headers.get("x-request-id")
    if given and len(given) <= 128 and set(given) <= _REQUEST_ID_OK:
        return str(given)
    return uuid.uuid4().hex


class GraphView(GraphQLOverHTTP):
    """Strawberry's ASGI view, with our context, error shape and JSON encoder (HTTP rules: http.py)."""

    def __init__(self, gateway: Gateway) -> None:
        settings = gateway.settings
        super().__init__(gateway.schema, graphql_ide="graphiql" if settings.graphiql else None)
        self.gateway = gateway

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> RequestContext:
        gateway = self.gateway
        request_id = request_id_from(request.headers)
        if isinstance(response, Response):
            response.headers["X-Request-Id"] = request_id
        principal = None
        auth_error = None
        try:
            principal = gateway.authenticator.authenticate(request.headers.get("authorization"))
        except AuthError as exc:
            auth_error = str(exc)
        policy = gateway.current_policy()
        return RequestContext(
            loaders=Loaders(gateway.upstreams, gateway.cache),
            cache=gateway.cache,
            principal=principal,
            guard=Guard(policy, principal) if principal is not None else None,
            request_id=request_id,
            now=datetime.now(UTC),
            max_first=gateway.settings.max_first,
            auth_error=auth_error,
        )

    async def process_result(self, request: Request, result: ExecutionResult) -> GraphQLHTTPResponse:
        response: dict[str, Any] = {"data": result.data}
        if result.errors:
            response["errors"] = formatted_errors(result.errors)
        if result.extensions:
            response["extensions"] = result.extensions
        return response  # type: ignore[return-value]

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)


class Gateway:
    """Everything one gateway process shares across requests."""

    def __init__(self, settings: Settings, upstreams: Upstreams | None = None) -> None:
        self.settings = settings
        self.authenticator = Authenticator(settings)
        # Request limits (gateway/limits.py): measured once per document, compared per caller.
        self.limits = RequestLimits(settings)
        self.rate_limiter = build_limiter(settings)
        self.persisted = PersistedQueries.from_settings(settings)
        extensions: list[Any] = [
            lambda: LimitsExtension(self.limits),
            lambda: AddValidationRules([MaxIntrospectionDepthRule]),
        ]
        if not settings.introspection:
            extensions.append(DisableIntrospection)
        self.schema = build_schema(document_cache_size=settings.document_cache_size, extensions=extensions)
        self._upstreams = upstreams
        self.policies = PolicyHolder(policy_path(settings.policy_file or None))
        try:
            ttls = parse_ttls(settings.cache_ttls)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        self.cache = EntityCache(ttls) if settings.cache else None

    def current_policy(self) -> Policy:
        """The policy in force; a changed file is picked up here (a bad one is logged and ignored)."""
        problems = self.policies.maybe_reload()
        if problems:
            log.error("policy file rejected; keeping the previous policy", extra={"problems": problems})
        elif problems == []:
            log.info("policy reloaded", extra={"generation": self.policies.generation})
        return self.policies.policy

    def reload_policy(self) -> None:
        """SIGHUP: read the policy file again now."""
        problems = self.policies.reload()
        if problems:
            log.error("policy file rejected; keeping the previous policy", extra={"problems": problems})
        else:
            log.info("policy reloaded", extra={"generation": self.policies.generation})

    @property
    def upstreams(self) -> Upstreams:
        if self._upstreams is None:
            self._upstreams = build_upstreams(self.settings)
        return self._upstreams

    async def start(self) -> None:
        """Connect what needs the event loop: the cache's invalidation channel (with CG_REDIS_URL)."""
        if self.cache is not None and self.settings.redis_url:
            await self.cache.connect(self.settings.redis_url)

    async def aclose(self) -> None:
        await self.rate_limiter.aclose()
        if self.cache is not None:
            await self.cache.aclose()
        if self._upstreams is not None:
            await self._upstreams.aclose()
            self._upstreams = None


def create_app(settings: Settings, upstreams: Upstreams | None = None) -> Starlette:
    gateway = Gateway(settings, upstreams)
    view = GraphView(gateway)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, gateway.reload_policy)
        await gateway.start()
        try:
            yield
        finally:
            await gateway.aclose()

    app = Starlette(
        routes=[
            Route("/graphql", view),  # every method: the view answers 405 itself, in JSON
            WebSocketRoute("/graphql", view),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    return app


def app_from_environment() -> Starlette:
    """The app for ``uvicorn --factory`` and for each of ``customer-graph serve --workers N``."""
    return create_app(load_settings())
