"""``python -m bench``: start everything, run S1–S4 against the gateway and the baseline, report.

Process layout (the machine's cores are shared by all of them; the report says how many and who
used what during S3):

- each demo system in its own process (``python -m bench.systems``), latency injected with
  ``POST /_demo/faults``, the register's built-in latency off (so the configured figure is the
  effective one), the helpdesk's rate limit raised (``--support-rate``);
- the gateway in its own process (``python -m gateway.cli serve`` = ``customer-graph serve``,
  configured by ``CG_*`` variables only; ``CG_CACHE=off`` for cold, ``on`` for warm);
- S1, S2 and S4's requests from this process (sequential, one at a time); S3's closed loop from a
  separate load-generator process (``python -m bench.loadgen``);
- the baseline (``bench.baseline.DirectClient``) in this process for S1, S2 and S4, in the
  load-generator process for S3; each baseline scenario runs right after the cold gateway's.

Order: the cold gateway (``CG_CACHE=off``) with the baseline interleaved, then the warm gateway
(``CG_CACHE=on``) when the gateway has the setting.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import math
import os
import random
import resource
import shutil
import signal
import sys
import tempfile
import time
import timeit
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import orjson

from . import report
from . import wrk as wrk_tool
from .baseline import DirectClient, run_on_gateway_loop
from .control import SYSTEMS, Control, auth_headers, call_counts
from .limits import REGISTER_WIDTH, Bound, Latencies, Oracle, s1_bound, s2_bound
from .loadgen import RawHttp, error_kind
from .procs import Child, Processes, cpu_seconds, free_port, machine_cpu
from .profiling import profile_requests
from .queries import ROLES, S1_QUERY, S2_PAGE_SIZE, S2_QUERY, SUBJECT, customer_id
from .stats import summary

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results"
JWT_SECRET = "bench-dev-secret-not-for-production-0123456789"
SCENARIOS = ("S1", "S2", "S3", "S4")
CACHE_SETTING = "cache"  # the gateway setting (CG_CACHE=off|on) the warm runs need
RATE_LIMIT_PER_MINUTE = 6_000_000
RATE_LIMIT_BURST = 100_000


@dataclass(frozen=True)
class Options:
    quick: bool
    customers: int
    seed: int
    anchor: date
    latency: Latencies
    duration: float
    warmup: float
    clients: int
    s3_customers: int  # 0: every company customer
    only: tuple[str, ...]
    support_rate: float
    generator: str  # S3 against the gateway: "auto" (wrk when installed), "wrk" or "python"
    s1_requests: int
    s2_requests: int
    s4_requests: int
    profile_requests: int
    out: Path
    name: str | None  # the report files' stem (default: the date, "-quick" for --quick)
    data_dir: Path
    timeout: float
    quiet_wait: float
    warmups: int  # unmeasured requests before S1 (S2: half as many), in the same process
    argv: tuple[str, ...]


def parse_args(argv: Sequence[str] | None) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n", 1)[0])
    p.add_argument("--quick", action="store_true", help="a fast smoke run: few requests, S3 for 3 s")
    p.add_argument("--customers", type=int, default=2000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--anchor", type=date.fromisoformat, default=None, help="the data's 'today' (default: today)"
    )
    p.add_argument("--sales-latency", type=float, default=20.0, help="ms per sales call")
    p.add_argument("--support-latency", type=float, default=30.0, help="ms per helpdesk call")
    p.add_argument("--contracts-latency", type=float, default=50.0, help="ms per register call")
    p.add_argument("--duration", type=float, default=None, help="S3 seconds (default 30; --quick 3)")
    p.add_argument("--warmup", type=float, default=None, help="S3 warm-up seconds (default 3; --quick 0.5)")
    p.add_argument("--clients", type=int, default=64, help="S3 concurrent clients")
    p.add_argument(
        "--s3-customers",
        type=int,
        default=None,
        help="S3 draws from this many company customers (default: all of them; --quick 200)",
    )
    p.add_argument("--only", default=",".join(SCENARIOS), help="scenarios to run, e.g. S1,S2")
    p.add_argument(
        "--support-rate",
        type=float,
        default=100_000.0,
        help="the helpdesk's rate limit, calls/s (its default 50 would cap S3 for every client)",
    )
    p.add_argument(
        "--generator",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="S3's load generator against the gateway: wrk when installed (auto), or the Python one",
    )
    p.add_argument("--s1-requests", type=int, default=None, help="default 50; --quick 8")
    p.add_argument("--s2-requests", type=int, default=None, help="default 20; --quick 3")
    p.add_argument("--s4-requests", type=int, default=None, help="default 300; --quick 20")
    p.add_argument("--profile-requests", type=int, default=None, help="default 200; --quick 10")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder (default bench/results)")
    p.add_argument(
        "--name", default=None, help="report file names (default: the date; a second run of a day: a tag)"
    )
    p.add_argument("--data-dir", type=Path, default=None, help="default var/bench-data/<customers>-<seed>")
    p.add_argument("--timeout", type=float, default=1800.0, help="give up (and clean up) after this many s")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=None,
        help="wait up to this many s for other work on the machine to calm down (default 180; --quick 0)",
    )
    a = p.parse_args(argv)
    only = tuple(s.strip().upper() for s in a.only.split(",") if s.strip())
    unknown = set(only) - set(SCENARIOS)
    if unknown or not only:
        p.error(f"--only takes some of {','.join(SCENARIOS)}")

    def pick(value: Any, full: Any, quick: Any) -> Any:
        return value if value is not None else (quick if a.quick else full)

    return Options(
        quick=a.quick,
        customers=a.customers,
        seed=a.seed,
        anchor=a.anchor or datetime.now(UTC).date(),
        latency=Latencies(a.sales_latency, a.support_latency, a.contracts_latency),
        duration=pick(a.duration, 30.0, 3.0),
        warmup=pick(a.warmup, 3.0, 0.5),
        clients=a.clients,
        s3_customers=pick(a.s3_customers, 0, 200),
        only=tuple(s for s in SCENARIOS if s in only),
        support_rate=a.support_rate,
        generator=a.generator,
        s1_requests=pick(a.s1_requests, 50, 8),
        s2_requests=pick(a.s2_requests, 20, 3),
        s4_requests=pick(a.s4_requests, 300, 20),
        profile_requests=pick(a.profile_requests, 200, 10),
        out=a.out,
        name=a.name,
        data_dir=a.data_dir or ROOT / "var" / "bench-data" / f"{a.customers}-{a.seed}",
        timeout=a.timeout,
        quiet_wait=pick(a.quiet_wait, 180.0, 0.0),
        warmups=1 if a.quick else 5,
        argv=tuple(sys.argv[1:] if argv is None else argv),
    )


def cache_available() -> bool:
    """Whether the gateway knows the cross-request cache setting (``CG_CACHE``)."""
    from gateway.settings import Settings

    return CACHE_SETTING in {f.name for f in dataclasses.fields(Settings)}


# --- measuring -----------------------------------------------------------------------------------

Attempt = Callable[[], Awaitable[str | None]]  # None: a good answer; else what was wrong


async def sequential(attempt: Attempt, n: int) -> tuple[list[float], dict[str, int]]:
    """``n`` attempts one after the other: the good ones' latencies (ms) and the problems."""
    latencies: list[float] = []
    problems: dict[str, int] = {}
    for _ in range(n):
        started = time.perf_counter()
        try:
            problem = await attempt()
        except Exception as exc:
            problem = type(exc).__name__
        elapsed = (time.perf_counter() - started) * 1000
        if problem is None:
            latencies.append(elapsed)
        else:
            problems[problem] = problems.get(problem, 0) + 1
    return latencies, problems


def graphql_problem(status: int, content: bytes, check: Callable[[Any], str | None]) -> str | None:
    if status != 200:
        return f"HTTP {status}"
    body = orjson.loads(content)
    if body.get("errors"):
        return error_kind(body["errors"])
    return check(body.get("data") or {})


def s1_check(data: Any) -> str | None:
    return None if data.get("customer") else "no customer"


def s2_check(data: Any) -> str | None:
    edges = (data.get("customers") or {}).get("edges") or []
    return None if len(edges) == S2_PAGE_SIZE else f"{len(edges)} edges"


class Bench:
    """One invocation: the running processes, what was found in the data, and the results."""

    def __init__(self, opts: Options, procs: Processes, tmp: Path) -> None:
        self.opts = opts
        self.procs = procs
        self.tmp = tmp
        self.systems: dict[str, Child] = {}
        self.urls: dict[str, str] = {}
        self.control: Control | None = None
        self.oracle: Oracle | None = None
        self.token = ""
        self.results: dict[str, Any] = {}
        self.s1_account = ""
        self.companies: list[str] = []
        self.bounds: dict[str, Bound] = {}
        self.phases: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Record how long a part of the run took (the report lists them)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = round(self.phases.get(name, 0.0) + time.perf_counter() - started, 2)

    @property
    def ctl(self) -> Control:
        assert self.control is not None
        return self.control

    @property
    def lat(self) -> dict[str, float]:
        lat = self.opts.latency
        return {"sales": lat.sales, "support": lat.support, "contracts": lat.contracts}

    # --- processes -------------------------------------------------------------------------

    def start_systems(self) -> None:
        from demo.data import generate

        o = self.opts
        started = time.perf_counter()
        data = generate(o.data_dir, customers=o.customers, seed=o.seed, anchor=o.anchor)
        self.results["data"] = {
            "customers": o.customers,
            "seed": o.seed,
            "anchor": o.anchor.isoformat(),
            "generated": data.generated,
            "seconds": round(time.perf_counter() - started, 2),
        }
        for system in SYSTEMS:
            self.systems[system] = self.procs.start(
                system,
                [
                    sys.executable,
                    "-m",
                    "bench.systems",
                    "--system",
                    system,
                    "--data-dir",
                    str(o.data_dir),
                    "--customers",
                    str(o.customers),
                    "--seed",
                    str(o.seed),
                    "--anchor",
                    o.anchor.isoformat(),
                    "--support-rate",
                    str(o.support_rate),
                ],
                stdout_pipe=True,
                cwd=ROOT,
            )
        for system, child in self.systems.items():
            info = json.loads(self.procs.read_line(child, timeout=120))
            child.url = self.urls[system] = info["url"]
            self.procs.wait_http(child, child.url + "/health")
        self.control = Control(self.urls)
        self.oracle = Oracle(self.urls, auth_headers())

    def gateway_env(self, cache: str) -> dict[str, str]:
        from demo import contracts, sales, support

        env = {k: v for k, v in os.environ.items() if not k.startswith("CG_")}
        env.update(
            {
                "CG_SALES_URL": self.urls["sales"],
                "CG_SALES_API_KEY": sales.DEFAULT_API_KEY,
                "CG_SUPPORT_URL": self.urls["support"],
                "CG_SUPPORT_TOKEN": support.DEFAULT_TOKEN,
                "CG_CONTRACTS_URL": self.urls["contracts"],
                "CG_CONTRACTS_USER": contracts.DEFAULT_USER,
                "CG_CONTRACTS_PASSWORD": contracts.DEFAULT_PASSWORD,
                "CG_JWT_SECRET": JWT_SECRET,
                "CG_LOG_LEVEL": "WARNING",
                "CG_HOST": "127.0.0.1",
                "CG_CACHE": cache,
                # The gateway keeps under the helpdesk's rate limit (support_max_rate, default 45/s for
                # the demo's 50/s); the helpdesk's limit is raised here, so the gateway is told so.
                "CG_SUPPORT_MAX_RATE": f"{self.opts.support_rate * 0.9:g}",
                # The gateway's own database (the audit log): a fresh SQLite file for this run, not the
                # developer's var/gateway.db.
                "CG_DATABASE_URL": f"sqlite:///{self.tmp / 'gateway.db'}",
                # The per-caller rate limit (default 1200/min, burst 200) would throttle the benchmark's
                # sequential runs; raised so it never bites, but still checked on every request.
                "CG_RATE_LIMIT_PER_MINUTE": str(RATE_LIMIT_PER_MINUTE),
                "CG_RATE_LIMIT_BURST": str(RATE_LIMIT_BURST),
            }
        )
        return env

    def start_gateway(self, cache: str) -> Child:
        env = self.gateway_env(cache)
        port = free_port()
        env["CG_PORT"] = str(port)
        child = self.procs.start(
            f"gateway-cache-{cache}", [sys.executable, "-m", "gateway.cli", "serve"], env=env, cwd=ROOT
        )
        child.url = f"http://127.0.0.1:{port}"
        self.procs.wait_http(child, child.url + "/healthz", timeout=60)
        return child

    def direct(self) -> DirectClient:
        from demo import contracts, sales, support

        return DirectClient(
            self.urls,
            sales_api_key=sales.DEFAULT_API_KEY,
            support_token=support.DEFAULT_TOKEN,
            contracts_auth=(contracts.DEFAULT_USER, contracts.DEFAULT_PASSWORD),
        )

    # --- the data ----------------------------------------------------------------------------

    def discover(self) -> None:
        """Pick S1's customer, S3's customers, compute the limits; check the latencies."""
        from gateway.auth import issue_token

        assert self.oracle is not None
        self.token = issue_token(JWT_SECRET, sub=SUBJECT, roles=ROLES, name="Benchmark", ttl_seconds=6 * 3600)
        self.ctl.set_latency(self.lat)
        accounts = self.oracle.all_accounts()
        companies = [a for a in accounts if a["kind"] == "company"]
        self.companies = [a["account_no"] for a in companies]
        if o_limit := self.opts.s3_customers:
            self.companies = random.Random(self.opts.seed).sample(
                self.companies, min(o_limit, len(self.companies))
            )
        candidates = [a for a in companies if a.get("owner_id") and a.get("email") and a.get("tax_id")]
        if not candidates:
            raise RuntimeError("no company customer with an owner, an e-mail and a tax id in the data")
        lat = self.opts.latency
        chosen = s1_bound(self.oracle, candidates[0], lat)
        for account in candidates[:30]:  # prefer one with tickets on a single search page
            bound = s1_bound(self.oracle, account, lat)
            if bound.facts["ticket_pages"] == 1 and bound.facts["tickets"] > 0:
                chosen = bound
                break
        self.s1_account = chosen.facts["account_no"]
        self.bounds["S1"] = chosen
        self.bounds["S2"] = s2_bound(self.oracle, S2_PAGE_SIZE, lat)
        with_tax = sum(1 for a in companies if a.get("tax_id"))
        share = with_tax / len(companies) if companies else 0.0
        owner = candidates[0].get("owner_id") or ""
        self.results["calibration"] = {
            "configured_ms": self.lat,
            "register_builtin_latency_ms": [0.0, 0.0],
            "round_trip": self.ctl.calibrate(
                {
                    "sales": ("GET", "/api/v1/users", {"ids": owner}),
                    "support": ("GET", "/v2/satisfaction", {"emails": "nobody@example.invalid"}),
                    "contracts": ("GET", "/contracts", {"party_tax_id": "91000000000000000X"}),
                }
            ),
        }
        self.results["customers"] = {
            "total": len(accounts),
            "companies": len(companies),
            "companies_with_tax_id": with_tax,
            "s3_customers": len(self.companies),
            "s1_account": self.s1_account,
        }
        # S3: every S1 needs one register call (companies have tax ids); the register serves 4 at once.
        self.results["s3_ceiling_rps"] = (
            round(REGISTER_WIDTH * 1000.0 / lat.contracts / share, 1) if share and lat.contracts else None
        )

    def client_token(self, index: int) -> str:
        """S3: each client is its own caller (same roles), as 64 users of an app would be."""
        from gateway.auth import issue_token

        return issue_token(JWT_SECRET, sub=f"{SUBJECT}-{index:02d}", roles=ROLES, ttl_seconds=6 * 3600)

    # --- scenarios -----------------------------------------------------------------------------

    async def gateway_attempts(self, gateway: Child) -> tuple[RawHttp, Attempt, Attempt]:
        http = RawHttp(gateway.url + "/graphql", {"Authorization": f"Bearer {self.token}"})
        s1_body = orjson.dumps({"query": S1_QUERY, "variables": {"id": customer_id(self.s1_account)}})
        s2_body = orjson.dumps({"query": S2_QUERY, "variables": {"first": S2_PAGE_SIZE}})

        async def s1() -> str | None:
            return graphql_problem(*(await http.post(s1_body)), s1_check)

        async def s2() -> str | None:
            return graphql_problem(*(await http.post(s2_body)), s2_check)

        return http, s1, s2

    def mix_attempt(self, http: RawHttp, account_nos: list[str]) -> Attempt:
        """S1 for each of ``account_nos`` in turn (S3m's mix of customers, one at a time)."""
        bodies = [
            orjson.dumps({"query": S1_QUERY, "variables": {"id": customer_id(no)}}) for no in account_nos
        ]
        turn = itertools.cycle(bodies)

        async def s1_mix() -> str | None:
            return graphql_problem(*(await http.post(next(turn))), s1_check)

        return s1_mix

    def baseline_attempts(self, direct: DirectClient) -> tuple[Attempt, Attempt]:
        async def s1() -> str | None:
            return None if await direct.customer(self.s1_account) else "no customer"

        async def s2() -> str | None:
            found = await direct.page(S2_PAGE_SIZE)
            return None if len(found) == S2_PAGE_SIZE else f"{len(found)} customers"

        return s1, s2

    def cpu_snapshot(self, pid: int | None) -> dict[str, float]:
        """CPU seconds so far of the client side (``pid``, else this process) and of each system."""
        snap = {"client": cpu_seconds(pid) if pid else _own_cpu()}
        snap.update({s: c.cpu() for s, c in self.systems.items()})
        return snap

    def cpu_per_request(self, before: dict[str, float], after: dict[str, float], n: int) -> dict[str, float]:
        """CPU ms per request: the client side (gateway or direct client) and the three systems."""
        return {k: round((after[k] - before[k]) / n * 1000, 3) for k in before} if n else {}

    async def latency_run(
        self, attempt: Attempt, n: int, warmups: int, bound: Bound | None, pid: int | None
    ) -> dict[str, Any]:
        """Warm the path, then ``n`` sequential requests with the upstream calls they made and the CPU
        they cost (``pid``: the gateway's process; None: this one, where the baseline runs)."""
        for _ in range(warmups):
            with contextlib.suppress(Exception):
                await attempt()
        self.ctl.reset_stats()
        cpu0 = self.cpu_snapshot(pid)
        latencies, problems = await sequential(attempt, n)
        cpu1 = self.cpu_snapshot(pid)
        calls = call_counts(_zero_stats(), self.ctl.stats())
        made = sum(c["calls"] for c in calls.values())
        result: dict[str, Any] = {
            "latency_ms": summary(latencies),
            "latencies_ms": [round(v, 3) for v in latencies],
            "requests": n,
            "errors": sum(problems.values()),
            "error_kinds": problems,
            "upstream": calls,
            "calls_per_request": round(made / n, 3) if n else None,
            "calls_per_request_by_system": {s: round(calls[s]["calls"] / n, 3) for s in SYSTEMS} if n else {},
            "cpu_ms_per_request": self.cpu_per_request(cpu0, cpu1, n),
        }
        if bound is not None and n:
            result["ratio_p50"] = _ratio(result["latency_ms"]["p50"], bound.limit_ms)
            result["ratio_p99"] = _ratio(result["latency_ms"]["p99"], bound.limit_ms)
            result["calls_vs_minimum"] = f"{made / n:g} / {bound.min_total}"
            result["calls_equal_minimum"] = made == n * bound.min_total
        return result

    def load_run(
        self, label: str, mode: str, gateway: Child | None, account_nos: list[str]
    ) -> dict[str, Any]:
        """S3: the closed loop in a separate process (``bench/loadgen.py``), with every process's CPU
        over the window."""
        from demo import contracts, sales, support

        o = self.opts
        result_path = self.tmp / f"s3-{label}-result.json"
        config = {
            "mode": mode,
            "account_nos": account_nos,
            "clients": o.clients,
            "warmup": o.warmup,
            "duration": o.duration,
            "seed": o.seed,
            "gateway_url": gateway.url + "/graphql" if gateway else "",
            "tokens": [self.client_token(i) for i in range(o.clients)],
            "urls": self.urls,
            "sales_api_key": sales.DEFAULT_API_KEY,
            "support_token": support.DEFAULT_TOKEN,
            "contracts_auth": [contracts.DEFAULT_USER, contracts.DEFAULT_PASSWORD],
        }
        config_path = self.tmp / f"s3-{label}.json"
        config_path.write_text(json.dumps(config))
        child = self.procs.start(
            f"loadgen-{label}",
            [sys.executable, "-m", "bench.loadgen", str(config_path), str(result_path)],
            stdout_pipe=True,
            cwd=ROOT,
        )
        watched = {"loadgen": child, **{f"system:{s}": c for s, c in self.systems.items()}}
        if gateway is not None:
            watched["gateway"] = gateway
        try:
            if self.procs.read_line(child, timeout=o.warmup + 120) != "START":
                raise RuntimeError("the load generator did not start")
            stats0 = self.ctl.stats()
            cpu0 = {name: c.cpu() for name, c in watched.items()}
            busy0, total0 = machine_cpu()
            t0 = time.perf_counter()
            if self.procs.read_line(child, timeout=o.duration + 180) != "END":
                raise RuntimeError("the load generator did not finish")
            window = time.perf_counter() - t0
            cpu1 = {name: c.cpu() for name, c in watched.items()}
            busy1, total1 = machine_cpu()
            stats1 = self.ctl.stats()
            child.proc.wait(timeout=60)
        finally:
            self.procs.stop(child)
        if child.proc.returncode != 0 or not result_path.exists():
            raise RuntimeError(f"the load generator failed:\n{child.log_tail()}")
        raw = json.loads(result_path.read_text())
        latencies = raw.pop("latencies_ms")
        calls = call_counts(stats0, stats1)
        made = sum(c["calls"] for c in calls.values())
        cores = len(os.sched_getaffinity(0))
        used = {name: (cpu1[name] - cpu0[name]) for name in watched}
        return {
            **raw,
            "latency_ms": summary(latencies),
            "quantiles_ms": _quantiles(latencies),
            "upstream": calls,
            "calls_per_request": round(made / raw["ok"], 3) if raw["ok"] else None,
            "cpu_window_s": round(window, 3),
            "cpu_cores_used": {name: round(seconds / window, 3) for name, seconds in used.items()},
            "cpu_ms_per_request": {
                name: round(seconds / raw["ok"] * 1000, 2) if raw["ok"] else None
                for name, seconds in used.items()
            },
            "machine_busy": round((busy1 - busy0) / (total1 - total0), 3) if total1 > total0 else None,
            "cores": cores,
            "generator": "python",
        }

    def wrk_run(self, label: str, gateway: Child, account_nos: list[str], wrk: str) -> dict[str, Any]:
        """S3 against the gateway with ``wrk`` (``bench/wrk.py``): a warm-up run, then the measured
        one, with every process's CPU over it (wrk's own from this process's reaped children)."""
        o = self.opts
        bodies = [
            orjson.dumps({"query": S1_QUERY, "variables": {"id": customer_id(a)}}).decode()
            for a in account_nos
        ]
        tokens = [self.client_token(i) for i in range(o.clients)]
        script = wrk_tool.write_script(
            self.tmp / f"s3-{label}.lua", url_path="/graphql", bodies=bodies, tokens=tokens, seed=o.seed
        )
        url = gateway.url + "/graphql"
        if o.warmup > 0:
            wrk_tool.run(wrk_tool.command(wrk, url, script, o.clients, o.warmup), timeout=o.warmup + 120)
            # wrk's warm-up ends by closing its connections with up to one request per client still
            # in the gateway; those would spend the measured window's register slots (64 clients: 64
            # requests, ~0.8 s of the register's capacity) on answers nobody counts. The Python
            # generator's window follows its warm-up without a break, so it never sees them.
            self.drain()
        watched = {**{f"system:{s}": c for s, c in self.systems.items()}, "gateway": gateway}
        stats0 = self.ctl.stats()
        cpu0 = {name: c.cpu() for name, c in watched.items()}
        children0 = _children_cpu()
        busy0, total0 = machine_cpu()
        t0 = time.perf_counter()
        measured = wrk_tool.command(wrk, url, script, o.clients, o.duration)
        raw = wrk_tool.run(measured, timeout=o.duration + 180)
        window = time.perf_counter() - t0
        cpu1 = {name: c.cpu() for name, c in watched.items()}
        used = {name: (cpu1[name] - cpu0[name]) for name in watched}
        used["loadgen"] = _children_cpu() - children0
        busy1, total1 = machine_cpu()
        stats1 = self.ctl.stats()
        self.drain()
        elapsed = raw["duration_us"] / 1e6
        ok = int(raw["good"])
        errors = {kind: int(raw[kind]) for kind in ("connect", "read", "write", "timeout") if int(raw[kind])}
        if raw["bad"]:
            errors["bad answer (HTTP status, errors or no customer)"] = int(raw["bad"])
        calls = call_counts(stats0, stats1)
        made = sum(c["calls"] for c in calls.values())
        quantiles = [round(float(v), 3) for v in raw["quantiles_ms"]]
        return {
            "mode": "gateway",
            "generator": "wrk",
            "clients": o.clients,
            "warmup_s": o.warmup,
            "duration_s": o.duration,
            "elapsed_s": round(elapsed, 3),
            "ok": ok,
            "errors": sum(errors.values()),
            "error_kinds": errors,
            "rps": round(ok / elapsed, 2) if elapsed > 0 else 0.0,
            "outside_window": 0,
            "loadgen_cpu_s": round(used["loadgen"], 3),
            "latency_ms": {
                "n": ok,
                "p50": quantiles[50] if quantiles else None,
                "p90": quantiles[90] if quantiles else None,
                "p99": quantiles[99] if quantiles else None,
                "mean": round(float(raw["mean_ms"]), 2),
                "min": quantiles[0] if quantiles else None,
                "max": quantiles[100] if quantiles else None,
            },
            "quantiles_ms": quantiles,
            "upstream": calls,
            "calls_per_request": round(made / ok, 3) if ok else None,
            "cpu_window_s": round(window, 3),
            "cpu_cores_used": {name: round(seconds / window, 3) for name, seconds in used.items()},
            "cpu_ms_per_request": {
                name: round(seconds / ok * 1000, 2) if ok else None for name, seconds in used.items()
            },
            "machine_busy": round((busy1 - busy0) / (total1 - total0), 3) if total1 > total0 else None,
            "cores": len(os.sched_getaffinity(0)),
        }

    def drain(self, quiet: float = 0.5, limit: float = 60.0) -> None:
        """Wait until no system has been called for ``quiet`` seconds (at most ``limit``): wrk closes
        its connections at the end of its window, but the gateway finishes the requests it has, and
        their register calls must not overlap the next run's (the register answers a fifth call in
        flight with 503, which opens the circuit breaker of whoever made it)."""
        deadline = time.monotonic() + limit
        before = call_counts(_zero_stats(), self.ctl.stats())
        while time.monotonic() < deadline:
            time.sleep(quiet)
            now = call_counts(_zero_stats(), self.ctl.stats())
            if now == before:
                return
            before = now

    def s3_gateway(self, label: str, gateway: Child, account_nos: list[str]) -> dict[str, Any]:
        """S3 against the gateway: with wrk when installed, else with the Python generator."""
        wrk = wrk_tool.find_wrk() if self.opts.generator != "python" else None
        if wrk is None:
            if self.opts.generator == "wrk":
                raise RuntimeError("--generator wrk: wrk is not installed (apt-get install wrk)")
            return self.load_run(label, "gateway", gateway, account_nos)
        return self.wrk_run(label, gateway, account_nos, wrk)

    async def cpu_run(self, attempt: Attempt, n: int, pid: int | None) -> dict[str, Any]:
        """S4: CPU seconds of ``pid`` (or of this process) per request, zero upstream latency."""
        for _ in range(10):
            with contextlib.suppress(Exception):
                await attempt()
        before = self.cpu_snapshot(pid)
        latencies, problems = await sequential(attempt, n)
        after = self.cpu_snapshot(pid)
        per = (after["client"] - before["client"]) / n * 1000 if n else math.nan
        return {
            "requests": n,
            "cpu_ms_per_request": round(per, 3),
            "cpu_s": round(after["client"] - before["client"], 3),
            "systems_cpu_ms_per_request": {
                s: v for s, v in self.cpu_per_request(before, after, n).items() if s != "client"
            },
            "resolution_ms_per_request": round(1000.0 / os.sysconf("SC_CLK_TCK") / n, 3)
            if pid and n
            else None,
            "latency_ms": summary(latencies),
            "latencies_ms": [round(v, 3) for v in latencies],
            "errors": sum(problems.values()),
            "error_kinds": problems,
        }

    async def guarded(self, name: str, step: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        """One scenario; a failure is recorded (and reported) instead of ending the whole run."""
        with self.phase(name):
            try:
                return await step()
            except (KeyboardInterrupt, TimeoutError):
                raise
            except Exception as exc:
                print(f"bench: {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                return {"failed": f"{type(exc).__name__}: {exc}"[:600]}

    async def run_gateway_mode(
        self, mode: str, gateway: Child, baseline: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """S1–S4 against one gateway process (``mode``: cold or warm). With ``baseline`` (a dict to
        fill), each scenario's baseline run follows the gateway's at once, so both see the machine in
        the same state (other work on shared cores drifts over minutes)."""
        o = self.opts
        out: dict[str, Any] = {}
        http, s1, s2 = await self.gateway_attempts(gateway)
        direct = self.direct() if baseline is not None else None
        b1, b2 = self.baseline_attempts(direct) if direct is not None else (s1, s2)
        pid: int | None = gateway.pid
        warmups = max(1, o.warmups // 2)
        try:
            problem = await s1()
            if problem is not None:
                raise RuntimeError(
                    f"the gateway does not answer S1 ({mode}): {problem}\n{gateway.log_tail()}"
                )
            if "S1" in o.only:
                out["S1"] = await self.guarded(
                    f"S1 {mode}",
                    lambda: self.latency_run(s1, o.s1_requests, o.warmups, self.bounds["S1"], pid),
                )
                if baseline is not None:
                    baseline["S1"] = await self.guarded(
                        "S1 baseline",
                        lambda: self.latency_run(b1, o.s1_requests, o.warmups, self.bounds["S1"], None),
                    )
            if "S2" in o.only:
                out["S2"] = await self.guarded(
                    f"S2 {mode}", lambda: self.latency_run(s2, o.s2_requests, warmups, self.bounds["S2"], pid)
                )
                if baseline is not None:
                    baseline["S2"] = await self.guarded(
                        "S2 baseline",
                        lambda: self.latency_run(b2, o.s2_requests, warmups, self.bounds["S2"], None),
                    )
            if "S3" in o.only:
                await http.close()

                one, many = [self.s1_account], self.companies
                for scenario, customers in (("S3", one), ("S3m", many)):

                    async def s3(
                        scenario: str = scenario, customers: list[str] = customers
                    ) -> dict[str, Any]:
                        return self.s3_gateway(f"{scenario}-gateway-{mode}", gateway, customers)

                    async def s3_baseline(
                        scenario: str = scenario, customers: list[str] = customers
                    ) -> dict[str, Any]:
                        return self.load_run(f"{scenario}-baseline", "baseline", None, customers)

                    out[scenario] = await self.guarded(f"{scenario} {mode}", s3)
                    if baseline is not None:
                        baseline[scenario] = await self.guarded(f"{scenario} baseline", s3_baseline)
            if "S4" in o.only:
                self.ctl.set_latency(dict.fromkeys(SYSTEMS, 0.0))
                try:
                    out["S4"] = await self.guarded(
                        f"S4 {mode}", lambda: self.cpu_run(s1, o.s4_requests, gateway.pid)
                    )
                    if mode == "cold" and "S3" in o.only:  # S3m's sequential figure: the same mix
                        mix = self.mix_attempt(http, self.companies)
                        out["S4m"] = await self.guarded(
                            "S4m cold", lambda: self.cpu_run(mix, o.s4_requests, gateway.pid)
                        )
                    if baseline is not None:
                        baseline["S4"] = await self.guarded(
                            "S4 baseline", lambda: self.cpu_run(b1, o.s4_requests, None)
                        )
                    if mode == "cold":
                        self.results["profile"] = await self.guarded(
                            "profile S1 cold", lambda: self.profile("S1", "off")
                        )
                    if mode == "warm" and "S2" in o.only:
                        self.results["profile_s2_warm"] = await self.guarded(
                            "profile S2 warm", lambda: self.profile("S2", "on")
                        )
                finally:
                    self.ctl.set_latency(self.lat)
        finally:
            await http.close()
            if direct is not None:
                await direct.aclose()
        return out

    async def profile(self, scenario: str, cache: str) -> dict[str, Any]:
        """cProfile of the gateway in-process: S1 (cold) or S2 (warm: the gateway's own work)."""
        env = {k: v for k, v in self.gateway_env(cache).items() if k.startswith("CG_")}
        if scenario == "S1":
            body = {"query": S1_QUERY, "variables": {"id": customer_id(self.s1_account)}}
            n, title = self.opts.profile_requests, "S1 requests (one company customer, every field)"
        else:
            body = {"query": S2_QUERY, "variables": {"first": S2_PAGE_SIZE}}
            n = max(2, self.opts.profile_requests // 10)
            title = "S2 requests (a page of 50, every field) with the cache on and warm"
        text, top, totals = await profile_requests(env, self.token, [body], n, title)
        return {"top": top, **totals, "text": text, "scenario": scenario, "cache": cache}

    # --- the whole run -------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        o = self.opts
        with self.phase("waiting for a quiet machine"):
            self.results["background"] = wait_for_quiet(o.quiet_wait)
            self.results["speed_at_start"] = machine_speed()
        with self.phase("data and systems"):
            self.start_systems()
        with self.phase("discovery and limits"):
            self.discover()
        runs: dict[str, Any] = {}
        print(f"bench: systems up ({', '.join(f'{s} {u}' for s, u in self.urls.items())})", flush=True)

        self.results["gateway_env"] = {
            k: v
            for k, v in self.gateway_env("off").items()
            if k.startswith("CG_") and not any(w in k for w in ("KEY", "TOKEN", "PASSWORD", "SECRET"))
        }
        with self.phase("gateway start"):
            gateway = self.start_gateway("off")
        print(
            f"bench: gateway (cold, CG_CACHE=off) at {gateway.url}; running {','.join(o.only)},"
            " each followed by the baseline (direct client)",
            flush=True,
        )
        baseline: dict[str, Any] = {}
        runs["gateway_cold"] = await self.run_gateway_mode("cold", gateway, baseline)
        runs["baseline"] = baseline
        self.procs.stop(gateway)

        if cache_available():
            with self.phase("gateway start"):
                gateway = self.start_gateway("on")
            print(f"bench: gateway (warm, CG_CACHE=on) at {gateway.url}", flush=True)
            runs["gateway_warm"] = await self.run_gateway_mode("warm", gateway)
            self.procs.stop(gateway)
            self.results["cache"] = {"available": True, "setting": "CG_CACHE=on"}
        else:
            runs["gateway_warm"] = None
            self.results["cache"] = {
                "available": False,
                "setting": "CG_CACHE",
                "note": "the gateway has no cross-request cache setting (gateway.settings.Settings has no"
                " 'cache' field): the warm runs were not made.",
            }

        self.results["runs"] = runs
        self.results["phases_s"] = self.phases
        self.results["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
        self.results["speed_at_end"] = machine_speed()
        start = self.results["speed_at_start"]
        self.results["steal_share"] = steal_share(start["stat"], self.results["speed_at_end"]["stat"])
        self.results["bounds"] = {name: bound.to_json() for name, bound in self.bounds.items()}
        return self.results

    def close(self) -> None:
        if self.control is not None:
            self.control.close()
        if self.oracle is not None:
            self.oracle.close()


QUIET_BUSY = 0.15  # the machine counts as quiet below this share of all cores busy


def busy_share(seconds: float = 1.0) -> float:
    """The share of all cores busy over the next ``seconds`` (whoever uses them)."""
    busy0, total0 = machine_cpu()
    time.sleep(seconds)
    busy1, total1 = machine_cpu()
    return (busy1 - busy0) / (total1 - total0) if total1 > total0 else 0.0


def wait_for_quiet(max_wait: float) -> dict[str, Any]:
    """Wait (at most ``max_wait`` s) until other work leaves the cores alone; say how busy they were."""
    started = time.monotonic()
    busy = busy_share(1.0 if max_wait > 0 else 0.3)
    while busy >= QUIET_BUSY and time.monotonic() - started < max_wait:
        if time.monotonic() - started < 2:
            print(
                f"bench: the machine is {busy:.0%} busy with other work; waiting up to {max_wait:g} s",
                flush=True,
            )
        busy = busy_share(2.0)
    return {
        "busy_before_start": round(busy, 3),
        "waited_s": round(time.monotonic() - started, 1),
        "quiet": busy < QUIET_BUSY,
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }


SPEED_LOOP = 200_000


def _fixed_work() -> int:
    total = 0
    for i in range(SPEED_LOOP):
        total += i * i % 7
    return total


def machine_speed() -> dict[str, Any]:
    """How fast one core runs plain Python right now: the best of 5 runs of a fixed loop, in ms, and
    the kernel's CPU counters (for the steal share). On shared virtual cores this moves by 2× between
    runs (seen on the 2-core benchmark machine), and every CPU and latency figure moves with it."""
    best = min(timeit.repeat(_fixed_work, number=1, repeat=5))
    return {"fixed_loop_ms": round(best * 1000, 2), "stat": _cpu_counters()}


def _cpu_counters() -> list[int]:
    """/proc/stat's first line (user nice system idle iowait irq softirq steal …); [] elsewhere."""
    try:
        with open("/proc/stat") as stat:
            return [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return []


def steal_share(before: list[int], after: list[int]) -> float | None:
    """The share of the cores' time the hypervisor gave to other machines between two readings."""
    if len(before) < 8 or len(after) < 8:
        return None
    total = sum(after) - sum(before)
    return round((after[7] - before[7]) / total, 4) if total > 0 else None


def _zero_stats() -> dict[str, dict[str, Any]]:
    return {s: {"count": 0, "endpoints": {}, "statuses": {}} for s in SYSTEMS}


def _ratio(measured: float | None, limit: float) -> float | None:
    return round(measured / limit, 3) if measured is not None and limit else None


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _children_cpu() -> float:
    """CPU seconds of this process's children that have ended (wrk's runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _quantiles(values: list[float]) -> list[float]:
    """The 0th, 1st, …, 100th percentiles (for the plot and later comparisons)."""
    from .stats import percentile

    return [round(percentile(values, q), 3) for q in range(101)] if values else []


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"the benchmark took longer than --timeout {opts.timeout:g} s")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)  # also when started with SIGINT ignored (a background job)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(max(1, int(opts.timeout)))
    tmp = Path(tempfile.mkdtemp(prefix="cg-bench-"))
    started = datetime.now(UTC)
    ok = False
    try:
        with Processes(tmp / "logs") as procs:
            bench = Bench(opts, procs, tmp)
            try:
                results = run_on_gateway_loop(bench.run())
            finally:
                bench.close()
        results["started_at"] = started.isoformat(timespec="seconds")
        results["seconds"] = round((datetime.now(UTC) - started).total_seconds(), 1)
        paths = report.write(results, opts)
        ok = True
        for path in paths:
            print(f"bench: wrote {path}")
        return 0
    except KeyboardInterrupt:
        print("bench: interrupted; every process stopped", file=sys.stderr)
        return 130
    finally:
        signal.alarm(0)
        if ok:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"bench: logs of the run are in {tmp / 'logs'}", file=sys.stderr)
