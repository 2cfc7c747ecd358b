"""Run the three demo systems with uvicorn: in one background thread (tests) or from the CLI.

>>> with DemoSystems("var/demo-data", sales_port=0, support_port=0, contracts_port=0) as demo:
...     httpx.get(demo.sales_url + "/api/v1/accounts/A100001", headers=demo.auth_headers("sales"))
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import signal
import socket
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Self

import httpx
import uvicorn

from demo import contracts, sales, support, webhooks
from demo.common import ChangeHook, DemoApp
from demo.data import (
    DEFAULT_CUSTOMERS,
    DEFAULT_DATA_DIR,
    DEFAULT_SEED,
    DemoData,
    DemoExamples,
    find_examples,
    generate,
)

SYSTEMS = ("sales", "support", "contracts")
DEFAULT_PORTS = {"sales": 8101, "support": 8102, "contracts": 8103}
log = logging.getLogger("demo")


class DemoSystems:
    """The sales, support and contracts demo systems, served by uvicorn on one background event loop.

    ``start()`` generates the data if needed (see ``demo.data.generate``) and serves every system
    in ``systems`` on its port (0 = a free port). Base URLs are origins (``http://host:port``):
    the sales paths start with ``/api/v1``, support's with ``/v2``, the register's with ``/contracts``.
    """

    def __init__(
        self,
        data_dir: Path | str = DEFAULT_DATA_DIR,
        *,
        customers: int = DEFAULT_CUSTOMERS,
        seed: int = DEFAULT_SEED,
        anchor: date | None = None,
        regenerate: bool = False,
        host: str = "127.0.0.1",
        sales_port: int = DEFAULT_PORTS["sales"],
        support_port: int = DEFAULT_PORTS["support"],
        contracts_port: int = DEFAULT_PORTS["contracts"],
        sales_api_key: str = sales.DEFAULT_API_KEY,
        support_token: str = support.DEFAULT_TOKEN,
        contracts_user: str = contracts.DEFAULT_USER,
        contracts_password: str = contracts.DEFAULT_PASSWORD,
        support_rate: float = support.DEFAULT_RATE,
        contracts_max_in_flight: int = contracts.DEFAULT_MAX_IN_FLIGHT,
        contracts_latency_ms: tuple[float, float] = contracts.DEFAULT_LATENCY_MS,
        in_memory: bool = False,
        systems: Iterable[str] = SYSTEMS,
        on_change: Mapping[str, ChangeHook] | None = None,
        webhook_url: str | None = None,
        webhook_secrets: Mapping[str, str] | None = None,
        access_log: bool = False,
    ) -> None:
        self.systems = tuple(s for s in SYSTEMS if s in set(systems))
        unknown = set(systems) - set(SYSTEMS)
        if unknown:
            raise ValueError(f"unknown systems: {', '.join(sorted(unknown))}")
        self.data_dir = Path(data_dir)
        self.customers = customers
        self.seed = seed
        self.anchor = anchor
        self.regenerate = regenerate
        self.host = host
        self.requested_ports = {"sales": sales_port, "support": support_port, "contracts": contracts_port}
        self.sales_api_key = sales_api_key
        self.support_token = support_token
        self.contracts_user = contracts_user
        self.contracts_password = contracts_password
        self.support_rate = support_rate
        self.contracts_max_in_flight = contracts_max_in_flight
        self.contracts_latency_ms = contracts_latency_ms
        self.in_memory = in_memory
        self.on_change = dict(on_change or {})
        # With webhook_url, sales and support POST their change events to <webhook_url>/sales and
        # <webhook_url>/support, signed with webhook_secrets (demo.webhooks.DEFAULT_SECRETS).
        self.webhook_url = webhook_url.rstrip("/") if webhook_url else None
        self.webhook_secrets = dict(webhook_secrets or webhooks.DEFAULT_SECRETS)
        self.senders: dict[str, webhooks.WebhookSender] = {}
        self.access_log = access_log
        self.apps: dict[str, DemoApp] = {}
        self.ports: dict[str, int] = {}
        self._data: DemoData | None = None
        self._examples: DemoExamples | None = None
        self._servers: dict[str, uvicorn.Server] = {}
        self._sockets: dict[str, socket.socket] = {}
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    # -- lifecycle --

    def start(self) -> Self:
        """Generate (or reuse) the data and serve every system; returns when all are listening."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._data = generate(
            self.data_dir, customers=self.customers, seed=self.seed, anchor=self.anchor, force=self.regenerate
        )
        if self.webhook_url:
            for name in webhooks.SYSTEMS:
                if name in self.systems:
                    url = f"{self.webhook_url}/{name}"
                    self.senders[name] = webhooks.WebhookSender(name, url, self.webhook_secrets[name]).start()
        self.apps = {name: self._create_app(name, self._data) for name in self.systems}
        try:
            for name in self.systems:
                sock = _bind(self.host, self.requested_ports[name])
                self._sockets[name] = sock
                self.ports[name] = sock.getsockname()[1]
                config = uvicorn.Config(
                    self.apps[name],
                    log_config=None,
                    log_level="warning",
                    access_log=self.access_log,
                    lifespan="off",
                    timeout_graceful_shutdown=1,
                )
                self._servers[name] = uvicorn.Server(config)
        except BaseException:
            self._close()
            raise
        self._thread = threading.Thread(target=self._run, name="demo-systems", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while not all(s.started for s in self._servers.values()):
            if self._failure is not None or not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the demo systems did not start") from self._failure
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving (hanging calls are released) and close the databases."""
        for app in self.apps.values():
            app.control.closing = True
        for server in self._servers.values():
            server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._close()

    def _close(self) -> None:
        for sender in self.senders.values():
            sender.stop()  # after the servers: their last events are still delivered (flush_timeout)
        self.senders.clear()
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()
        self._servers.clear()
        for app in self.apps.values():
            app.state.db.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _run(self) -> None:
        # uvicorn's own choice of event loop: uvloop when installed (as it is with this package)
        loop_factory = next(iter(self._servers.values())).config.get_loop_factory()
        try:
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                runner.run(self._serve())
        except BaseException as exc:  # reported by start()
            self._failure = exc

    async def _serve(self) -> None:
        await asyncio.gather(
            *(server.serve(sockets=[self._sockets[name]]) for name, server in self._servers.items())
        )

    def _create_app(self, name: str, data: DemoData) -> DemoApp:
        if name == "sales":
            return sales.create_app(
                data.sales_db,
                api_keys=[self.sales_api_key],
                in_memory=self.in_memory,
                on_change=self._hook("sales"),
            )
        if name == "support":
            return support.create_app(
                data.support_db,
                tokens=[self.support_token],
                rate=self.support_rate,
                in_memory=self.in_memory,
                on_change=self._hook("support"),
            )
        return contracts.create_app(
            data.contracts_db,
            users={self.contracts_user: self.contracts_password},
            max_in_flight=self.contracts_max_in_flight,
            latency_ms=self.contracts_latency_ms,
            in_memory=self.in_memory,
        )

    def _hook(self, name: str) -> ChangeHook | None:
        """``on_change`` and the webhook sender, both when both are set."""
        hooks = [hook for hook in (self.on_change.get(name), self.senders.get(name)) if hook is not None]
        if len(hooks) <= 1:
            return hooks[0] if hooks else None

        def both(event: dict[str, Any]) -> None:
            for hook in hooks:
                hook(event)

        return both

    # -- where and how to call --

    @property
    def data(self) -> DemoData:
        if self._data is None:
            raise RuntimeError("not started")
        return self._data

    @property
    def urls(self) -> dict[str, str]:
        """Base URL (origin) of each running system."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return {name: f"http://{host}:{port}" for name, port in self.ports.items()}

    @property
    def sales_url(self) -> str:
        return self.urls["sales"]

    @property
    def support_url(self) -> str:
        return self.urls["support"]

    @property
    def contracts_url(self) -> str:
        return self.urls["contracts"]

    @property
    def contracts_auth(self) -> tuple[str, str]:
        return (self.contracts_user, self.contracts_password)

    def auth_headers(self, system: str) -> dict[str, str]:
        """The headers that authenticate a call to ``system``."""
        if system == "sales":
            return {"X-Api-Key": self.sales_api_key}
        if system == "support":
            return {"Authorization": f"Bearer {self.support_token}"}
        if system == "contracts":
            pair = f"{self.contracts_user}:{self.contracts_password}".encode()
            return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
        raise ValueError(f"unknown system {system!r}")

    def examples(self) -> DemoExamples:
        """Account numbers of every kind in the data (see ``demo.data.find_examples``)."""
        if self._examples is None:
            self._examples = find_examples(self.data)
        return self._examples

    # -- /_demo helpers --

    def _control(self, method: str, system: str, path: str, body: Any = None) -> dict[str, Any]:
        response = httpx.request(method, f"{self.urls[system]}/_demo/{path}", json=body, timeout=5)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def stats(self, system: str) -> dict[str, Any]:
        """``GET /_demo/stats`` of ``system``."""
        return self._control("GET", system, "stats")

    def reset_stats(self, *systems: str) -> None:
        """Reset the stats of ``systems`` (default: all)."""
        for name in systems or self.systems:
            self._control("POST", name, "stats/reset")

    def set_faults(self, system: str, **faults: Any) -> dict[str, Any]:
        """Replace the faults of ``system``: any of latency_ms, jitter_ms, error_rate, down, hang."""
        return self._control("POST", system, "faults", faults)

    def clear_faults(self, *systems: str) -> None:
        """Clear the faults of ``systems`` (default: all)."""
        for name in systems or self.systems:
            self._control("POST", name, "faults", {})


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP: asyncio then sets TCP_NODELAY on accepted connections (else ~40 ms a call).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


# --- CLI -------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m demo``: generate the demo data if needed and serve the three systems until Ctrl-C."""
    p = argparse.ArgumentParser(prog="python -m demo", description=main.__doc__)
    p.add_argument("--customers", type=int, default=DEFAULT_CUSTOMERS)
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument(
        "--anchor", type=date.fromisoformat, default=None, help="'today' of the data (default: today)"
    )
    p.add_argument("--regenerate", action="store_true", help="regenerate the data even when it matches")
    p.add_argument("--in-memory", action="store_true", help="serve copies in memory: writes do not persist")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--sales-port", type=int, default=DEFAULT_PORTS["sales"])
    p.add_argument("--support-port", type=int, default=DEFAULT_PORTS["support"])
    p.add_argument("--contracts-port", type=int, default=DEFAULT_PORTS["contracts"])
    p.add_argument("--sales-api-key", default=sales.DEFAULT_API_KEY)
    p.add_argument("--support-token", default=support.DEFAULT_TOKEN)
    p.add_argument(
        "--support-rate", type=float, default=support.DEFAULT_RATE, help="calls a second per token"
    )
    p.add_argument("--contracts-user", default=contracts.DEFAULT_USER)
    p.add_argument("--contracts-password", default=contracts.DEFAULT_PASSWORD)
    p.add_argument("--access-log", action="store_true", help="log every call")
    p.add_argument(
        "--webhook-url",
        default=None,
        help="POST sales and support change events to URL/sales and URL/support"
        " (e.g. http://127.0.0.1:8000/hooks, the gateway's receivers)",
    )
    p.add_argument("--sales-webhook-secret", default=webhooks.DEFAULT_SECRETS["sales"])
    p.add_argument("--support-webhook-secret", default=webhooks.DEFAULT_SECRETS["support"])
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.access_log else logging.WARNING, format="%(message)s")

    demo = DemoSystems(
        args.data_dir,
        customers=args.customers,
        seed=args.seed,
        anchor=args.anchor,
        regenerate=args.regenerate,
        host=args.host,
        sales_port=args.sales_port,
        support_port=args.support_port,
        contracts_port=args.contracts_port,
        sales_api_key=args.sales_api_key,
        support_token=args.support_token,
        contracts_user=args.contracts_user,
        contracts_password=args.contracts_password,
        support_rate=args.support_rate,
        in_memory=args.in_memory,
        webhook_url=args.webhook_url,
        webhook_secrets={"sales": args.sales_webhook_secret, "support": args.support_webhook_secret},
        access_log=args.access_log,
    )
    print(f"Preparing {args.customers} customers (seed {args.seed}) in {args.data_dir} ...", flush=True)
    demo.start()
    data = demo.data
    print(
        f"Data: anchor {data.anchor}, "
        + (f"generated in {data.seconds:.1f} s" if data.generated else "reused")
    )
    print(f"  sales      {demo.sales_url}/api/v1   X-Api-Key: {demo.sales_api_key}")
    print(f"  support    {demo.support_url}/v2       Authorization: Bearer {demo.support_token}")
    print(
        f"  contracts  {demo.contracts_url}/contracts   Basic {demo.contracts_user}:{demo.contracts_password}"
    )
    print(f"  support rate limit: {demo.support_rate:g} calls/s per token; register: 4 calls in flight")
    ex = demo.examples()
    print(
        f"Examples: company {ex.company}, person {ex.person}, pool {ex.pool}, dormant {ex.dormant},"
        f" paged tickets {ex.paged_tickets}, confidential contract {ex.confidential_contract}"
    )
    print("Control (no auth): GET /_demo/stats, POST /_demo/stats/reset, GET|POST /_demo/faults")
    if demo.webhook_url:
        print(f"Change events: POSTed to {demo.webhook_url}/sales and {demo.webhook_url}/support (signed)")
    print("Ctrl-C to stop.", flush=True)

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)  # also when started with SIGINT ignored (a background job)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("Stopping ...", flush=True)
    finally:
        demo.stop()
    return 0
