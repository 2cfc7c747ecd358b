"""The connectors' HTTP transport: httpx and httpcore's connection pool, over asyncio's own
transports instead of anyio's socket streams.

httpcore 1.0 talks to the network through a *network backend* (its public ``AsyncNetworkBackend``
interface, ``httpcore.AsyncConnectionPool(network_backend=...)``). Under asyncio its default is
anyio's socket streams, and at the gateway's call rates that backend is the largest single cost in
the process (``bench/``, README "Performance"):

- Every time the pool assigns a request (each send, each release) it asks *every idle pooled
  connection* whether the server closed it: anyio builds a dict of socket attributes (with a
  ``getpeername()`` call) and httpcore then ``poll()``s the socket. With 16 connections per system
  under load that was about a quarter of the gateway's CPU (encode/httpcore#928, encode/httpx#3215).
- Every read and write opens an anyio cancel scope with its own timer; every write yields once.

``AsyncioBackend`` keeps httpcore's pool, HTTP/1.1 state machine and exceptions and replaces only
that layer: a protocol that keeps reading while a connection is idle (up to a high-water mark), so
"has the server closed it, or sent something unasked?" is answered from state, without a syscall;
a read returns what is buffered or waits on one future; a write waits only when the transport
pushes back. Timeouts and errors map to httpcore's own exceptions, which httpx maps to its own as
for its default transport.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Coroutine, Iterable
from typing import Any, cast

import httpcore
import httpx

# Stop reading from the socket once this much is buffered unread; resume below the low mark.
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024

SocketOption = tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]


class _Protocol(asyncio.Protocol):
    """One connection's receive buffer and state, fed by the event loop."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.eof = False  # the peer closed its side, or the connection is gone
        self.error: Exception | None = None  # why the connection was lost, if not cleanly
        self._reading_paused = False
        self._writing_paused = False
        self._reader: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None

    # --- called by the event loop ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > HIGH_WATER and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool | None:
        self.eof = True
        self._wake_reader()
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._wake_reader()
        self._wake_writer()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake_writer()

    def _wake_reader(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.set_result(None)

    def _wake_writer(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # --- called by the stream ---------------------------------------------------------------

    def take(self, max_bytes: int) -> bytes:
        chunk = self.chunks.popleft()
        if len(chunk) > max_bytes:
            self.chunks.appendleft(chunk[max_bytes:])
            chunk = chunk[:max_bytes]
        self.buffered -= len(chunk)
        if self._reading_paused and self.buffered < LOW_WATER and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        return chunk

    async def wait_readable(self, timeout: float | None) -> None:
        self._reader = asyncio.get_running_loop().create_future()
        await _wait(self._reader, timeout, httpcore.ReadTimeout)

    async def wait_drained(self, timeout: float | None) -> None:
        if not self._writing_paused:
            return
        self._drained = asyncio.get_running_loop().create_future()
        await _wait(self._drained, timeout, httpcore.WriteTimeout)


async def _wait(future: asyncio.Future[None], timeout: float | None, expired: type[Exception]) -> None:
    """Wait for ``future``; after ``timeout`` seconds raise ``expired`` instead."""
    if timeout is None:
        await future
        return
    timer = asyncio.get_running_loop().call_later(timeout, _expire, future, expired)
    try:
        await future
    finally:
        timer.cancel()


def _expire(future: asyncio.Future[None], expired: type[Exception]) -> None:
    if not future.done():
        future.set_exception(expired("timed out"))


class AsyncioStream(httpcore.AsyncNetworkStream):
    """One connection (TCP, or TLS over TCP) as httpcore's network stream."""

    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        protocol = self._protocol
        if not protocol.chunks:
            if not protocol.eof:
                await protocol.wait_readable(timeout)
            if not protocol.chunks:
                if protocol.error is not None:
                    raise httpcore.ReadError(type(protocol.error).__name__)
                return b""  # end of stream
        return protocol.take(max_bytes)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        if self._transport.is_closing():
            raise httpcore.WriteError("connection closed")
        self._transport.write(buffer)
        await self._protocol.wait_drained(timeout)
        if self._protocol.error is not None:
            raise httpcore.WriteError(type(self._protocol.error).__name__)

    async def aclose(self) -> None:
        self._transport.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport = await loop.start_tls(
                    self._transport, self._protocol, ssl_context, server_hostname=server_hostname
                )
        except TimeoutError:
            self._transport.close()
            raise httpcore.ConnectTimeout("TLS handshake timed out") from None
        except (OSError, ssl.SSLError) as exc:
            self._transport.close()
            raise httpcore.ConnectError(f"TLS handshake failed: {type(exc).__name__}") from None
        if transport is None:  # the peer closed the connection during the handshake
            raise httpcore.ConnectError("TLS handshake failed: connection closed")
        self._protocol.transport = transport  # flow control now goes through the TLS layer
        return AsyncioStream(transport, self._protocol)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # Asked of idle connections only: buffered bytes or a close mean the connection can't
            # be reused (h11 would read an unexpected response, or the end of the stream).
            return bool(self._protocol.chunks) or self._protocol.eof
        if info == "ssl_object":
            return self._transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        if info == "socket":
            return self._transport.get_extra_info("socket")
        return None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend on asyncio's transports (see the module docstring)."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        local = (local_address, 0) if local_address else None
        loop = asyncio.get_running_loop()
        return await _connected(
            loop.create_connection(_Protocol, host, port, local_addr=local), timeout, socket_options
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        return await _connected(loop.create_unix_connection(_Protocol, path), timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def _connected(
    connect: Coroutine[Any, Any, tuple[asyncio.BaseTransport, _Protocol]],
    timeout: float | None,
    socket_options: Iterable[SocketOption] | None,
) -> AsyncioStream:
    """The stream of the connection ``connect`` opens within ``timeout`` seconds, errors mapped to
    httpcore's (naming the kind of failure, never the address)."""
    try:
        async with asyncio.timeout(timeout):
            transport, protocol = await connect
    except TimeoutError:
        raise httpcore.ConnectTimeout("connect timed out") from None
    except OSError as exc:
        raise httpcore.ConnectError(f"connect failed: {type(exc).__name__}") from None
    transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
    if socket_options:
        sock = transport.get_extra_info("socket")
        for option in socket_options:
            sock.setsockopt(*option)
    return AsyncioStream(transport, protocol)


def pooled_transport(*, connections: int, ssl_context: ssl.SSLContext) -> httpx.AsyncHTTPTransport:
    """httpx's transport with a pool of ``connections`` keep-alive connections over
    ``AsyncioBackend``. httpx builds its pool without a way to pass a network backend, so the pool
    is built here with the settings httpx would use and put in its place
    (``tests/connectors/test_transport.py`` checks that httpx still sends through it)."""
    transport = httpx.AsyncHTTPTransport(verify=ssl_context)
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=ssl_context,
        max_connections=connections,
        max_keepalive_connections=connections,
        keepalive_expiry=httpx.Limits().keepalive_expiry,  # httpx's default
        network_backend=AsyncioBackend(),
    )
    return transport
