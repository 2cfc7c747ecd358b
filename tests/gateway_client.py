"""The gateway in-process for request-handling tests that need no upstream data.

The upstream URLs point at a closed local port, so a test that did reach a system would see
``UPSTREAM_UNAVAILABLE`` at once instead of data. The apps share one set of connectors (building the
pooled clients is the slow part of a first request) and run their lifespan only when asked to.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.auth import issue_token
from gateway.settings import load_settings
from gateway.upstreams import build_upstreams
from schema.loaders import Upstreams

SECRET = "request-tests-secret-0123456789abcdef"
CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens, connections are refused at once
GQL = "application/graphql-response+json"


_ENVIRON = {
    "CG_JWT_SECRET": SECRET,
    "CG_SALES_URL": CLOSED,
    "CG_SUPPORT_URL": CLOSED,
    "CG_CONTRACTS_URL": CLOSED,
    "CG_CACHE": "false",
}
_shared: list[Upstreams] = []


def make_app(*, shared_upstreams: bool = True, **env: str) -> Starlette:
    settings = load_settings(environ={**_ENVIRON, **env})
    if not shared_upstreams:
        return create_app(settings)
    if not _shared:
        _shared.append(build_upstreams(settings))
    return create_app(settings, _shared[0])


@contextlib.asynccontextmanager
async def gateway(
    env: Mapping[str, str] | None = None,
    *,
    client_address: tuple[str, int] = ("127.0.0.1", 50000),
    lifespan: bool = False,
    **more: str,
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to a fresh gateway (``CG_*`` settings as a mapping or keyword arguments).
    With its lifespan, the gateway gets a database file of its own unless one is given: two gateways of
    one test (or a demo running beside the suite) never share ``var/gateway.db``'s write lock."""
    settings = {**(env or {}), **more}
    async with contextlib.AsyncExitStack() as stack:
        if lifespan and "CG_DATABASE_URL" not in settings:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="cg-gateway-"))
            settings["CG_DATABASE_URL"] = f"sqlite+aiosqlite:///{folder}/gateway.db"
        app = make_app(shared_upstreams=not lifespan, **settings)
        transport = httpx.ASGITransport(app=app, client=client_address)
        if lifespan:
            await stack.enter_async_context(app.router.lifespan_context(app))
        yield await stack.enter_async_context(
            httpx.AsyncClient(transport=transport, base_url="http://gateway")
        )


def bearer(roles: list[str] | None = None, sub: str = "u-1021", **claims: Any) -> dict[str, str]:
    token = issue_token(SECRET, sub=sub, roles=roles or ["sales_rep"], **claims)
    return {"Authorization": f"Bearer {token}"}


def codes(body: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in body.get("errors", [])]


def assert_error_shape(body: Any) -> None:
    """The documented error shape: errors with a message and ``extensions.code``, nothing internal."""
    assert isinstance(body, dict), body
    assert isinstance(body.get("errors"), list) and body["errors"], body
    for error in body["errors"]:
        assert isinstance(error["message"], str) and error["message"], error
        assert isinstance(error["extensions"]["code"], str), error
        text = str(error)
        assert "Traceback" not in text and 'File "' not in text and ".py" not in text, error
