"""The server's own bounds, tested over real sockets against uvicorn running the gateway as ``serve``
does: a huge request head is 431, a head or body that trickles in is 408, and a client that hangs up
mid-request is logged as 499, not as a server error (the review: 20 × 10 MB headers accepted, 1,000
slow connections held 60 s, client aborts logged as 500)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from gateway.logs import configure_logging
from gateway.server import guarded_http
from gateway.settings import load_settings

from .gateway_client import _ENVIRON, make_app

LIMITS = {"CG_MAX_HEADER_BYTES": "8192", "CG_HEADER_TIMEOUT": "0.5", "CG_BODY_TIMEOUT": "0.5"}


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[int, io.StringIO]]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    settings = load_settings(environ={**_ENVIRON, **LIMITS})
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = make_app(**LIMITS)
    config = uvicorn.Config(app, log_level="warning", lifespan="off", http=guarded_http(settings))
    running = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(running.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not running.started:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        yield port, stream
    finally:
        running.should_exit = True
        thread.join(timeout=10)
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def _exchange(port: int, data: bytes, *, wait: float = 0.0, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        with contextlib.suppress(OSError):  # the server may close before it read it all: its answer counts
            conn.sendall(data)
        time.sleep(wait)
        answer = b""
        while True:
            try:
                chunk = conn.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            answer += chunk
        return answer


def test_a_huge_request_head_is_431(server: tuple[int, io.StringIO]) -> None:
    port, _ = server
    head = b"POST /graphql HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"a" * 200_000 + b"\r\n\r\n"
    started = time.monotonic()
    answer = _exchange(port, head)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:80]
    assert time.monotonic() - started < 2


def test_a_head_that_trickles_in_is_408(server: tuple[int, io.StringIO]) -> None:
    port, _ = server
    started = time.monotonic()
    answer = _exchange(port, b"POST /graphql HTTP/1.1\r\nHost: x\r\n")  # and then nothing
    assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
    assert time.monotonic() - started < 3


def test_a_body_that_trickles_in_is_408(server: tuple[int, io.StringIO]) -> None:
    port, _ = server
    head = (
        b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    )
    answer = _exchange(port, head)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
    assert b"did not arrive within 0.5 s" in answer


def test_a_client_that_hangs_up_is_499_not_a_server_error(server: tuple[int, io.StringIO]) -> None:
    port, stream = server
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(
            b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        time.sleep(0.1)
    time.sleep(0.3)
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("message") == "request"]
    assert requests and requests[-1]["status"] == 499 and requests[-1]["level"] == "INFO"
    assert not [line for line in lines if line["level"] == "ERROR"]


def test_normal_requests_still_pass(server: tuple[int, io.StringIO]) -> None:
    port, _ = server
    body = b'{"query": "{ __typename }"}'
    request = (
        b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )
    answer = _exchange(port, request)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b'{"data":{"__typename":"Query"}}')
