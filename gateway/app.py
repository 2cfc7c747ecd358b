"""The Starlette application: ``/graphql`` (POST, GET, GraphiQL, WebSocket) and ``/healthz``."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import uuid
from collections.abc import AsyncIterator, Collection, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import sniffio
from graphql import GraphQLError
from graphql.validation import MaxIntrospectionDepthRule
from opentelemetry.sdk.trace.export import SpanExporter
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket
from strawberry.extensions import AddValidationRules, DisableIntrospection
from strawberry.http import GraphQLHTTPResponse
from strawberry.types import ExecutionResult

from features.erasure import Eraser, Erasures
from features.history import CustomerHistory
from features.identity.service import Identity
from features.identity.store import IdentityStore
from features.pool import PoolService
from features.privacy import DataRequests
from features.privacy import Sources as PrivacySources
from features.retention import Retention, purge
from features.store import AccessRequests, AuditLog, StoreUnavailable
from features.store.checkpoints import checkpoints_for
from features.store.intents import WriteJournal, intent_states
from policies import Policy, PolicyHolder, policy_path
from policies.guard import Guard
from schema import build_schema
from schema.context import RequestContext
from schema.errors import INTERNAL_MESSAGE, GraphError, formatted_errors
from schema.loaders import Loaders, Upstreams

from .auditing import audit_entries
from .auth import Authenticator, AuthError
from .cache import EntityCache, parse_ttls
from .datakeys import open_database
from .events import LiveUpdates
from .events.model import InboxEvent
from .events.websocket import LiveTransportWSHandler, TextFrames, live_context, on_connect
from .graphiql import ASSETS_PATH, GraphiQLPage
from .http import GraphQLOverHTTP
from .limits import LimitsExtension, RequestLimits
from .metrics import Metrics, metrics_endpoint
from .persisted import PersistedQueries
from .privacy import Privacy
from .ratelimit import build_limiter
from .readwatch import ReadWatch
from .request_id import RequestIdMiddleware, accept_request_id
from .settings import Settings, SettingsError, load_settings, retention_key
from .shared_limits import BreakerBoard, RedisRate, RedisSlots
from .tracing import TracingMiddleware, build_provider, trace_upstreams
from .upstreams import build_upstreams

log = logging.getLogger("customer_graph.gateway")


class GraphView(GraphQLOverHTTP):
    """Strawberry's ASGI view, with our context, error shape and JSON encoder (HTTP rules: http.py)."""

    # WebSocket: graphql-transport-ws only, subscriptions only, a context per operation (events/websocket.py)
    graphql_transport_ws_handler_class = LiveTransportWSHandler
    websocket_adapter_class = TextFrames  # type: ignore[assignment]

    def __init__(self, gateway: Gateway) -> None:
        settings = gateway.settings
        super().__init__(gateway.schema, graphql_ide="graphiql" if settings.graphiql else None)
        self.gateway = gateway
        self.graphiql = GraphiQLPage() if settings.graphiql else None
        self.protocols = ("graphql-transport-ws",)

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> RequestContext:
        gateway = self.gateway
        # the middleware put its (checked) id in the headers: one rule, gateway/request_id.py
        request_id = accept_request_id(request.headers.get("x-request-id"))
        principal = None
        auth_error = None
        try:
            principal = gateway.authenticator.authenticate(request.headers.get("authorization"))
        except AuthError as exc:
            auth_error = str(exc)
        policy = gateway.current_policy()
        context = RequestContext(
            loaders=Loaders(gateway.upstreams, gateway.cache),
            cache=gateway.cache,
            pool=gateway.pool,
            identity=gateway.identity,
            history=gateway.history,
            privacy=gateway.privacy,
            principal=principal,
            guard=Guard(policy, principal) if principal is not None else None,
            request_id=request_id,
            now=datetime.now(UTC),
            max_first=gateway.settings.max_first,
            auth_error=auth_error,
            access=gateway.access,
            audit_log=gateway.audit,
            audit_recorder=gateway.record_audit,
            journal=gateway.journal,
            grant_lookup=gateway.access.active_grants,
        )
        if isinstance(request, WebSocket):
            context = live_context(context, gateway.live, request.headers.get("authorization"))
        request.state.graph_context = context
        return context

    async def render_graphql_ide(self, request: Request) -> Response:
        """GraphiQL from the gateway's own pinned assets (gateway/graphiql.py): works offline."""
        assert self.graphiql is not None
        return self.graphiql.response()

    async def on_ws_connect(self, context: RequestContext) -> Any:
        """``connection_init``: its payload's ``Authorization`` replaces the upgrade request's."""
        return await on_connect(self.gateway, context)

    async def process_result(self, request: Request, result: ExecutionResult) -> GraphQLHTTPResponse:
        context: RequestContext | None = getattr(request.state, "graph_context", None)
        if context is not None and not await self.gateway.record_audit(context):
            # Fail closed: nothing that could not be audited leaves (policy.md, Audit).
            error = GraphQLError(INTERNAL_MESSAGE, original_error=GraphError(INTERNAL_MESSAGE))
            return {"data": None, "errors": formatted_errors([error])}  # type: ignore[typeddict-item]
        response: dict[str, Any] = {"data": result.data}
        if result.errors:
            response["errors"] = formatted_errors(result.errors)
        extensions = dict(result.extensions or {})
        if context is not None:
            sources = context.loaders.sources.status
            if any(status != "ok" for status in sources.values()):
                extensions["sources"] = dict(sources)  # a degraded answer says which system failed how
        if extensions:
            response["extensions"] = extensions
        return response  # type: ignore[return-value]

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)


class Gateway:
    """Everything one gateway process shares across requests."""

    def __init__(
        self,
        settings: Settings,
        upstreams: Upstreams | None = None,
        span_exporter: SpanExporter | None = None,
    ) -> None:
        self.settings = settings
        self.tracing = build_provider(settings.tracing, span_exporter)
        self.authenticator = Authenticator(settings)
        self.metrics = Metrics()
        # Request limits (gateway/limits.py): measured once per document, compared per caller.
        self.limits = RequestLimits(settings, on_refusal=self.metrics.limit_rejected)
        self.rate_limiter = build_limiter(settings)
        self.persisted = PersistedQueries.from_settings(settings)
        extensions: list[Any] = [
            self.metrics.graphql_extension(),
            lambda: LimitsExtension(self.limits),
            lambda: AddValidationRules([MaxIntrospectionDepthRule]),
        ]
        if not settings.introspection:
            extensions.append(DisableIntrospection)
        self.schema = build_schema(
            document_cache=self.limits.documents, precheck=self.limits.precheck, extensions=extensions
        )
        self._upstreams = upstreams
        self.shared_slots: RedisSlots | None = None
        self.shared_rate: RedisRate | None = None
        # each instance's breaker states, reported for the deployment (gateway/shared_limits.py)
        self.breakers = (
            BreakerBoard(settings.redis_url, uuid.uuid4().hex[:12]) if settings.redis_url else None
        )
        self._breaker_beat: asyncio.Task[None] | None = None
        self.policies = PolicyHolder(policy_path(settings.policy_file or None))
        try:
            ttls = parse_ttls(settings.cache_ttls)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        self.cache = EntityCache(ttls, observer=self.metrics.cache_result) if settings.cache else None
        # The gateway's own database: the audit trail and access requests (features/store); personal data
        # in it sealed with the data keys (gateway/datakeys.py: none in production is a SettingsError).
        self.database = open_database(settings)
        self.audit = AuditLog(
            self.database,
            checkpoints=checkpoints_for(
                self.database.file_path,
                settings.audit_checkpoint_file,
                settings.audit_checkpoint_key,
                settings.audit_checkpoint_every,
            ),
        )
        self.access = AccessRequests(
            self.database, self.policies, audit=self.audit, cache_ttl=settings.grant_cache_ttl
        )
        # Bulk reads (gateway/readwatch.py): personal data of many customers to one user in an hour.
        threshold = settings.read_alert_customers
        self.read_watch = ReadWatch(threshold, self._bulk_read) if threshold else None
        self.history = CustomerHistory(self.database, self.audit)  # Customer.history
        self.privacy = Privacy(
            DataRequests(self.database, Path(settings.privacy_folder)),
            lambda: PrivacySources(
                sales=self.upstreams.sales,
                support=self.upstreams.support,
                contracts=self.upstreams.contracts,
                history=self.history,
                audit=self.audit,
                identity=self.identity.store,
                database=self.database,
            ),
            self.authenticator,
            self.current_policy,
            self._account_or_none,
            eraser=lambda: Eraser(
                Erasures(self.database),
                sales=lambda: self.upstreams.sales,
                identity=self.identity.store,
                audit=self.audit,
                evict=self._forget_customer,
                export_files=self._export_files,
                key=retention_key(self.settings),
            ),
        )
        self.journal = WriteJournal(self.database)  # writes: intent before, outcome with the audit record
        self._journal_watch: asyncio.Task[None] | None = None
        self._purge_task: asyncio.Task[None] | None = None
        # The public pool (features/pool): its history database opens on first use; the sweep is
        # scheduled by start(). Live updates subscribe with ``gateway.pool.on_pool_event(callback)``.
        self.pool = PoolService.from_settings(
            settings,
            lambda: self.upstreams.sales,
            database=self.database,
            audit=self.audit,
            evict=self._evict_customer if self.cache else None,
        )
        # Who is who (features/identity): support identities read synchronously on the hot path, kept
        # in step with the database every identity_refresh seconds (other instances' changes).
        self.identity = Identity(
            IdentityStore(self.database, retention_key(settings)),
            lambda account_nos: self.upstreams.sales.accounts(account_nos),
            refresh_seconds=settings.identity_refresh,
        )
        # Live updates (gateway/events): webhooks and the register's poll in, subscriptions out.
        self.live = LiveUpdates(
            settings,
            upstreams=lambda: self.upstreams,
            policy=self.current_policy,
            cache=self.cache,
            database=self.database,
            aliases=self.identity.accounts_of_email,
        )
        self.live.observers.append(self._identity_event)
        self.pool.on_pool_event(self.live.pool_event)

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
            if self.settings.redis_url:  # the register's 4 in flight, for the whole deployment
                limit = self.settings.contracts_max_in_flight
                self.shared_slots = RedisSlots(
                    self.settings.redis_url,
                    "contracts",
                    limit,
                    fallback=limit // max(1, self.settings.expected_instances),
                    ttl=self.settings.shared_lease_ttl,
                )
                self._upstreams.contracts.shared_slots = self.shared_slots
                slots = self.shared_slots
                self.metrics.watch_shared_limit("contracts", lambda: slots.degraded)
                if self.settings.support_max_rate:  # the helpdesk's rate, for the whole deployment
                    rate = self.settings.support_max_rate
                    shared_rate = RedisRate(
                        self.settings.redis_url,
                        "support",
                        rate,
                        fallback_rate=rate / max(1, self.settings.expected_instances),
                    )
                    self.shared_rate = shared_rate
                    self._upstreams.support.shared_rate = shared_rate
                    self.metrics.watch_shared_limit("support", lambda: shared_rate.degraded)
            connectors = (self._upstreams.sales, self._upstreams.support, self._upstreams.contracts)
            for connector in connectors:
                self.metrics.watch(connector)
            if self.tracing is not None:
                trace_upstreams(self.tracing, connectors)
        return self._upstreams

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Each system reachable (one quick health call each) and its circuit's state; the database."""
        upstreams = self.upstreams
        connectors = (upstreams.sales, upstreams.support, upstreams.contracts)
        healthy, database = await asyncio.gather(
            asyncio.gather(*(c.health(timeout=1.0) for c in connectors)), self.database.ping(timeout=1.0)
        )
        systems = {
            c.system.value: {"reachable": ok, "circuit": c.status()["breaker"]}
            for c, ok in zip(connectors, healthy, strict=True)
        }
        details: dict[str, Any] = {"systems": systems, "database": {"reachable": database}}
        if self.breakers is not None:
            await self.breakers.publish(self._breaker_states())
            details["deployment"] = await self.breakers.deployment()
        if self.shared_slots is not None:  # degraded, not down: each instance then keeps its share
            details["sharedLimits"] = {"contracts": "fallback" if self.shared_slots.degraded else "redis"}
            if self.shared_rate is not None:
                details["sharedLimits"]["support"] = "fallback" if self.shared_rate.degraded else "redis"
        return all(healthy) and database, details

    async def record_audit(self, context: RequestContext) -> bool:
        """Write the request's audit records before its answer leaves; False when the store failed.
        A request that journaled writes closes their intents in the same transaction."""
        entries = audit_entries(context, context.operation_name, context.operation_type)
        intents, context.intents = context.intents, []
        if not entries and not intents:
            return True
        try:
            if intents:
                written = {(w.operation, w.account_no) for w in context.writes if not w.denied}
                async with self.audit.transaction() as tx:
                    tx.add(*entries)
                    await self.journal.close(tx.connection, intent_states(intents, written))
            else:
                await self.audit.record(entries)
        except StoreUnavailable:
            log.error("audit store unavailable: the answer is withheld", extra={"records": len(entries)})
            return False
        if self.read_watch is not None and context.principal is not None:
            for entry in entries:
                if entry.kind == "read":  # the customers whose policy-controlled values were served
                    principal = context.principal
                    self.read_watch.observe(principal.sub, principal.roles, entry.fields.keys())
        return True

    def _bulk_read(self, user: str, roles: Collection[str], customers: int) -> None:
        """The read watch noticed ``user``: counted by its (policy) roles, logged once this hour."""
        known = sorted(set(roles) & set(self.policies.policy.roles))
        self.metrics.bulk_read(known)
        log.warning(
            "bulk read: a user was served personal data of more than %d customers within an hour",
            self.settings.read_alert_customers,
            extra={
                "user": user,
                "roles": ":".join(known) or "none",
                "limit": self.settings.read_alert_customers,
            },
        )

    def _breaker_states(self) -> dict[str, str]:
        upstreams = self.upstreams
        connectors = (upstreams.sales, upstreams.support, upstreams.contracts)
        return {c.system.value: c.breaker.state.value for c in connectors}

    async def _beat_breakers(self, every: float = 5.0) -> None:
        while self.breakers is not None:
            await self.breakers.publish(self._breaker_states())
            await asyncio.sleep(every)

    async def _purge_regularly(self, every: float) -> None:
        """Retention (features/retention.py): what is past its time is pseudonymised, at start and then
        every ``every`` seconds."""
        retention = Retention.from_settings(self.settings)
        key = retention_key(self.settings)
        while True:
            try:
                purged = await purge(
                    self.database,
                    retention,
                    datetime.now(UTC),
                    key=key,
                    audit=self.audit,
                    exports=Path(self.settings.privacy_folder),
                )
                if purged.any:
                    log.info(
                        "retention purge",
                        extra={
                            "pool_notes": purged.pool_notes,
                            "review_notes": purged.review_notes,
                            "event_payloads": purged.event_payloads,
                            "audit_values": purged.audit_values,
                            "access_reasons": purged.access_reasons,
                            "export_files": purged.export_files,
                            "unlinked_identities": purged.unlinked_identities,
                        },
                    )
            except StoreUnavailable:
                log.warning("retention purge skipped: the gateway database is unavailable")
            except Exception as exc:  # a purge that failed must not stop the next one
                log.error("retention purge failed (%s)", type(exc).__name__)
            await asyncio.sleep(every)

    async def _watch_journal(self, every: float = 60.0) -> None:
        """At start and then every minute: writes whose outcome was never recorded go into the trail; an
        erasure whose runner stopped (its instance died) runs on here."""
        while True:
            try:
                await self.journal.flag_stale(self.audit)
                await self.privacy.resume_stopped()
            except StoreUnavailable:
                log.warning("write journal check skipped: the gateway database is unavailable")
            except Exception as exc:  # a check that failed must not stop the next one
                log.error("write journal check failed (%s)", type(exc).__name__)
            await asyncio.sleep(every)

    async def start(self) -> None:
        """Migrate the database; connect the cache's invalidation channel (with CG_REDIS_URL); make
        the connectors now, not on the first request."""
        declare_asyncio()
        await self.database.migrate()
        self.upstreams  # noqa: B018 (the property builds them)
        if self.cache is not None and self.settings.redis_url:
            await self.cache.connect(self.settings.redis_url)
        await self.identity.start()
        await self.live.start()
        self.pool.start()
        loop = asyncio.get_running_loop()
        self._journal_watch = loop.create_task(self._watch_journal(), name="write-journal")
        if self.settings.retention_interval > 0:
            self._purge_task = loop.create_task(
                self._purge_regularly(self.settings.retention_interval), name="retention-purge"
            )
        if self.breakers is not None:
            self._breaker_beat = loop.create_task(self._beat_breakers(), name="breaker-report")

    async def _identity_event(self, event: InboxEvent) -> None:
        """A published change event, for identity: a sales account as it is now (its keys, pairs, and an
        e-mail that changed kept as a previous support identity); a helpdesk requester heard of."""
        if event.source == "sales" and event.account_no and event.type.startswith("account."):
            found = await self.upstreams.sales.accounts([event.account_no])
            seen = await self.identity.observe(list(found.values()))
            for account_no, email in seen.previous:
                if self.cache is not None:  # its tickets now include the old e-mail's
                    self.cache.evict_customer(account_no, email=email)
        elif event.source == "support" and event.email:
            await self.identity.store.heard_requesters([event.email.strip().lower()], datetime.now(UTC))

    def _evict_customer(self, account_no: str) -> None:
        if self.cache is not None:
            self.cache.evict_customer(account_no)

    async def _forget_customer(self, account_no: str, emails: Sequence[str], tax_id: str | None) -> None:
        """An erasure's last gateway step: nothing of the customer cached here or (through Redis) on any
        other instance, and this instance's identity directory without its e-mails at once."""
        if self.cache is not None:
            self.cache.evict_customer(account_no, tax_id=tax_id)
            for email in emails:
                self.cache.evict("tickets", email)
                self.cache.evict("satisfaction", email)
        await self.identity.refresh()

    async def _export_files(self, account_no: str) -> list[Path]:
        requests = self.privacy.requests
        return [path for r in await requests.of_account(account_no) for path in requests.files(r.id).values()]

    async def _account_or_none(self, account_no: str) -> Any:
        return (await self.upstreams.sales.accounts([account_no])).get(account_no)

    async def aclose(self) -> None:
        await self.privacy.aclose()
        if self._purge_task is not None:
            self._purge_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._purge_task
        if self._journal_watch is not None:
            self._journal_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._journal_watch
        if self.tracing is not None:
            self.tracing.shutdown()
        await self.live.aclose()
        await self.identity.stop()
        await self.pool.aclose()
        await self.rate_limiter.aclose()
        if self.cache is not None:
            await self.cache.aclose()
        if self._upstreams is not None:
            await self._upstreams.aclose()
            self._upstreams = None
        if self.shared_slots is not None:
            await self.shared_slots.aclose()
        if self.shared_rate is not None:
            await self.shared_rate.aclose()
        if self._breaker_beat is not None:
            self._breaker_beat.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._breaker_beat
        if self.breakers is not None:
            await self.breakers.aclose()
        await self.audit.aclose()
        await self.database.aclose()


def create_app(
    settings: Settings, upstreams: Upstreams | None = None, *, span_exporter: SpanExporter | None = None
) -> Starlette:
    gateway = Gateway(settings, upstreams, span_exporter)
    view = GraphView(gateway)

    async def healthz(request: Request) -> Response:
        """Alive: the process answers. (``/readyz`` says whether it can serve.)"""
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        """Each system reachable, its circuit, the database. ``?scope=self``: ready when the gateway's
        own dependency (its database) answers, whatever the departments do — for a load balancer's
        readiness probe, since a department that is down costs only its own fields (partial
        answers), never a reason to take every instance out of service at once."""
        ready, details = await gateway.readiness()
        if request.query_params.get("scope") == "self":
            ready = bool(details["database"]["reachable"])
        return JSONResponse(
            {"status": "ready" if ready else "not ready", **details}, status_code=200 if ready else 503
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, gateway.reload_policy)
        await gateway.start()
        try:
            yield
        finally:
            await gateway.aclose()

    middleware = [Middleware(RequestIdMiddleware, deadline=settings.request_deadline)]
    if gateway.tracing is not None:  # inside the request id: the span carries it
        middleware.append(Middleware(TracingMiddleware, tracer=gateway.tracing.get_tracer("customer_graph")))
    app = Starlette(
        routes=[
            Route("/graphql", view),  # every method: the view answers 405 itself, in JSON
            WebSocketRoute("/graphql", view),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            *gateway.live.routes(),  # POST /hooks/sales, /hooks/support
            *gateway.privacy.routes(),  # GET /privacy/exports/<id>.json|html
            *([Mount(ASSETS_PATH, view.graphiql.files)] if view.graphiql is not None else []),
        ],
        middleware=middleware,
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    app.state.metrics = gateway.metrics
    return app


def app_from_environment() -> Starlette:
    """The app for ``uvicorn --factory`` and for each of ``customer-graph serve --workers N``."""
    return serving_app(load_settings())


def serving_app(settings: Settings) -> Starlette:
    """``create_app`` for a process that serves it (``serve``, its workers, ``demo``): the heap settled."""
    app = create_app(settings)
    settle_heap()
    return app


def declare_asyncio() -> None:
    """Tell sniffio, once, that this thread runs asyncio. anyio (starlette's) and httpcore (httpx's own
    clients; the connectors no longer use it) ask ``sniffio.current_async_library()`` on every lock,
    event and cancel scope they use, and undeclared, sniffio answers by calling
    ``asyncio.current_task()``, which on CPython 3.11 makes a ``getpid()`` system call each time (the
    running-loop check). Under S3 load, with the connectors on httpcore, that was about a quarter of the
    gateway process's ~560 ``getpid`` calls per answer (py-spy ``--native``, ``strace -c``;
    bench/results, issue #19). The event loop's thread runs asyncio for its whole life."""
    sniffio.thread_local.name = "asyncio"


GC_YOUNGEST_THRESHOLD = 20_000  # allocations between collections of the youngest generation (default 700)


def settle_heap() -> None:
    """For a serving process, once the app is built: what exists now (modules, the schema, the
    policy) lives as long as the process, so the cyclic garbage collector stops re-examining it
    (``gc.freeze``), and the youngest generation is collected every 20,000 allocations, not 700.
    A page of 50 customers spent ~38 ms a request in the collector before, ~0-5 ms after (measured
    in-process, bench S2 cold); memory grows by what cyclic garbage waits for the next collection.
    Not called by ``create_app`` (tests build many apps in one process)."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNGEST_THRESHOLD, middle, oldest)
