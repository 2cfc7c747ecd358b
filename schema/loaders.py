"""Per-request dataloaders, keyed by (system, resource).

One ``Loaders`` is made per request by the context getter. Every ``load()`` issued in the same tick
of the event loop becomes one batch, which the connector chunks to the system's limit; so a request
makes at most one upstream call per resource per chunk, and independent resources run concurrently.
"""

from __future__ import annotations

import asyncio
import enum
import functools
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias, TypeVar, cast

from aiodataloader import DataLoader

from connectors.contracts import ContractsConnector
from connectors.errors import UpstreamNotFound, UpstreamUnavailable
from connectors.models import (
    Account,
    Activity,
    Contract,
    Opportunity,
    Order,
    Payment,
    SalesUser,
    Satisfaction,
    System,
    Ticket,
    TicketDetail,
)
from connectors.sales import SalesConnector
from connectors.support import SupportConnector

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
V = TypeVar("V")


class _Miss(enum.Enum):
    MISS = "miss"


MISS = _Miss.MISS  # what a cache lookup answers for a key it does not hold

# What a resolver may return: the value now (it was cached), or a pending load that graphql-core awaits.
Resolved: TypeAlias = T | Awaitable[T]


def then(answer: V | asyncio.Future[V], use: Callable[[V], T]) -> Resolved[T]:
    """``use(value)`` now when ``answer`` is a value, else once the pending load has it."""
    if isinstance(answer, asyncio.Future):
        return _after(answer, use)
    return use(answer)


async def _after(pending: asyncio.Future[V], use: Callable[[V], T]) -> T:
    return use(await pending)


def then_all(answers: Sequence[V | asyncio.Future[V]], use: Callable[[list[V]], T]) -> Resolved[T]:
    """``use([values])`` now when every answer is a value, else once every pending load has one."""
    if any(isinstance(answer, asyncio.Future) for answer in answers):
        return _after_all(answers, use)
    return use(cast(list[V], list(answers)))


async def _after_all(answers: Sequence[V | asyncio.Future[V]], use: Callable[[list[V]], T]) -> T:
    return use([await a if isinstance(a, asyncio.Future) else a for a in answers])


LAUNCH_TURNS = 16


async def let_loads_start() -> None:
    """Give loads just started the event loop's next few turns, before CPU-heavy work (building a
    page of customers takes tens of milliseconds of CPU, and would hold their requests back): a
    DataLoader dispatches its batch on the next turn, and the connector needs a few more (its task,
    the in-flight bound, the connection pool) before the request is on the wire: one connector's by
    the 4th to 6th turn, a page's register calls (37 tasks behind its bound of 4) by about the 12th,
    measured. Each turn costs microseconds when nothing else is ready."""
    for _ in range(LAUNCH_TURNS):
        await asyncio.sleep(0)


@dataclass(frozen=True, slots=True)
class Upstreams:
    """The three connectors, shared by every request of a process (pooled clients)."""

    sales: SalesConnector
    support: SupportConnector
    contracts: ContractsConnector

    async def aclose(self) -> None:
        await self.sales.aclose()
        await self.support.aclose()
        await self.contracts.aclose()


class Sources:
    """How each system fared in one request: ``ok`` or the failure kind (``timeout``, ``circuit_open``…),
    for the response's ``extensions.sources``. A failure is never overwritten by a later success."""

    def __init__(self) -> None:
        self.status: dict[str, str] = {}

    def ok(self, system: System) -> None:
        self.status.setdefault(system.value, "ok")

    def failed(self, system: System, kind: str) -> None:
        self.status[system.value] = kind

    async def track(self, system: System, call: Awaitable[T]) -> T:
        try:
            result = await call
        except UpstreamUnavailable as exc:
            self.failed(system, exc.kind)
            raise
        self.ok(system)
        return result


class Loader(DataLoader[K, V]):
    """A typed DataLoader over a batch function that answers a mapping (missing keys → default)."""

    def __init__(
        self,
        fetch: Callable[[list[K]], Awaitable[Mapping[K, V]]],
        default: V,
        system: System,
        sources: Sources,
        cached: Callable[[K], V | _Miss] | None = None,
    ) -> None:
        super().__init__()  # the batch function is the class's ``batch_load_fn``: no cycle through
        # a bound method stored on the instance, so a request's loaders are freed by refcounting
        self._fetch = fetch
        self._default = default
        self._system = system
        self._sources = sources
        self._cached = cached

    def get(self, key: K) -> V | asyncio.Future[V]:
        """The value itself when the cross-request cache holds it (no batch, no round through the
        event loop: the resolver stays synchronous), else ``load(key)``, a pending Future."""
        cached = self._cached
        if cached is not None:
            value = cached(key)
            if value is not MISS:
                self._sources.ok(self._system)
                return value
        return self.load(key)

    async def batch_load_fn(self, keys: list[K]) -> list[V]:  # type: ignore[override]
        found = await self._sources.track(self._system, self._fetch(keys))
        default = self._default
        return [found.get(key, default) for key in keys]


class EntityCacheLike(Protocol):
    """A cross-request cache (gateway.cache.EntityCache): wraps a batch fetch per resource."""

    def wrap(
        self, resource: str, fetch: Callable[[list[K]], Awaitable[Mapping[K, V]]]
    ) -> Callable[[list[K]], Awaitable[Mapping[K, V]]]: ...

    def lookup(self, resource: str) -> Callable[[Hashable], object] | None:
        """A key's cached value or ``MISS`` (None: the resource is not cached)."""
        ...


class _NoCache:
    def wrap(
        self, resource: str, fetch: Callable[[list[K]], Awaitable[Mapping[K, V]]]
    ) -> Callable[[list[K]], Awaitable[Mapping[K, V]]]:
        return fetch

    def lookup(self, resource: str) -> None:
        return None


class Loaders:
    """Every loader one request may use. Attribute names say what is loaded and by which key;
    each name is also the resource name of the cross-request cache."""

    def __init__(self, upstreams: Upstreams, cache: EntityCacheLike | None = None) -> None:
        self.upstreams = upstreams
        self.sources = sources = Sources()
        c = cache or _NoCache()
        sales, support, contracts = upstreams.sales, upstreams.support, upstreams.contracts

        def loader(
            resource: str, fetch: Callable[[list[str]], Awaitable[Mapping[str, V]]], default: V
        ) -> Loader[str, V]:
            system = _SYSTEM_OF[resource]
            cached = cast(Callable[[str], V | _Miss] | None, c.lookup(resource))
            return Loader(c.wrap(resource, fetch), default, system, sources, cached)

        self.account: Loader[str, Account | None] = loader("account", sales.accounts, None)
        self.orders: Loader[str, Sequence[Order]] = loader("orders", sales.orders, ())
        self.payments: Loader[str, Sequence[Payment]] = loader("payments", sales.payments, ())
        self.opportunities: Loader[str, Sequence[Opportunity]] = loader(
            "opportunities", sales.opportunities, ()
        )
        self.activities: Loader[str, Sequence[Activity]] = loader("activities", sales.activities, ())
        self.user: Loader[str, SalesUser | None] = loader("user", sales.users, None)
        self.tickets: Loader[str, Sequence[Ticket]] = loader("tickets", support.tickets, ())
        self.satisfaction: Loader[str, Satisfaction | None] = loader(
            "satisfaction", support.satisfaction, None
        )
        self.ticket_detail: Loader[str, TicketDetail | None] = loader(
            "ticket_detail", _ticket_details(support), None
        )
        self.contracts: Loader[str, Sequence[Contract]] = loader("contracts", contracts.contracts_many, ())


_SYSTEM_OF = {
    "account": System.SALES,
    "orders": System.SALES,
    "payments": System.SALES,
    "opportunities": System.SALES,
    "activities": System.SALES,
    "user": System.SALES,
    "tickets": System.SUPPORT,
    "satisfaction": System.SUPPORT,
    "ticket_detail": System.SUPPORT,
    "contracts": System.CONTRACTS,
}


@functools.cache  # one per connector: the cache wraps it once, not per request
def _ticket_details(
    support: SupportConnector,
) -> Callable[[list[str]], Awaitable[Mapping[str, TicketDetail]]]:
    """The helpdesk reads one ticket's conversation per call; run them concurrently."""

    async def one(ticket_id: str) -> TicketDetail | None:
        try:
            return await support.ticket(ticket_id)
        except UpstreamNotFound:
            return None

    async def fetch(ids: list[str]) -> Mapping[str, TicketDetail]:
        details = await asyncio.gather(*(one(ticket_id) for ticket_id in ids))
        return {key: detail for key, detail in zip(ids, details, strict=True) if detail is not None}

    return fetch
