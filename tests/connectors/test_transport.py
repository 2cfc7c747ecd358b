"""The connectors' HTTP transport (connectors/transport.py) against real sockets, on both event
loops the gateway runs on (asyncio's own and uvloop, uvicorn's choice when installed): keep-alive
reuse, servers that close idle connections or say ``Connection: close``, answers in pieces,
chunked, length-delimited and close-delimited bodies, timeouts and the time an exchange may go on
after its caller stopped waiting, refused connections, malformed answers, pool limits, cancellation
(never a half-read connection back in the pool), header injection, and TLS."""

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

from connectors.contracts import ContractsConnector
from connectors.errors import UpstreamUnavailable
from connectors.resilience import deadline_scope
from connectors.sales import SalesConnector
from connectors.transport import PooledTransport, pooled_transport

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
        self.active = 0  # requests being worked on (``slow``)
        self.peak = 0
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


BIG = bytes(range(256)) * (3 * 256 * 1024 // 256 + 7)  # 768 KiB and then some: many reads


async def big_and_slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
    while await server.read_request(reader):
        data = response(BIG)
        for start in range(0, len(data), 100_000):  # in pieces, with pauses between them
            writer.write(data[start : start + 100_000])
            await writer.drain()
            await asyncio.sleep(0.005)


def client(server: Server, connections: int = 4, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=pooled_transport(
            connections=connections, ssl_context=kwargs.pop("ssl_context", ssl.create_default_context())
        ),
        base_url=server.url,
        **kwargs,
    )


def request(server: Server, path: str = "/x", **kwargs: Any) -> httpx.Request:
    return httpx.Request("GET", server.url + path, **kwargs)


@pytest.mark.parametrize("loop", LOOPS)
def test_sends_through_the_pool_and_reuses_the_connection(loop: str) -> None:
    async def scenario() -> None:
        async with Server(keep_alive) as server, client(server) as http:
            assert isinstance(http._transport, PooledTransport)
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


async def pieces(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
    """Each answer in small pieces with pauses: head and body split across many reads."""
    while await server.read_request(reader):
        data = response(b"piece by piece %d" % server.requests)
        for start in range(0, len(data), 7):
            writer.write(data[start : start + 7])
            await writer.drain()
            await asyncio.sleep(0.001)


async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
    while await server.read_request(reader):
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for part in (b"chu", b"nked ", b"%d" % server.requests):
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
            await asyncio.sleep(0.002)
        writer.write(b"0\r\n\r\n")
        await writer.drain()


async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
    """No length, no chunks: the body ends with the connection (HTTP/1.0 style)."""
    if await server.read_request(reader):
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil ")
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(b"the end")
        await writer.drain()


async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
    if await server.read_request(reader):
        writer.write(response(b"bye", close=True))
        await writer.drain()
        await asyncio.sleep(1)  # keeps the socket open: the client must not reuse it anyway


def slow(delay: float) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        while await server.read_request(reader):
            number = server.requests
            server.active += 1
            server.peak = max(server.peak, server.active)
            await asyncio.sleep(delay)
            server.active -= 1
            writer.write(response(b"hello %d" % number))
            await writer.drain()

    return handler


@pytest.mark.parametrize("loop", LOOPS)
def test_answers_in_pieces_chunked_and_close_delimited_arrive_whole(loop: str) -> None:
    async def scenario() -> None:
        async with Server(pieces) as server, client(server) as http:
            assert [(await http.get("/x")).text for _ in range(2)] == ["piece by piece 1", "piece by piece 2"]
            assert server.connections == 1
        async with Server(chunked) as server, client(server) as http:
            assert [(await http.get("/x")).text for _ in range(2)] == ["chunked 1", "chunked 2"]
            assert server.connections == 1
        async with Server(until_close) as server, client(server) as http:
            assert [(await http.get("/x")).text for _ in range(2)] == ["until the end"] * 2
            assert server.connections == 2  # ended by the close: never reused
        async with Server(closing) as server, client(server) as http:
            assert [(await http.get("/x")).text for _ in range(2)] == ["bye", "bye"]
            assert server.connections == 2  # "connection: close" is honoured

    run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_the_pool_never_opens_more_connections_than_its_limit(loop: str) -> None:
    async def scenario() -> None:
        async with Server(slow(0.02)) as server, client(server, connections=3) as http:
            answers = await asyncio.gather(*(http.get("/x") for _ in range(12)))
            assert sorted(answer.text for answer in answers) == sorted(f"hello {n}" for n in range(1, 13))
            assert server.connections == 3
            assert server.peak == 3

    run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_full_pool_is_a_pool_timeout(loop: str) -> None:
    async def scenario() -> None:
        async with Server(slow(0.5)) as server:
            transport = PooledTransport(connections=1)
            first = transport.exchange(request(server), wait=2)
            await asyncio.sleep(0.05)
            with pytest.raises(httpx.PoolTimeout):
                await transport.exchange(request(server), wait=0.1)
            assert (await first).text == "hello 1"
            assert server.requests == 1  # the one that timed out in the queue was never sent
            await transport.aclose()

    run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_cancelled_caller_leaves_no_half_read_connection_in_the_pool(loop: str) -> None:
    async def scenario() -> None:
        async with Server(slow(0.2)) as server, client(server, connections=1) as http:
            task = asyncio.ensure_future(http.get("/x"))
            await asyncio.sleep(0.05)  # the request is out, its answer not yet
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # the next request waits for the first exchange to end, then gets its own answer
            assert (await http.get("/x")).text == "hello 2"
            assert server.connections == 1

    run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_caller_stops_waiting_but_the_exchange_holds_its_connection_until_answered(loop: str) -> None:
    async def scenario() -> None:
        async with Server(slow(0.3)) as server:
            transport = PooledTransport(connections=1)
            ended: list[float] = []
            started = time.monotonic()
            answer = transport.exchange(
                request(server), wait=0.05, hold=5, on_end=lambda: ended.append(time.monotonic() - started)
            )
            with pytest.raises(httpx.ReadTimeout):
                await answer
            assert time.monotonic() - started < 0.25 and not ended  # the caller is free, the call goes on
            await asyncio.sleep(0.4)
            assert len(ended) == 1 and 0.25 < ended[0] < 0.4  # over when the server answered
            assert (await transport.exchange(request(server), wait=2)).text == "hello 2"
            assert server.connections == 1  # the answered connection was reused
            await transport.aclose()

    run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_an_exchange_past_its_hold_time_closes_the_connection(loop: str) -> None:
    async def scenario() -> None:
        async with Server(silent) as server:
            transport = PooledTransport(connections=1)
            ended: list[float] = []
            started = time.monotonic()
            answer = transport.exchange(
                request(server), wait=0.05, hold=0.2, on_end=lambda: ended.append(time.monotonic() - started)
            )
            with pytest.raises(httpx.ReadTimeout):
                await answer
            await asyncio.sleep(0.3)
            assert len(ended) == 1 and 0.15 < ended[0] < 0.3
            answer = transport.exchange(request(server), wait=0.05)
            with pytest.raises(httpx.ReadTimeout):
                await answer
            assert server.connections == 2  # the held connection was closed, not reused
            await transport.aclose()

    run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_malformed_answer_is_a_protocol_error_and_its_connection_is_dropped(loop: str) -> None:
    async def garbage_then_good(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        while await server.read_request(reader):
            writer.write(b"HTTP/1.1 2OO OK\r\n\r\n" if server.requests == 1 else response(b"fine"))
            await writer.drain()

    async def scenario() -> None:
        async with Server(garbage_then_good) as server, client(server) as http:
            with pytest.raises(httpx.RemoteProtocolError):
                await http.get("/x")
            assert (await http.get("/x")).text == "fine"
            assert server.connections == 2

    run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_connection_that_sends_unasked_bytes_is_not_reused(loop: str) -> None:
    async def chatty(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        while await server.read_request(reader):
            writer.write(response(b"hello %d" % server.requests))
            await writer.drain()
            await asyncio.sleep(0.02)
            writer.write(response(b"nobody asked"))  # an answer to no request
            await writer.drain()

    async def scenario() -> None:
        async with Server(chatty) as server, client(server) as http:
            assert (await http.get("/x")).text == "hello 1"
            await asyncio.sleep(0.1)
            assert (await http.get("/x")).text == "hello 2"
            assert server.connections == 2

    run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_an_idle_connection_past_its_keep_alive_expiry_is_not_reused(loop: str) -> None:
    async def scenario() -> None:
        async with Server(keep_alive) as server:
            transport = PooledTransport(connections=2, keepalive_expiry=0.05)
            assert (await transport.exchange(request(server), wait=2)).text == "hello 1"
            assert (await transport.exchange(request(server), wait=2)).text == "hello 2"
            await asyncio.sleep(0.1)
            assert (await transport.exchange(request(server), wait=2)).text == "hello 3"
            assert server.connections == 2
            await transport.aclose()

    run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_header_or_target_that_would_smuggle_a_request_is_never_sent(loop: str) -> None:
    async def scenario() -> None:
        async with Server(keep_alive) as server:
            transport = PooledTransport(connections=1)
            ended: list[bool] = []
            sneaky = request(server, headers={"X-Key": "a\r\nGET /admin HTTP/1.1"})
            with pytest.raises(httpx.LocalProtocolError):
                await transport.exchange(sneaky, wait=2, on_end=lambda: ended.append(True))
            assert ended == [True]
            assert (await transport.exchange(request(server), wait=2)).text == "hello 1"
            assert server.requests == 1
            await transport.aclose()

    run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_post_body_reaches_the_server(loop: str) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            body = await reader.readexactly(length)
            writer.write(response(body))
            await writer.drain()

    async def scenario() -> None:
        async with Server(echo) as server, client(server) as http:
            assert (await http.post("/x", json={"a": "b"})).json() == {"a": "b"}
            assert (await http.post("/x", content=b"twice")).text == "twice"
            assert server.connections == 1

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


def json_after(delay: float) -> Handler:
    """A register-like system: every answer an empty JSON list, ``delay`` seconds after the request."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        while await server.read_request(reader):
            server.active += 1
            server.peak = max(server.peak, server.active)
            await asyncio.sleep(delay)
            server.active -= 1
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n[]")
            await writer.drain()

    return handler


@pytest.mark.parametrize("loop", LOOPS)
def test_a_queued_call_goes_out_in_the_loop_turn_that_frees_its_slot(loop: str) -> None:
    """The register's 4 slots: a call waiting for one is sent from the callback that read the last
    byte of the call before it, not a turn of the event loop later (under load each turn is other
    requests' work, with the slot idle meanwhile)."""

    async def scenario() -> None:
        running = asyncio.get_running_loop()
        turns = 0

        def tick() -> None:
            nonlocal turns, handle
            turns += 1
            handle = running.call_soon(tick)

        handle = running.call_soon(tick)
        sent: list[int] = []
        ended: list[int] = []
        try:
            async with Server(json_after(0.02)) as server:
                async with ContractsConnector(server.url, "u", "p", max_in_flight=1) as register:
                    transport = register._transport
                    assert isinstance(transport, PooledTransport)
                    exchange = transport.exchange

                    def recording(request: httpx.Request, **options: Any) -> asyncio.Future[httpx.Response]:
                        sent.append(turns)
                        on_end = options["on_end"]

                        def end() -> None:
                            ended.append(turns)
                            on_end()

                        return exchange(request, **{**options, "on_end": end})

                    transport.exchange = recording  # type: ignore[method-assign]
                    answers = await asyncio.gather(*(register.contracts(f"T-{i}") for i in range(4)))
                assert answers == [[]] * 4
                assert server.peak == 1 and server.requests == 4
        finally:
            handle.cancel()
        assert sent[1:] == ended[:-1]  # each next call sent in the very turn the previous one ended

    run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_queued_calls_that_give_up_pass_their_turn_on(loop: str) -> None:
    """Behind a bound of 1: a queued call whose request deadline passes fails with ``timeout``
    without being sent, a cancelled one likewise; the slot goes on to the calls still waiting."""

    async def scenario() -> None:
        async with (
            Server(json_after(0.1)) as server,
            ContractsConnector(server.url, "u", "p", max_in_flight=1, max_attempts=1) as register,
        ):
            first = asyncio.ensure_future(register.contracts("T-1"))
            await asyncio.sleep(0.01)
            with deadline_scope(0.05):
                hurried = asyncio.ensure_future(register.contracts("T-2"))
            cancelled = asyncio.ensure_future(register.contracts("T-3"))
            patient = asyncio.ensure_future(register.contracts("T-4"))
            await asyncio.sleep(0.01)
            cancelled.cancel()
            with pytest.raises(UpstreamUnavailable) as raised:
                await hurried
            assert raised.value.kind == "timeout"
            assert await first == [] and await patient == []
            assert cancelled.cancelled()
            assert server.requests == 2 and server.peak == 1  # only the first and the patient one
            assert register.in_flight == 0 and not register._slots.locked()

    run(loop, scenario)
