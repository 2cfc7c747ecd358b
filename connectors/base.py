"""What every connector shares: one pooled client, one way out, one error mapping.

Every upstream call goes through ``Connector._request``: it applies the per-call timeout, runs
the (deliberately small) retry loop and turns each failure into an ``UpstreamError``. Retry
policies, back-off and circuit breakers plug in there. The subclasses only say which answers are
worth retrying (``_retry_delay``), how to find field errors in a refusal (``_invalid_fields``), and
may wrap the send itself (``_send``: the contracts connector's in-flight limit).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, ClassVar, Self, TypeVar

import httpx
import orjson

from .errors import UpstreamConflict, UpstreamError, UpstreamInvalid, UpstreamNotFound, UpstreamUnavailable
from .models import System

__all__ = ["Connector", "in_chunks", "unique"]

T = TypeVar("T")

Params = Mapping[str, str | int]
Headers = Mapping[str, str]

DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_CONNECTIONS = 20

# What a mapping function raises on JSON that does not have the contract's shape.
_SHAPE_ERRORS = (KeyError, IndexError, TypeError, ValueError, AttributeError, ArithmeticError)


class Connector:
    """One departmental system behind one pooled ``httpx.AsyncClient``."""

    system: ClassVar[System]

    def __init__(
        self,
        base_url: str,
        *,
        auth: httpx.Auth | None = None,
        headers: Headers | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_attempts: int = 1,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._client = httpx.AsyncClient(
            base_url=base_url,
            auth=auth,
            headers=headers,
            timeout=timeout,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.aclose()

    async def health(self) -> bool:
        """``GET /health`` answered ``{"status": "ok"}``; never raises."""
        try:
            return await self._call("GET", "/health", _is_ok)
        except UpstreamError:
            return False

    # --- the one way out -------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        parse: Callable[[Any], T],
        *,
        params: Params | None = None,
        json: Any = None,
        headers: Headers | None = None,
        timeout: float | None = None,
    ) -> T:
        """``_request``, then the JSON body through ``parse``; a body of the wrong shape is
        ``bad_response``."""
        response = await self._request(
            method, path, params=params, json=json, headers=headers, timeout=timeout
        )
        try:
            return parse(orjson.loads(response.content))
        except _SHAPE_ERRORS:
            raise UpstreamUnavailable(self.system, "bad_response") from None

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        json: Any = None,
        headers: Headers | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """Send until a 2xx answer or a failure not worth retrying; raise that as an UpstreamError."""
        timeout = self._timeout if timeout is None else timeout
        attempt, waited = 1, 0.0
        while True:
            response = await self._send(
                method, path, params=params, json=json, headers=headers, timeout=timeout
            )
            if response.is_success:
                return response
            delay = self._retry_delay(response, attempt, waited) if attempt < self._max_attempts else None
            if delay is None:
                raise self._error(response)
            await asyncio.sleep(delay)
            attempt += 1
            waited += delay

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: Params | None,
        json: Any,
        headers: Headers | None,
        timeout: float,
    ) -> httpx.Response:
        """One exchange, bounded by ``timeout`` from first byte out to last byte in."""
        try:
            async with asyncio.timeout(timeout):
                return await self._client.request(
                    method, path, params=params, json=json, headers=headers, timeout=timeout
                )
        except (TimeoutError, httpx.TimeoutException):
            raise UpstreamUnavailable(self.system, "timeout") from None
        except httpx.TransportError:
            raise UpstreamUnavailable(self.system, "unreachable") from None
        except httpx.RequestError:
            raise UpstreamUnavailable(self.system, "bad_response") from None

    # --- hooks -----------------------------------------------------------------------------

    def _retry_delay(self, response: httpx.Response, attempt: int, waited: float) -> float | None:
        """Seconds to wait before trying again after this failed answer, or ``None`` to give up.

        ``attempt`` is the number of the attempt that failed (from 1), ``waited`` the seconds this
        call has slept so far. By default nothing is retried.
        """
        return None

    def _invalid_fields(self, response: httpx.Response) -> dict[str, str]:
        """Field → reason, from a 400/422 body that names them."""
        return {}

    def _error(self, response: httpx.Response) -> UpstreamError:
        """The error for a non-2xx answer. It names the system and a short word, nothing else."""
        status = response.status_code
        if status in (401, 403):
            return UpstreamUnavailable(self.system, "unauthorized")
        if status == 404:
            return UpstreamNotFound(self.system, "not_found")
        if status == 409:
            return UpstreamConflict(self.system, "conflict")
        if status == 412:
            return UpstreamConflict(self.system, "precondition_failed")
        if status in (400, 422):
            reason = "invalid" if status == 422 else "bad_request"
            return UpstreamInvalid(self.system, reason, self._invalid_fields(response))
        if status == 429:
            return UpstreamUnavailable(self.system, "rate_limited")
        if status == 503:
            return UpstreamUnavailable(self.system, "overloaded")
        if status >= 500:
            return UpstreamUnavailable(self.system, "error")
        return UpstreamUnavailable(self.system, "bad_response")


def _is_ok(body: Any) -> bool:
    return isinstance(body, dict) and body.get("status") == "ok"


def unique(keys: Iterable[str]) -> list[str]:
    """The keys without blanks and repeats, in first-seen order."""
    return [key for key in dict.fromkeys(keys) if key]


async def in_chunks(
    keys: Sequence[str], size: int, fetch: Callable[[list[str]], Awaitable[list[T]]]
) -> list[T]:
    """``fetch`` each run of at most ``size`` keys, all at once; the results joined in key order.

    On the first failure the other fetches are cancelled and that failure is raised.
    """
    batches = [list(keys[i : i + size]) for i in range(0, len(keys), size)]
    if len(batches) <= 1:
        return await fetch(batches[0]) if batches else []
    tasks = [asyncio.ensure_future(fetch(batch)) for batch in batches]
    try:
        results = await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        raise
    return [item for result in results for item in result]
