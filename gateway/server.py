"""The HTTP server's own limits, below the application: how large and how slow a request's head may be.

uvicorn's fast parser (httptools) keeps reading a request head for as long and as large as a client
sends it: the outside review had 20 × 10 MB ``Authorization`` headers accepted and 1,000 slow
connections held for 60 s. ``guarded_http(settings)`` is uvicorn's httptools protocol with two
bounds, given to ``uvicorn.run(http=...)`` by ``serve``, its workers and the demo:

- a head (request line and headers) larger than ``CG_MAX_HEADER_BYTES`` is answered ``431`` and the
  connection closed, before more of it is kept;
- a head not complete ``CG_HEADER_TIMEOUT`` seconds after it began is answered ``408`` and closed.

The body has its own bound in the view (``CG_BODY_TIMEOUT``, ``gateway/http.py``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .settings import Settings, load_settings

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class GuardedHttpTools(HttpToolsProtocol):
    max_head_bytes = 65_536
    head_timeout = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._in_head = True
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head()

    def _start_head(self) -> None:
        self._in_head, self._head_bytes = True, 0
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_too_slow)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_head:
            self._start_head()  # a keep-alive connection's next request

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._refuse(431, f"The request head is over {self.max_head_bytes} bytes.")
                return
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self._refuse(408, f"The request head did not arrive within {self.head_timeout:g} s.")

    def _refuse(self, status: int, message: str) -> None:
        self._in_head = False
        body = message.encode()
        head = b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n" % (status, _REASONS[status])
        self.transport.write(head + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body) + body)
        self.transport.close()


class GatewayHttp(GuardedHttpTools):
    """The protocol ``serve`` and its workers use: the limits of the environment's settings (a worker
    process builds its own from ``CG_*`` and the config file, as it builds its app)."""

    _configured = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        cls = type(self)
        if not cls._configured:
            settings = load_settings()
            cls.max_head_bytes, cls.head_timeout = settings.max_header_bytes, settings.header_timeout
            cls._configured = True
        super().__init__(*args, **kwargs)


def guarded_http(settings: Settings) -> type[GuardedHttpTools]:
    """The protocol class for ``uvicorn.run(http=...)`` with this deployment's limits."""
    return type(
        "GatewayHttp",
        (GuardedHttpTools,),
        {"max_head_bytes": settings.max_header_bytes, "head_timeout": settings.header_timeout},
    )
