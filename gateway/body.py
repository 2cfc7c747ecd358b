"""Reading a request body, bounded: at most ``limit`` bytes (a larger declared or streamed body is
refused without reading much more of it) within ``seconds`` (a body that trickles in to hold the
connection is refused). The one body reader of the gateway: GraphQL (``gateway/http.py``) and the
webhooks (``gateway/events/receiver.py``) each turn the refusals into their own answers."""

from __future__ import annotations

import asyncio

from starlette.requests import Request

__all__ = ["BodyTooLarge", "BodyTooSlow", "read_body"]


class BodyTooLarge(Exception):
    """The body is (or says it is) larger than the limit."""


class BodyTooSlow(Exception):
    """The body did not arrive in time."""


async def read_body(request: Request, limit: int, seconds: float) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.strip().isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge
                chunks.append(chunk)
    except TimeoutError:
        raise BodyTooSlow from None
    return b"".join(chunks)
