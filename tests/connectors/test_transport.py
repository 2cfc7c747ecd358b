"""The connectors' HTTP transport (connectors/transport.py) against real sockets, on both event
loops the gateway runs on (asyncio's own and uvloop, uvicorn's choice when installed): keep-alive
reuse, a server that closes idle connections, timeouts, refused connections, bodies larger than the
read buffer's high-water mark, and TLS."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from connectors.errors import UpstreamUnavailable
from connectors.sales import SalesConnector
from connectors.transport import HIGH_WATER, AsyncioBackend, pooled_transport

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Server"], Awaitable[None]]


def run(loop: str, scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(scenario())


class Server:
    """A small HTTP/1.1 server: ``handler`` answers each connection's requests."""

    def __init__(self, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.connections = 0
        self.requests = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"{'https' if self.ssl_context else 'http'}://{'localhost' if self.ssl_context else '127.0.0.1'}:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer, self)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bool:
        """One request's head (the tests send no bodies); False at the end of the connection."""
        head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
        if not head:
            return False
        self.requests += 1
        return True


def response(body: bytes, *, close: bool = False) -> bytes:
    headers = f"HTTP/1.1 200 OK\r\ncontent-length: {len(body)}\r\ncontent-type: text/plain\r\n"
    if close:
        headers += "connection: close\r\n"
    return headers.encode() + b"\r\n" + body


async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
    while await server.read_request(reader):
        writer.write(response(b"hello %d" % server.requests))
        await writer.drain()


async def one_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
    """Answers one request as keep-alive, then closes the connection while it is idle (as servers
    do when their keep-alive timeout is shorter than the client's)."""
    if await server.read_request(reader):
        writer.write(response(b"once"))
        await writer.drain()
        await asyncio.sleep(0.05)


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
    await server.read_request(reader)
    await asyncio.sleep(10)


BIG = bytes(range(256)) * (3 * HIGH_WATER // 256 + 7)  # three times the high-water mark, and then some


async def big_and_slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
    while await server.read_request(reader):
        data = response(BIG)
        for start in range(0, len(data), 100_000):  # in pieces, with pauses between them
            writer.write(data[start : start + 100_000])
            await writer.drain()
            await asyncio.sleep(0.005)


def client(server: Server, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=pooled_transport(
            connections=4, ssl_context=kwargs.pop("ssl_context", ssl.create_default_context())
        ),
        base_url=server.url,
        **kwargs,
    )


@pytest.mark.parametrize("loop", LOOPS)
def test_sends_through_the_asyncio_backend_and_reuses_the_connection(loop: str) -> None:
    async def scenario() -> None:
        async with Server(keep_alive) as server, client(server) as http:
            assert isinstance(http._transport._pool._network_backend, AsyncioBackend)  # type: ignore[attr-defined]
            answers = [(await http.get("/x")).text for _ in range(5)]
            assert answers == [f"hello {n}" for n in range(1, 6)]
            assert server.connections == 1  # keep-alive: one connection for five requests

    run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_connection_the_server_closed_while_idle_is_not_reused(loop: str) -> None:
    async def scenario() -> None:
        async with Server(one_then_close) as server, client(server) as http:
            for _ in range(3):
                assert (await http.get("/x")).text == "once"
                await asyncio.sleep(0.1)  # the server closes the idle connection meanwhile
            assert server.connections == 3  # each request on a fresh connection, none failed

    run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_server_that_does_not_answer_is_a_read_timeout(loop: str) -> None:
    async def scenario() -> None:
        async with Server(silent) as server, client(server, timeout=0.2) as http:
            started = time.monotonic()
            with pytest.raises(httpx.ReadTimeout):
                await http.get("/x")
            assert time.monotonic() - started < 2

    run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_refused_connection_is_a_connect_error(loop: str) -> None:
    async def scenario() -> None:
        async with Server(keep_alive) as server:
            url = server.url
        async with httpx.AsyncClient(
            transport=pooled_transport(connections=1, ssl_context=ssl.create_default_context())
        ) as http:
            with pytest.raises(httpx.ConnectError):
                await http.get(url + "/x")

    run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_body_larger_than_the_read_buffer_arrives_whole(loop: str) -> None:
    async def scenario() -> None:
        async with Server(big_and_slow) as server, client(server) as http:
            for _ in range(2):
                answer = await http.get("/big")
                assert answer.content == BIG
            assert server.connections == 1

    run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_https(loop: str, tmp_path: Path) -> None:
    server_context, client_context = _tls_contexts(tmp_path)

    async def scenario() -> None:
        async with Server(keep_alive, ssl_context=server_context) as server:
            async with client(server, ssl_context=client_context) as http:
                assert (await http.get("/x")).text == "hello 1"
                assert (await http.get("/x")).text == "hello 2"
            assert server.connections == 1
        async with Server(big_and_slow, ssl_context=server_context) as server:
            async with client(server, ssl_context=client_context) as http:
                for _ in range(2):  # more than the read buffer's high-water mark, twice, over TLS
                    assert (await http.get("/big")).content == BIG
            assert server.connections == 1
        # a client that does not trust the server's certificate fails, as a connect error
        async with (
            Server(keep_alive, ssl_context=server_context) as server,
            client(server, ssl_context=ssl.create_default_context()) as untrusting,
        ):
            with pytest.raises(httpx.ConnectError):
                await untrusting.get("/x")

    run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_connector_on_this_transport_names_the_failure_not_the_address(loop: str) -> None:
    async def scenario() -> None:
        async with Server(silent) as server:
            url = server.url
            async with SalesConnector(url, "key", timeout=0.2, max_attempts=1) as sales:
                with pytest.raises(UpstreamUnavailable) as raised:
                    await sales.accounts(["A100001"])
            assert raised.value.kind == "timeout"
            assert "127.0.0.1" not in str(raised.value)
        async with SalesConnector(url, "key", timeout=0.2, max_attempts=1) as sales:
            with pytest.raises(UpstreamUnavailable) as raised:
                await sales.accounts(["A100001"])  # the server is gone: refused
            assert raised.value.kind == "unreachable"
            assert "127.0.0.1" not in str(raised.value)

    run(loop, scenario)


def _tls_contexts(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for localhost: the server's context, and a client's that trusts it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert_path, key_path)
    client_context = ssl.create_default_context(cafile=str(cert_path))
    return server_context, client_context


@pytest.mark.parametrize("loop", LOOPS)
def test_a_reader_that_falls_behind_holds_a_bounded_buffer(loop: str) -> None:
    """The server sends 4 MB the client is not reading yet: the connection stops reading from the
    socket near the high-water mark (the rest waits in the kernel and the server), then delivers
    everything once read."""
    payload = bytes(range(256)) * (4 * 1024 * 1024 // 256)

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        writer.write(payload)
        await writer.drain()

    async def scenario() -> None:
        async with Server(flood) as server:
            port = int(server.url.rsplit(":", 1)[1])
            stream = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=5)
            await asyncio.sleep(0.3)
            buffered = stream._protocol.buffered  # type: ignore[attr-defined]
            assert 0 < buffered <= HIGH_WATER + 512 * 1024
            received = bytearray()
            while len(received) < len(payload):
                chunk = await stream.read(65536, timeout=5)
                assert chunk, "end of stream before the whole payload"
                received += chunk
            assert received == payload
            await stream.aclose()

    run(loop, scenario)
