"""The connectors' HTTP transport: a small HTTP/1.1 keep-alive pool on asyncio's protocols, with
httptools (llhttp, already the gateway's server-side parser) reading the answers, under httpx's
transport interface (``httpx.AsyncBaseTransport``; the connectors keep ``httpx.Request`` and
``httpx.Response``, and tests still pass any httpx transport).

Why not httpcore's pool and h11 (what httpx ships): measured on S3 (64 clients, ``bench/``), the
gateway spent 1.5 × the CPU per answer of a sequential request, and the growth sat in httpcore's
pool (its lock, its request queue, a scan of every connection on each send and release: 0.47 →
1.81 ms an answer), h11's per-event state machine, anyio's cancel scopes (every running-loop
lookup a ``getpid()``) and one wake-up of the event loop per read; the previous session already
replaced httpcore's network layer (``bench/results/2026-12-04-throughput.md``). The upstreams speak
plain HTTP/1.1 JSON, one request per connection at a time, which needs little: this module is that
little, and the figures before and after are in ``bench/results/2026-12-04-throughput2.md``.

How an exchange runs (``PooledTransport.exchange``):

- An idle connection is taken from the pool without awaiting (LIFO; one idle longer than
  ``keepalive_expiry``, closed by the server, or that sent anything unasked is dropped); when none
  is idle and the pool is below ``connections`` one is opened, else the exchange waits for one.
- The request is written at once, whole; the answer is parsed as it arrives, in the protocol's
  ``data_received``. The moment its last byte is in, the connection goes back to the pool, the
  caller's ``on_end`` runs (the connectors free their in-flight slot there, so the next waiting
  call finds both a slot and a connection in the same loop iteration), and the response future
  is resolved.
- One timer per exchange: after ``wait`` seconds the future fails with a timeout (the caller stops
  waiting); the exchange itself may go on until ``hold`` seconds, so a system still working on a
  call keeps its connection (and the caller's slot) until it answers; then the connection is
  aborted. A cancelled caller likewise leaves the exchange to finish: a connection returns to the
  pool only after a complete answer, never in the middle of one.

Errors are httpx's own exceptions (``ConnectError``, ``ConnectTimeout``, ``PoolTimeout``,
``ReadTimeout``, ``ReadError``, ``RemoteProtocolError``, ``LocalProtocolError``,
``UnsupportedProtocol``), naming the kind of failure, never an address.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections import deque
from collections.abc import Callable
from typing import cast

import httptools
import httpx

__all__ = ["DEFAULT_KEEPALIVE_EXPIRY", "PooledTransport", "pooled_transport"]

DEFAULT_KEEPALIVE_EXPIRY = 5.0  # seconds an idle connection is kept (httpx's default)
DEFAULT_TIMEOUT = 5.0  # httpx's default, for requests that carry no timeout extension

OnEnd = Callable[[], None]
Origin = tuple[bytes, str, int]

_BAD_NAME = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9A-Za-z]")
_BAD_VALUE = re.compile(rb"[\x00\r\n]")
_BAD_TARGET = re.compile(rb"[\x00-\x20\x7f]")
_DEFAULT_PORTS = {b"http": 80, b"https": 443}
_EXTENSIONS = {"http_version": b"HTTP/1.1"}


class _Connection(asyncio.Protocol):
    """One keep-alive connection: at most one exchange at a time, its answer parsed as it arrives."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.lost = False  # the connection is gone (or going): never reused
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        # the exchange in progress (``_future is None`` and ``_busy`` false: idle)
        self._busy = False
        self._future: asyncio.Future[httpx.Response] | None = None
        self._request: httpx.Request | None = None
        self._on_end: OnEnd | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._hold_at = 0.0
        self._head_only = False
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._headers_done = False
        self._keep_alive = False
        self._complete = False
        self._extra = False  # bytes past the answer: the connection can't be reused

    # --- called by the event loop --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        if not self._busy:  # unasked bytes on an idle connection: its next answer would be wrong
            self._drop()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail(httpx.RemoteProtocolError("malformed answer"))
            return
        if self._complete:
            self._finish()

    def eof_received(self) -> bool | None:
        return None  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._busy:
            if self._headers_done and not self._complete and self._until_eof():
                self._complete = True  # a body delimited by the end of the connection
                self._finish()
            elif exc is None:
                self._fail(httpx.RemoteProtocolError("server disconnected"))
            else:
                self._fail(httpx.ReadError(type(exc).__name__))
        else:
            self.pool.forget(self)

    # --- called by the parser ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete:
            self._extra = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._complete:
            self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self._complete:
            return
        self._status = self._parser.get_status_code()
        self._headers_done = True
        self._keep_alive = self._parser.should_keep_alive()
        if self._head_only:
            self._complete = True  # no body follows an answer to HEAD, whatever its headers say

    def on_body(self, body: bytes) -> None:
        if not self._complete:
            self._body.append(body)

    def on_message_complete(self) -> None:
        if self._complete:
            return
        if 100 <= self._status < 200:  # an interim answer (100 Continue, 103): the real one follows
            self._status = 0
            self._headers = []
            self._body = []
            self._headers_done = False
            return
        self._complete = True

    # --- called by the pool ---------------------------------------------------------------------

    def start(
        self,
        request: httpx.Request,
        body: bytes,
        future: asyncio.Future[httpx.Response],
        wait: float,
        hold: float,
        on_end: OnEnd | None,
    ) -> None:
        """Write ``request`` and wait for its answer (see the module docstring)."""
        assert self.transport is not None and not self._busy
        head = _head(request)  # LocalProtocolError before anything is sent
        self._busy = True
        self._future = future
        self._request = request
        self._on_end = on_end
        self._head_only = request.method == "HEAD"
        self._status = 0
        self._headers = []
        self._body = []
        self._headers_done = self._complete = self._extra = False
        loop = self.pool.loop
        now = loop.time()
        self._hold_at = now + max(hold, wait)
        self._timer = loop.call_at(now + wait, self._expired)
        try:
            self.transport.write(head + body if body else head)
        except Exception as exc:  # a transport that refuses the write: the exchange ends here
            self._fail(httpx.WriteError(type(exc).__name__))

    def close(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.abort()

    # --- internals -----------------------------------------------------------------------------

    def _until_eof(self) -> bool:
        """Whether the body of the answer in progress ends with the connection (no length given)."""
        if self._status in (204, 304) or self._head_only:
            return False
        for name, value in self._headers:
            lower = name.lower()
            if lower == b"content-length" or (lower == b"transfer-encoding" and b"chunked" in value.lower()):
                return False
        return True

    def _expired(self) -> None:
        future = self._future
        if future is not None and not future.done():
            future.set_exception(httpx.ReadTimeout("timed out", request=self._request))
        loop = self.pool.loop
        if self._hold_at > loop.time() + 0.001:  # the caller stopped waiting; the call goes on
            self._timer = loop.call_at(self._hold_at, self._expired)
            return
        self._timer = None
        self._fail(httpx.ReadTimeout("timed out", request=self._request))

    def _end(self) -> tuple[asyncio.Future[httpx.Response] | None, httpx.Request | None, OnEnd | None]:
        future, request, on_end = self._future, self._request, self._on_end
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._busy = False
        self._future = self._request = None
        self._on_end = None
        return future, request, on_end

    def _finish(self) -> None:
        reusable = not self.lost and not self._extra and not self._head_only and self._keep_alive
        status, headers, body = self._status, self._headers, b"".join(self._body)
        self._headers = []
        self._body = []
        future, request, on_end = self._end()
        if reusable:
            self.pool.put(self)
        else:
            self._drop()
        if on_end is not None:
            on_end()
        if future is not None and not future.done():
            stream = httpx.ByteStream(body)
            response = httpx.Response(
                status, headers=headers, stream=stream, request=request, extensions=_EXTENSIONS
            )
            response.read()
            future.set_result(response)

    def _fail(self, error: Exception) -> None:
        future, _, on_end = self._end()
        self._drop()
        if on_end is not None:
            on_end()
        if future is not None and not future.done():
            future.set_exception(error)

    def _drop(self) -> None:
        if not self.lost:
            self.close()
        self.pool.forget(self)


class _Pool:
    """The connections to one origin: at most ``limit`` open (or opening) at once."""

    def __init__(self, transport: PooledTransport, origin: Origin, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self.origin = origin
        self.loop = loop
        self.idle: deque[_Connection] = deque()
        self.members: set[_Connection] = set()
        self.opening = 0
        self.waiters: deque[asyncio.Future[None]] = deque()

    @property
    def size(self) -> int:
        return len(self.members) + self.opening

    def take(self) -> _Connection | None:
        """An idle connection fit for reuse, without waiting; ``None`` when there is none."""
        idle = self.idle
        expiry = self.loop.time() - self.transport.keepalive_expiry
        while idle:
            connection = idle.pop()  # the most recently used: the others may expire
            if connection.lost:
                continue
            if connection.idle_since < expiry:
                connection.close()
                self.forget(connection)
                continue
            return connection
        return None

    def put(self, connection: _Connection) -> None:
        if self.transport.closed:
            connection.close()
            self.forget(connection)
            return
        connection.idle_since = self.loop.time()
        self.idle.append(connection)
        self._wake()

    def forget(self, connection: _Connection) -> None:
        if connection in self.members:
            self.members.discard(connection)
            if connection in self.idle:
                self.idle.remove(connection)
            self._wake()

    def _wake(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def acquire(self, deadline: float) -> _Connection:
        """An idle connection, or a new one when the pool has room; else wait for either, until
        ``deadline`` (``PoolTimeout``, or ``ConnectTimeout`` while connecting)."""
        while True:
            connection = self.take()
            if connection is not None:
                return connection
            if self.size < self.transport.connections:
                return await self._open(deadline)
            waiter = self.loop.create_future()
            self.waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter
            except BaseException as exc:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # woken just as it gave up: pass the turn on
                else:
                    waiter.cancel()
                    if waiter in self.waiters:
                        self.waiters.remove(waiter)
                if isinstance(exc, TimeoutError):
                    raise httpx.PoolTimeout("no connection free in time") from None
                raise

    async def _open(self, deadline: float) -> _Connection:
        scheme, host, port = self.origin
        secure = scheme == b"https"
        self.opening += 1
        try:
            async with asyncio.timeout_at(deadline):
                _, connection = await self.loop.create_connection(
                    lambda: _Connection(self),
                    host,
                    port,
                    ssl=self.transport.ssl_context if secure else None,
                    server_hostname=host if secure else None,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout("connect timed out") from None
        except OSError as exc:  # ssl.SSLError included
            raise httpx.ConnectError(f"connect failed: {type(exc).__name__}") from None
        finally:
            self.opening -= 1
            self._wake()  # the room this attempt held is a connection now, or free again
        self.members.add(connection)
        return connection


class PooledTransport(httpx.AsyncBaseTransport):
    """httpx's transport interface over the pool (see the module docstring)."""

    def __init__(
        self,
        *,
        connections: int,
        ssl_context: ssl.SSLContext | None = None,
        keepalive_expiry: float = DEFAULT_KEEPALIVE_EXPIRY,
    ) -> None:
        if connections < 1:
            raise ValueError("connections must be at least 1")
        self.connections = connections
        self.ssl_context = ssl_context
        self.keepalive_expiry = keepalive_expiry
        self.closed = False
        self._pools: dict[Origin, _Pool] = {}
        self._opening: set[asyncio.Task[None]] = set()

    def exchange(
        self,
        request: httpx.Request,
        *,
        wait: float,
        hold: float | None = None,
        on_end: OnEnd | None = None,
    ) -> asyncio.Future[httpx.Response]:
        """Send ``request``; the future of its answer (body read), or of httpx's exception.

        ``wait``: seconds until the future fails with ``ReadTimeout`` (``PoolTimeout`` or
        ``ConnectTimeout`` before the request went out). ``hold``: seconds the exchange may go on
        after that (default ``wait``), holding its connection, before the connection is aborted.
        ``on_end``: run exactly once when the exchange is over: answered, failed, aborted, or never
        sent (then before the future fails). Cancelling the future does not end the exchange.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[httpx.Response] = loop.create_future()
        try:
            if self.closed:
                raise httpx.ConnectError("transport closed")
            body = _body(request)
            pool = self._pool(request.url, loop)
            connection = pool.take()
            if connection is not None:
                try:
                    connection.start(request, body, future, wait, wait if hold is None else hold, on_end)
                except BaseException:
                    pool.put(connection)  # nothing was sent on it
                    raise
                return future
        except httpx.HTTPError as exc:
            if on_end is not None:
                on_end()
            future.set_exception(exc)
            return future
        task = loop.create_task(self._open_and_start(pool, request, body, future, wait, hold, on_end))
        self._opening.add(task)
        task.add_done_callback(self._opening.discard)
        return future

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """httpx's interface: the request's timeout extension, its largest value, bounds the whole
        exchange (httpx's own pool bounds each phase and each read separately)."""
        await request.aread()
        timeout = request.extensions.get("timeout", {})
        seconds = max((value for value in timeout.values() if value is not None), default=DEFAULT_TIMEOUT)
        return await self.exchange(request, wait=seconds)

    async def aclose(self) -> None:
        self.closed = True
        for task in list(self._opening):
            task.cancel()
        for pool in self._pools.values():
            for connection in list(pool.members):
                connection.close()
            for waiter in pool.waiters:
                waiter.cancel()

    def _pool(self, url: httpx.URL, loop: asyncio.AbstractEventLoop) -> _Pool:
        scheme = url.raw_scheme
        port = url.port or _DEFAULT_PORTS.get(scheme)
        if port is None:
            raise httpx.UnsupportedProtocol("only http and https are supported")
        origin = (scheme, url.host, port)
        pool = self._pools.get(origin)
        if pool is None or pool.loop is not loop:
            pool = self._pools[origin] = _Pool(self, origin, loop)
        return pool

    async def _open_and_start(
        self,
        pool: _Pool,
        request: httpx.Request,
        body: bytes,
        future: asyncio.Future[httpx.Response],
        wait: float,
        hold: float | None,
        on_end: OnEnd | None,
    ) -> None:
        """The slow path: wait for room in the pool or a new connection, then start."""
        started = pool.loop.time()
        try:
            connection = await pool.acquire(started + wait)
        except (httpx.HTTPError, asyncio.CancelledError) as exc:
            if on_end is not None:
                on_end()
            if not future.done():
                if isinstance(exc, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(exc)
            return
        if future.done() or self.closed:  # the caller stopped waiting: nothing is sent
            pool.put(connection)
            if on_end is not None:
                on_end()
            return
        spent = pool.loop.time() - started
        hold_left = (wait if hold is None else hold) - spent
        try:
            connection.start(request, body, future, wait - spent, hold_left, on_end)
        except httpx.HTTPError as exc:
            pool.put(connection)
            if on_end is not None:
                on_end()
            future.set_exception(exc)


def _body(request: httpx.Request) -> bytes:
    try:
        body = request.content
    except httpx.RequestNotRead:
        raise httpx.LocalProtocolError("a streamed request body must be read first") from None
    if body and "transfer-encoding" in request.headers:  # a streamed body, read whole: one chunk
        return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    return body


def _head(request: httpx.Request) -> bytes:
    """The request line and headers, checked: nothing a header or the target could smuggle."""
    target = request.url.raw_path
    if _BAD_TARGET.search(target):
        raise httpx.LocalProtocolError("invalid request target")
    parts = [request.method.encode("ascii"), b" ", target, b" HTTP/1.1\r\n"]
    for name, value in request.headers.raw:
        if _BAD_NAME.search(name) or _BAD_VALUE.search(value):
            raise httpx.LocalProtocolError("invalid header")
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def pooled_transport(*, connections: int, ssl_context: ssl.SSLContext) -> PooledTransport:
    """The connectors' transport: ``connections`` keep-alive connections per origin."""
    return PooledTransport(connections=connections, ssl_context=ssl_context)
