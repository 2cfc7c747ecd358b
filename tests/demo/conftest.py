"""One set of running demo systems for the session, and HTTP clients that check every answer
against the OpenAPI documents in ``demo/openapi/``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

import httpx
import pytest
from openapi_core import OpenAPI
from openapi_core.templating.paths.exceptions import PathError
from openapi_core.testing import MockRequest, MockResponse

from demo.data import DemoExamples
from demo.servers import SYSTEMS, DemoSystems

ANCHOR = date(2025, 6, 30)
CUSTOMERS = 300
SEED = 7
OPENAPI_DIR = Path(__file__).resolve().parents[2] / "demo" / "openapi"


def openapi_pair(response: httpx.Response) -> tuple[MockRequest, MockResponse]:
    """The httpx exchange as openapi-core's raw request and response."""
    request = response.request
    url = request.url
    return (
        MockRequest(
            f"{url.scheme}://{url.netloc.decode()}",
            request.method,
            url.path,
            args=dict(url.params),
            headers=dict(request.headers),
            data=request.content or None,
            content_type=request.headers.get("content-type", ""),
        ),
        MockResponse(
            response.content,
            response.status_code,
            headers=dict(response.headers),
            content_type=response.headers.get("content-type", ""),
        ),
    )


def check_against(spec: OpenAPI, response: httpx.Response) -> None:
    """Raise when the answer breaks the OpenAPI document (paths it does not describe are skipped)."""
    response.read()
    if response.request.url.path.startswith("/_demo/"):
        return
    try:
        spec.validate_response(*openapi_pair(response))
    except PathError:
        return


@pytest.fixture(scope="session")
def specs() -> dict[str, OpenAPI]:
    return {name: OpenAPI.from_file_path(str(OPENAPI_DIR / f"{name}.openapi.yaml")) for name in SYSTEMS}


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoSystems]:
    systems = DemoSystems(
        tmp_path_factory.mktemp("demo-data"),
        customers=CUSTOMERS,
        seed=SEED,
        anchor=ANCHOR,
        sales_port=0,
        support_port=0,
        contracts_port=0,
        support_rate=10_000,  # the rate limit has its own test, with the default rate
        contracts_latency_ms=(2.0, 10.0),
    )
    with systems:
        yield systems


@pytest.fixture(scope="session")
def examples(demo: DemoSystems) -> DemoExamples:
    return demo.examples()


ClientFactory = Callable[..., httpx.Client]


@pytest.fixture
def client(demo: DemoSystems, specs: dict[str, OpenAPI]) -> Iterator[ClientFactory]:
    """``client("sales")``: an httpx client whose every answer is checked against the OpenAPI document."""
    opened: list[httpx.Client] = []

    def make(system: str, *, auth: bool = True, timeout: float = 10.0) -> httpx.Client:
        spec = specs[system]
        made = httpx.Client(
            base_url=demo.urls[system],
            headers=demo.auth_headers(system) if auth else {},
            timeout=timeout,
            event_hooks={"response": [lambda r: check_against(spec, r)]},
        )
        opened.append(made)
        return made

    yield make
    for made in opened:
        made.close()


@pytest.fixture
def sales(client: ClientFactory) -> httpx.Client:
    return client("sales")


@pytest.fixture
def support(client: ClientFactory) -> httpx.Client:
    return client("support")


@pytest.fixture
def contracts(client: ClientFactory) -> httpx.Client:
    return client("contracts")


@pytest.fixture
def faults(demo: DemoSystems) -> Iterator[DemoSystems]:
    """The demo systems, with every fault cleared afterwards."""
    yield demo
    demo.clear_faults()
