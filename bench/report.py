"""The report: ``<date>.md`` (readable), ``<date>.json`` (everything), ``<date>-latency.png`` and
``<date>-profile*.txt``. ``--quick`` runs write ``<date>-quick*`` so they never replace a full run.

``python -m bench.report RESULTS.json`` renders the Markdown and the plot again from a run's JSON
(same figures; for a changed report layout).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .run import Options

ROOT = Path(__file__).resolve().parent.parent
WARM_S1_P50_MS = 5.0
S4_CPU_MS = 5.0
P50_FACTOR = 1.10
P99_FACTOR = 1.30
S3_COLD_FACTOR = 1.0  # S3 cold: the gateway's answers/s ≥ this × the direct baseline's (issue #19)
S3_WARM_FACTOR = 3.0  # S3 warm: ≥ this × the direct baseline's
S3_WARM_OVER_COLD = 5.0  # S3 warm ≥ this × S3 cold, one load generator, one run (issue #19)
LOAD_CPU_FACTOR = 1.2  # S3 cold CPU per answer ≤ this × the sequential figure (S4 cold)
S3_SCENARIOS = (("S3", "one customer"), ("S3m", "many customers"))
NEAR = 0.85  # a limit counts as binding when this much of it is used
REGISTER_WIDTH = 4
OTHERS_WARN = 0.3  # cores used by other processes during an S3 window worth a warning
PROFILES = (("profile", "-profile.txt"), ("profile_s2_warm", "-profile-s2-warm.txt"))


@dataclass(frozen=True, slots=True)
class Target:
    scenario: str
    mode: str
    metric: str
    measured: str
    target: str
    ratio: float | None
    passed: bool | None  # None: not run
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "mode": self.mode,
            "metric": self.metric,
            "measured": self.measured,
            "target": self.target,
            "ratio": self.ratio,
            "pass": self.passed,
            "note": self.note,
        }


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kb = 0
    versions: dict[str, str | None] = {}
    for package in ("strawberry-graphql", "graphql-core", "starlette", "uvicorn", "httpx", "orjson"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    for extra in ("uvloop", "httptools"):
        try:
            versions[extra] = importlib.metadata.version(extra)
        except importlib.metadata.PackageNotFoundError:
            versions[extra] = "not installed"
    return {
        "cpu_count": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "packages": versions,
    }


def git() -> dict[str, Any]:
    def run(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
            return done.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": run("rev-parse", "--short", "HEAD"), "dirty": bool(run("status", "--porcelain"))}


# --- targets -------------------------------------------------------------------------------------


def _get(results: dict[str, Any], run: str, scenario: str) -> dict[str, Any] | None:
    """A scenario's results in one run; None when it was not run or failed."""
    block = results["runs"].get(run) or {}
    found: dict[str, Any] | None = block.get(scenario)
    return None if found is None or "failed" in found else found


def _failure(results: dict[str, Any], *where: tuple[str, str]) -> str | None:
    """Why the first of these (run, scenario) pairs that failed did."""
    for run, scenario in where:
        found = (results["runs"].get(run) or {}).get(scenario) or {}
        if "failed" in found:
            return f"{run} {scenario} failed: {found['failed'][:160]}"
    return None


def failures(results: dict[str, Any]) -> list[str]:
    out = []
    for run, block in results["runs"].items():
        for scenario, found in (block or {}).items():
            if isinstance(found, dict) and "failed" in found:
                out.append(f"{run} {scenario}: {found['failed']}")
    for key, _ in PROFILES:
        profile = results.get(key) or {}
        if "failed" in profile:
            out.append(f"{key}: {profile['failed']}")
    return out


def targets(results: dict[str, Any]) -> list[Target]:
    out: list[Target] = []
    for scenario in ("S1", "S2"):
        bound = results["bounds"].get(scenario)
        cold = _get(results, "gateway_cold", scenario)
        if cold is None or bound is None:
            failed = _failure(results, ("gateway_cold", scenario))
            for metric in ("p50", "p99", "calls"):
                note = failed or "not run (--only)"
                out.append(Target(scenario, "cold", metric, "–", "", None, False if failed else None, note))
            continue
        limit = bound["limit_ms"]
        lat = cold["latency_ms"]
        for metric, factor in (("p50", P50_FACTOR), ("p99", P99_FACTOR)):
            value = lat[metric]
            ratio = cold[f"ratio_{metric}"]
            out.append(
                Target(
                    scenario,
                    "cold",
                    f"{metric} latency",
                    f"{value:.1f} ms" if value is not None else "no answers",
                    f"≤ {factor:.2f} × {limit:g} = {factor * limit:.1f} ms",
                    ratio,
                    ratio is not None and ratio <= factor and cold["errors"] == 0,
                )
            )
        out.append(
            Target(
                scenario,
                "cold",
                "upstream calls / request",
                f"{cold['calls_per_request']:g}",
                f"= minimum {bound['min_total']}",
                round(cold["calls_per_request"] / bound["min_total"], 3) if bound["min_total"] else None,
                bool(cold["calls_equal_minimum"]),
            )
        )
    warm_s1 = _get(results, "gateway_warm", "S1")
    if warm_s1 is not None:
        p50 = warm_s1["latency_ms"]["p50"]
        out.append(
            Target(
                "S1",
                "warm",
                "p50 latency",
                f"{p50:.2f} ms" if p50 is not None else "no answers",
                f"< {WARM_S1_P50_MS:g} ms",
                round(p50 / WARM_S1_P50_MS, 3) if p50 is not None else None,
                p50 is not None and p50 < WARM_S1_P50_MS and warm_s1["errors"] == 0,
            )
        )
    else:
        out.append(
            _not_run(
                results, "S1", "warm", "p50 latency", f"< {WARM_S1_P50_MS:g} ms", [("gateway_warm", "S1")]
            )
        )
    for scenario, _what in S3_SCENARIOS:
        out.extend(_s3_targets(results, scenario))
    for mode in ("cold", "warm"):
        s4 = _get(results, f"gateway_{mode}", "S4")
        if s4 is None:
            out.append(
                _not_run(
                    results,
                    "S4",
                    mode,
                    "gateway CPU / S1 request",
                    f"< {S4_CPU_MS:g} ms",
                    [(f"gateway_{mode}", "S4")],
                )
            )
            continue
        cpu = s4["cpu_ms_per_request"]
        out.append(
            Target(
                "S4",
                mode,
                "gateway CPU / S1 request",
                f"{cpu:.2f} ms",
                f"< {S4_CPU_MS:g} ms",
                round(cpu / S4_CPU_MS, 3),
                cpu < S4_CPU_MS and s4["errors"] == 0,
            )
        )
    return out


def _s3_targets(results: dict[str, Any], scenario: str) -> list[Target]:
    """S3 (one customer) or S3m (many): the gateway against the direct baseline, warm against cold,
    and the CPU per cold answer under load against the sequential figure (S4 cold)."""
    out: list[Target] = []
    base = _get(results, "baseline", scenario)
    for mode, factor in (("cold", S3_COLD_FACTOR), ("warm", S3_WARM_FACTOR)):
        gw = _get(results, f"gateway_{mode}", scenario)
        metric = "answers/s gateway / baseline"
        if gw is None or base is None:
            where = [(f"gateway_{mode}", scenario), ("baseline", scenario)]
            out.append(_not_run(results, scenario, mode, metric, f"≥ {factor:g}", where))
            continue
        ratio = round(gw["rps"] / base["rps"], 3) if base["rps"] else None
        out.append(
            Target(
                scenario,
                mode,
                metric,
                f"{gw['rps']:.1f} / {base['rps']:.1f} req/s",
                f"≥ {factor:g}",
                ratio,
                ratio is not None and ratio >= factor and gw["errors"] == 0,
                f"errors: gateway {gw['errors']}, baseline {base['errors']}; gateway load from"
                f" {gw.get('generator', 'python')}",
            )
        )
    cold, warm = _get(results, "gateway_cold", scenario), _get(results, "gateway_warm", scenario)
    if scenario == "S3":
        metric = "answers/s warm / cold"
        if cold is None or warm is None:
            where = [("gateway_cold", scenario), ("gateway_warm", scenario)]
            out.append(_not_run(results, scenario, "warm", metric, f"≥ {S3_WARM_OVER_COLD:g}", where))
        else:
            ratio = round(warm["rps"] / cold["rps"], 3) if cold["rps"] else None
            same = warm.get("generator") == cold.get("generator")
            out.append(
                Target(
                    scenario,
                    "warm",
                    metric,
                    f"{warm['rps']:.1f} / {cold['rps']:.1f} req/s",
                    f"≥ {S3_WARM_OVER_COLD:g}",
                    ratio,
                    ratio is not None and ratio >= S3_WARM_OVER_COLD and same,
                    f"load from {warm.get('generator', 'python')}"
                    + ("" if warm.get("generator") == "wrk" else " (wrk not installed: the Python one)"),
                )
            )
    # S3 asks for S4's customer; S3m for a mix, compared with the same mix asked one at a time (S4m)
    sequential = "S4m" if scenario == "S3m" and _get(results, "gateway_cold", "S4m") else "S4"
    s4 = _get(results, "gateway_cold", sequential)
    metric = f"CPU per answer, under load / sequential ({sequential})"
    target = f"≤ {LOAD_CPU_FACTOR:g}"
    if cold is None or s4 is None or not cold["cpu_ms_per_request"].get("gateway"):
        out.append(_not_run(results, scenario, "cold", metric, target, [("gateway_cold", scenario)]))
    else:
        under, alone = cold["cpu_ms_per_request"]["gateway"], s4["cpu_ms_per_request"]
        ratio = round(under / alone, 3) if alone else None
        out.append(
            Target(
                scenario,
                "cold",
                metric,
                f"{under:.2f} / {alone:.2f} ms",
                target,
                ratio,
                ratio is not None and ratio <= LOAD_CPU_FACTOR,
                f"{cold['clients']} clients",
            )
        )
    return out


def _not_run(
    results: dict[str, Any], scenario: str, mode: str, metric: str, target: str, where: list[tuple[str, str]]
) -> Target:
    failed = _failure(results, *where)
    if failed:
        return Target(scenario, mode, metric, "failed", target, None, False, failed)
    if mode == "warm" and not results["cache"]["available"]:
        note = "not run: the gateway has no cross-request cache yet (CG_CACHE)"
    else:
        note = "not run (--only)"
    return Target(scenario, mode, metric, "–", target, None, None, note)


# --- writing ---------------------------------------------------------------------------------------


def write(results: dict[str, Any], opts: Options) -> list[Path]:
    out_dir = opts.out
    out_dir.mkdir(parents=True, exist_ok=True)
    day = str(results["started_at"])[:10]
    stem = opts.name or day + ("-quick" if opts.quick else "")
    results["date"] = day
    results["quick"] = opts.quick
    results["machine"] = machine()
    results["git"] = git()
    results["config"] = {
        "customers": opts.customers,
        "seed": opts.seed,
        "anchor": opts.anchor.isoformat(),
        "latency_ms": {
            "sales": opts.latency.sales,
            "support": opts.latency.support,
            "contracts": opts.latency.contracts,
        },
        "support_rate": opts.support_rate,
        "s1_requests": opts.s1_requests,
        "s2_requests": opts.s2_requests,
        "s3_clients": opts.clients,
        "s3_duration_s": opts.duration,
        "s3_warmup_s": opts.warmup,
        "s4_requests": opts.s4_requests,
        "profile_requests": opts.profile_requests,
        "only": list(opts.only),
    }
    results["command"] = "python -m bench " + " ".join(opts.argv) if opts.argv else "python -m bench"
    results["reproduce"] = reproduce(opts)
    found = targets(results)
    results["targets"] = [t.to_json() for t in found]

    paths = []
    for key, suffix in PROFILES:
        profile = results.get(key)
        if profile is not None and "text" in profile:
            profile_path = out_dir / f"{stem}{suffix}"
            profile_path.write_text(profile.pop("text"))
            profile["file"] = profile_path.name
            paths.append(profile_path)
    png_path = out_dir / f"{stem}-latency.png"
    plotted = plot(results, png_path)
    results["plot"] = png_path.name if plotted is None else None
    if plotted is None:
        paths.append(png_path)
    md_path = out_dir / f"{stem}.md"
    md_path.write_text(markdown(results, found, plot_note=plotted))
    json_path = out_dir / f"{stem}.json"
    json_path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    return [md_path, json_path, *paths]


def reproduce(opts: Options) -> str:
    args = [
        f"--customers {opts.customers}",
        f"--seed {opts.seed}",
        f"--anchor {opts.anchor.isoformat()}",
        f"--sales-latency {opts.latency.sales:g}",
        f"--support-latency {opts.latency.support:g}",
        f"--contracts-latency {opts.latency.contracts:g}",
        f"--clients {opts.clients}",
        *([f"--s3-customers {opts.s3_customers}"] if opts.s3_customers else []),
        f"--duration {opts.duration:g}",
        f"--support-rate {opts.support_rate:g}",
    ]
    if opts.quick:
        args.insert(0, "--quick")
    if len(opts.only) < 4:
        args.append("--only " + ",".join(opts.only))
    return ".venv/bin/python -m bench " + " ".join(args)


def _fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _verdict(passed: bool | None) -> str:
    return "n/a" if passed is None else ("**pass**" if passed else "**FAIL**")


RUNS = (("gateway cold", "gateway_cold"), ("gateway warm", "gateway_warm"), ("baseline (direct)", "baseline"))
ROLE_LIST = "`data_steward`, `finance`, `support_agent`, `legal`, `executive`"


def _row(*cells: Any) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header: Sequence[str]) -> list[str]:
    return [_row(*header), _row(*(["---"] * len(header)))]


def _run(results: dict[str, Any], key: str, scenario: str) -> dict[str, Any] | None:
    return _get(results, key, scenario)


def markdown(results: dict[str, Any], found: list[Target], plot_note: str | None) -> str:
    lines: list[str] = []
    add = lines.extend
    add(_header(results))
    add(["## Targets", ""])
    add(_table(("scenario", "mode", "metric", "measured", "target", "ratio", "result", "note")))
    for t in found:
        ratio = _fmt(t.ratio, 3)
        add([_row(t.scenario, t.mode, t.metric, t.measured, t.target, ratio, _verdict(t.passed), t.note)])
    failed = failures(results)
    if failed:
        add(["", "**Failed** (recorded, the rest of the run went on):", *(f"- {f}" for f in failed)])
    add(["", _cache_note(results), ""])
    add(_setup(results))
    for scenario in ("S1", "S2"):
        add(_latency_section(results, scenario))
    for scenario, what in S3_SCENARIOS:
        add(_s3_section(results, scenario, what))
    add(_s4_section(results))
    add(_load_cpu_section(results))
    add(_profile_section(results, "profile", "S1 cold"))
    if "profile_s2_warm" in results:
        add(
            _profile_section(
                results, "profile_s2_warm", "S2 warm — the gateway's own work, nearly no upstream"
            )
        )
    add(_observations(results))
    add(["## Plot", ""])
    add([f"![latency distributions]({results['plot']})" if plot_note is None else plot_note, ""])
    return "\n".join(lines)


def _header(results: dict[str, Any]) -> list[str]:
    m = results["machine"]
    quick = " (quick smoke run — not a measurement)" if results["quick"] else ""
    dirty = " (with uncommitted changes)" if results["git"]["dirty"] else ""
    out = [
        f"# customer-graph benchmark{quick} — {results['date']}",
        "",
        f"Commit `{results['git']['commit']}`{dirty}, started {results['started_at']},"
        f" took {results['seconds']:g} s. Machine: **{m['cores_usable']} cores** ({m['cpu_model']}),"
        f" {m['memory_gb']:g} GB, {m['implementation']} {m['python']}.",
    ]
    bg = results.get("background") or {}
    if bg:
        busy = bg.get("busy_before_start", 0) * 100
        text = (
            f"Other work on the machine: {busy:.0f}% of all cores busy just before the start (waited"
            f" {bg.get('waited_s', 0):g} s for it to calm down); load average then {bg.get('load_average')},"
            f" at the end {results.get('load_average_at_end')}."
        )
        if not bg.get("quiet"):
            text += (
                " **The machine was not quiet: other processes shared the cores, so these figures are"
                " pessimistic, S3's most of all.**"
            )
        out += ["", text]
    start, end = results.get("speed_at_start") or {}, results.get("speed_at_end") or {}
    if start and end:
        steal = results.get("steal_share")
        stolen = ""
        if steal is not None:
            stolen = f"; the hypervisor took {steal:.1%} of the cores' time (steal) during the run"
        out += [
            "",
            f"Core speed: a fixed pure-Python loop took {start['fixed_loop_ms']:g} ms at the start and"
            f" {end['fixed_loop_ms']:g} ms at the end{stolen}. On these shared virtual cores that figure"
            " moves by up to 2× between runs, and every CPU time and latency below moves with it: compare"
            " runs by their ratios to the baseline measured in the same run, not by absolute figures.",
        ]
    return [*out, ""]


def _cache_note(results: dict[str, Any]) -> str:
    if not results["cache"]["available"]:
        return f"**Warm runs:** {results['cache']['note']} Cold = `CG_CACHE=off` (passed, currently ignored)."
    return (
        "Cold = a gateway process with `CG_CACHE=off` (no cross-request cache); warm = another with"
        " `CG_CACHE=on` (the gateway's cache, default TTLs). Warm S1/S2 repeat the same customer or page"
        " after one priming request; warm S3 asks for one customer (cached after its first request), warm S3m"
        " for customers drawn at random, nothing primed, so each one's first request misses (and entries"
        " expire by their TTLs)."
    )


def _setup(results: dict[str, Any]) -> list[str]:
    m = results["machine"]
    cfg = results["config"]
    lat = cfg["latency_ms"]
    rt = results.get("calibration", {}).get("round_trip", {})
    cust = results["customers"]
    ceiling = results.get("s3_ceiling_rps")
    rate = results.get("gateway_env", {}).get("CG_RATE_LIMIT_PER_MINUTE", "?")
    support_rate = results.get("gateway_env", {}).get("CG_SUPPORT_MAX_RATE", "?")
    injected = ", ".join(
        f"{s} **{lat[s]:g} ms** (round trip of a cheap call measured: median"
        f" {rt.get(s, {}).get('median_ms', '–')} ms, min {rt.get(s, {}).get('min_ms', '–')} ms)"
        for s in ("sales", "support", "contracts")
    )
    packages = ", ".join(f"{k} {v}" for k, v in m["packages"].items())
    return [
        "## Setup",
        "",
        f"- Data: {cfg['customers']} seeded customers (seed {cfg['seed']}, anchor {cfg['anchor']});"
        f" {cust['companies']} companies ({cust['companies_with_tax_id']} with a tax id)."
        f" S1's customer: `{cust['s1_account']}`.",
        f"- Injected latency (`POST /_demo/faults`, `latency_ms`, no jitter): {injected}. The register's"
        " built-in latency (`contracts_latency_ms`, default 20–60 ms) is set to 0 by `bench/systems.py`, so"
        " its effective latency is exactly the injected figure.",
        f"- The helpdesk's rate limit was **raised from its default 50 to {cfg['support_rate']:g} calls/s**:"
        " S3 needs two helpdesk calls per S1 request, so at 50 calls/s the helpdesk's limit, not the gateway"
        " or the baseline, would set S3's throughput (both would queue or get 429s). The gateway is told the"
        f" same (`CG_SUPPORT_MAX_RATE={support_rate}`): left at its default 45 calls/s, it would hold itself"
        " to about 22 S1 requests/s (two helpdesk calls each).",
        "- The register's own contract (4 calls in flight per client, a fifth gets `503 busy`) is kept."
        f" Every S3 request needs one register call, so no client can exceed 4 / {lat['contracts']:g} ms"
        f" ≈ **{ceiling} S1 requests/s** on cold data: S3's ceiling for the gateway without a cache and"
        " for the baseline alike.",
        f"- Processes, all sharing the same {m['cores_usable']} cores (nothing pinned): each demo system in"
        " its own process (`python -m bench.systems`: uvicorn, SQLite copied into memory); the gateway in"
        " its own (`python -m gateway.cli serve` = `customer-graph serve`, one uvicorn worker, configured"
        " by `CG_*` variables only, dev JWT secret, `CG_LOG_LEVEL=WARNING`, `CG_CACHE=off|on`, its audit"
        " database a fresh SQLite file, the default backend); S1, S2"
        " and S4 sent one at a time from the benchmark process; S3 from a separate load-generator process"
        " (`python -m bench.loadgen`).",
        "- Baseline (`bench/baseline.py`): a hand-written direct client — httpx, `asyncio.gather`, the "
        "same two waves and the same upstream calls as the gateway's minimum, at most 4 register calls in"
        " flight and 16 per other system (like the gateway's connectors: unbounded, httpx's pool spends "
        "its CPU on queue bookkeeping at 64 clients and answered nothing in a 3-s window; see "
        "`bench/baseline.py`); no caller auth, no policy, no masking; on the gateway's event loop "
        "(uvloop, uvicorn's choice when installed). S1, S2 and S4 run it in the "
        "benchmark process; S3 runs it inside the load-generator process (the app *is* the client), so in"
        " both S3 runs one Python event loop does the upstream fan-out: the gateway's in the gateway "
        "process, the baseline's in the generator. Each baseline scenario runs right after the cold "
        "gateway's same scenario, so both see the machine in the same state.",
        f"- The gateway's per-caller rate limit (default 1200/min, burst 200) is raised to {rate}/min so it"
        " never bites (it is still checked on every request): the sequential runs send one caller's requests"
        " faster than 20/s. In S3 each client is its own caller (its own token, the same roles).",
        f'- Caller: a token with the roles {ROLE_LIST}. "Every field": every field of `Customer` and of the'
        " types below it except `Ticket.comments` (one helpdesk call per ticket, a third wave the limits do"
        " not include); nested lists `first: 5`.",
        f"- Packages: {packages}.",
        "",
        f"Reproduce: `make bench` (= `{results['command']}`), or exactly: `{results['reproduce']}`.",
        "",
    ]


def _latency_section(results: dict[str, Any], scenario: str) -> list[str]:
    titles = {
        "S1": "S1 — one company customer, every field",
        "S2": "S2 — a page of 50 customers, every field, nested `first: 5`",
    }
    out = [f"## {titles[scenario]}", ""]
    bound = results["bounds"].get(scenario)
    if bound is None or not any(_run(results, key, scenario) for _, key in RUNS):
        return [*out, "Not run.", ""]
    limit = bound["limit_ms"]
    out += [
        f"Limit: {bound['detail']}. Minimum upstream calls: {bound['min_total']}"
        f" ({_calls(bound['min_calls'])}). CPU: the client side (the gateway process, or the benchmark"
        " process running the baseline) and the three systems, per request.",
        "",
    ]
    out += _table(
        ("run", "n", "p50 ms", "p99 ms", "mean ms", "limit ms", "p50/limit", "p99/limit", "target",
         "calls/request (min)", "errors", "CPU ms/request: client · systems")
    )  # fmt: skip
    notes = []
    for label, key in RUNS:
        r = _run(results, key, scenario)
        if r is None:
            out.append(_row(label, "–", "–", "–", "–", f"{limit:g}", "–", "–", "", "–", "not run", "–"))
            continue
        s = r["latency_ms"]
        cpu = r.get("cpu_ms_per_request") or {}
        systems_cpu = sum(v for k, v in cpu.items() if k != "client")
        cpu_text = f"{cpu['client']:.1f} · {systems_cpu:.1f}" if cpu else "–"
        target = "–"
        if key == "gateway_cold":
            target = f"≤ {P50_FACTOR:.2f}, ≤ {P99_FACTOR:.2f}"
        elif key == "gateway_warm" and scenario == "S1":
            target = f"p50 < {WARM_S1_P50_MS:g} ms"
        out.append(
            _row(
                label,
                s["n"],
                _fmt(s["p50"]),
                _fmt(s["p99"]),
                _fmt(s["mean"]),
                f"{limit:g}",
                _fmt(r.get("ratio_p50"), 3),
                _fmt(r.get("ratio_p99"), 3),
                target,
                f"{r['calls_per_request']:g} ({bound['min_total']})",
                r["errors"],
                cpu_text,
            )
        )
        calls = _calls({s: v["calls"] for s, v in r["upstream"].items()})
        peak = r["upstream"]["contracts"]["peak_in_flight"]
        errors = f"; errors {r['error_kinds']}" if r["errors"] else ""
        notes.append(
            f"- {label}: calls {calls} over {r['requests']} requests; register peak in flight {peak}{errors}"
        )
    return [*out, "", *notes, ""]


def _s3_section(results: dict[str, Any], scenario: str, what: str) -> list[str]:
    cfg = results["config"]
    customers = results["customers"]
    out = [
        f"## {scenario} — closed loop, {cfg['s3_clients']} clients running S1, {what},"
        f" for {cfg['s3_duration_s']:g} s",
        "",
    ]
    base = _run(results, "baseline", scenario)
    if not any(_run(results, key, scenario) for _, key in RUNS):
        return [*out, "Not run.", ""]
    if scenario == "S3":
        asked = (
            f"Every request asks for the same company customer (`{customers['s1_account']}`, S1's), as"
            " all clients of one screen would: the comparison measured side by side with other gateways"
            " (issue #19)."
        )
    else:
        asked = (
            f"Each request asks for a customer drawn at random from {customers['s3_customers']} company"
            " customers: a realistic mix, most of them not in the warm gateway's cache."
        )
    out += [
        f"{asked} After {cfg['s3_warmup_s']:g} s of warm-up, the window counts every request that"
        f" completes inside it. Ceiling from the register on cold data: ≈ {results.get('s3_ceiling_rps')}"
        " req/s. CPU = cores used over the window (and CPU ms per completed request) by each process;"
        " answers/s per core = answers/s ÷ the cores the gateway process (for the baseline: its"
        " process) used.",
        "",
    ]
    out += _table(
        ("run", "load from", "req/s", "vs baseline", "p50 ms", "p99 ms", "errors", "upstream calls/req",
         "CPU gateway", "answers/s per core", "CPU loadgen", "CPU sales · support · contracts",
         "machine busy (cores not ours)")
    )  # fmt: skip
    notes = []
    for label, key in RUNS:
        r = _run(results, key, scenario)
        if r is None:
            out.append(_row(label, *(["–"] * 11), "not run"))
            continue
        ratio = r["rps"] / base["rps"] if base and base["rps"] and key != "baseline" else None
        cores, per = r["cpu_cores_used"], r["cpu_ms_per_request"]

        def cpu(name: str, cores: dict[str, Any] = cores, per: dict[str, Any] = per) -> str:
            return f"{cores[name]:.2f} ({_fmt(per[name], 1)} ms)" if name in cores else "–"

        process = "gateway" if key != "baseline" else "loadgen"
        systems = " · ".join(f"{cores[f'system:{s}']:.2f}" for s in ("sales", "support", "contracts"))
        errors = f"{r['errors']} {r['error_kinds']}" if r["errors"] else "0"
        out.append(
            _row(
                label,
                "the direct client itself" if key == "baseline" else r.get("generator", "python"),
                f"{r['rps']:.1f}",
                _fmt(ratio, 2),
                _fmt(r["latency_ms"]["p50"]),
                _fmt(r["latency_ms"]["p99"]),
                errors,
                _fmt(r["calls_per_request"], 2),
                cpu("gateway"),
                _fmt(_per_core(r, process), 1),
                cpu("loadgen"),
                systems,
                f"{_fmt((r['machine_busy'] or 0) * 100, 0)}% of {r['cores']} ({_others(r):.2f} not ours)",
            )
        )
        if _others(r) > OTHERS_WARN:
            notes.append(
                f"- **{label}: {_others(r):.2f} cores were busy with processes outside the benchmark during"
                " the window; its figure is pessimistic.**"
            )
        bad = {s: v["statuses"] for s, v in r["upstream"].items() if set(v["statuses"]) - {"200"}}
        calls = _calls({s: v["calls"] for s, v in r["upstream"].items()})
        notes.append(
            f"- {label}: {r['ok']} answers in {r['elapsed_s']:g} s; upstream {calls}; register peak in flight"
            f" {r['upstream']['contracts']['peak_in_flight']}"
            + (f"; upstream non-200 answers {bad}" if bad else "; every upstream answer 200")
        )
    gateway_runs = [_run(results, key, scenario) for key in ("gateway_cold", "gateway_warm")]
    if any(r and r.get("generator") == "wrk" for r in gateway_runs):
        notes.append(
            "- Load against the gateway from `wrk` (one thread, one keep-alive connection per client, a Lua"
            " script that checks every answer: HTTP 200, no `errors`, a customer; `bench/wrk.py`): its CPU"
            " column is wrk's. Against the baseline the load generator *is* the direct client (Python,"
            " `bench/loadgen.py`), so its CPU column is the baseline's own cost."
        )
    else:
        notes.append(
            "- **`wrk` is not installed: the load against the gateway came from the Python generator**"
            " (`bench/loadgen.py`, a hand-rolled keep-alive HTTP/1.1 client, one more Python event loop on"
            " the shared cores). `make bench` installs wrk when it runs as root with apt-get."
        )
    return [*out, "", *notes, ""]


def _per_core(run: dict[str, Any], process: str) -> float | None:
    """Answers a second per core the process used over the window."""
    cores = run["cpu_cores_used"].get(process)
    return run["rps"] / cores if cores else None


def _load_cpu_section(results: dict[str, Any]) -> list[str]:
    """CPU per answer alone (S4: sequential, zero latency; S1: sequential, with latency) and under load
    (S3, S3m), and answers/s per core, for the gateway and for the direct client."""
    out = [
        "## CPU per answer: sequential and under load; answers/s per core",
        "",
        "The same S1 answer, measured four ways in this run: S4 (sequential, zero upstream latency), S1"
        " (sequential, the injected latencies), S3 and S3m (64 clients). The gateway's figures are its"
        " process's; the direct client's are its own process's (the benchmark's for S1/S4, the load"
        " generator's for S3/S3m). Under load / S4 is the issue-#19 target (≤ 1.2 for the cold gateway)."
        " S3m asks for a mix of customers, which costs more than S4's one even one at a time: its ratio is"
        " taken to S4m, the same mix asked sequentially at zero latency (cold gateway only).",
        "",
    ]
    out += _table(
        ("run", "S4 CPU ms", "S1 CPU ms", "S3 CPU ms", "S3 / S4", "S3 answers/s per core",
         "S4m CPU ms", "S3m CPU ms", "S3m / S4m (else S4)", "S3m answers/s per core")
    )  # fmt: skip
    for label, key in RUNS:
        process = "loadgen" if key == "baseline" else "gateway"
        s4, s1 = _get(results, key, "S4"), _get(results, key, "S1")
        alone = s4["cpu_ms_per_request"] if s4 else None
        cells: list[str] = [
            label,
            _fmt(alone, 2),
            _fmt((s1 or {}).get("cpu_ms_per_request", {}).get("client"), 2),
        ]
        mix = _get(results, key, "S4m")
        for scenario in ("S3", "S3m"):
            r = _get(results, key, scenario)
            under = r["cpu_ms_per_request"].get(process) if r else None
            sequential = alone
            if scenario == "S3m":
                sequential = mix["cpu_ms_per_request"] if mix else alone
                cells.append(_fmt(mix["cpu_ms_per_request"] if mix else None, 2))
            cells += [
                _fmt(under, 2),
                _fmt(under / sequential if under and sequential else None, 2),
                _fmt(_per_core(r, process) if r else None, 1),
            ]
        out.append(_row(*cells))
    return [*out, ""]


def _s4_section(results: dict[str, Any]) -> list[str]:
    out = ["## S4 — CPU per S1 request, zero upstream latency", ""]
    out += _table(
        (
            "run",
            "requests",
            "CPU ms / request",
            "target",
            "wall p50 ms",
            "errors",
            "systems' CPU ms / request",
        )
    )
    labels = {
        "gateway_cold": "gateway cold (gateway process)",
        "gateway_warm": "gateway warm (gateway process)",
        "baseline": "baseline (direct client, in-process)",
    }
    for _, key in RUNS:
        r = _run(results, key, "S4")
        target = "–" if key == "baseline" else f"< {S4_CPU_MS:g} ms"
        if r is None:
            out.append(_row(labels[key], "–", "–", target, "–", "not run", "–"))
            continue
        out.append(
            _row(
                labels[key],
                r["requests"],
                f"{r['cpu_ms_per_request']:.2f}",
                target,
                _fmt(r["latency_ms"]["p50"], 2),
                r["errors"],
                " · ".join(f"{k} {v:.1f}" for k, v in (r.get("systems_cpu_ms_per_request") or {}).items()),
            )
        )
    out += [
        "",
        "Gateway CPU = user + system time of the gateway process (`/proc/<pid>/stat`) over the requests,"
        " divided by their number (10 ms clock ticks; the resolution per request is in the JSON). The"
        " baseline's is the benchmark process's own (`getrusage`), its request loop included. The systems'"
        " column is what the three demo systems spent answering (on the same cores).",
        "",
    ]
    return out


def _profile_section(results: dict[str, Any], key: str, what: str) -> list[str]:
    out = [f"## Where the gateway's CPU goes (cProfile, CPU time, {what}; in-process, zero latency)", ""]
    profile = results.get(key)
    if profile is None:
        return [*out, "Not run (S4 not selected).", ""]
    if "failed" in profile:
        return [*out, f"Failed: {profile['failed']}", ""]
    packages = ", ".join(f"{k} {v * 100:.0f}%" for k, v in list(profile["by_package"].items())[:12])
    out += [
        f"{profile['requests']} requests, {profile['per_request_ms']:.2f} ms of profiled CPU a request"
        " (cProfile inflates Python-heavy code; the shares are what matter). Full listing with callers'"
        " cumulative times:"
        f" `{profile.get('file', '')}`.",
        "",
        f"Own time by package: {packages}.",
        "",
    ]
    ours = profile.get("ours_by_cumulative") or []
    if ours:
        out += [
            "Our code (gateway, schema, policies, connectors) by cumulative CPU, what it calls included:",
            "",
        ]
        out += _table(("function", "calls", "cumulative ms / request", "share of the request"))
        for row in ours[:10]:
            out.append(
                _row(
                    f"`{row['function']}`",
                    row["calls"],
                    f"{row['cum_ms_per_request']:.2f}",
                    f"{row['cum_share'] * 100:.0f}%",
                )
            )
        out += ["", "Top functions by own CPU:", ""]
    out += _table(("#", "function", "calls", "own s", "own ms / request", "share"))
    for i, row in enumerate(profile["top"][:10], 1):
        out.append(
            _row(
                i,
                f"`{row['function']}`",
                row["calls"],
                f"{row['tottime_s']:.3f}",
                f"{row['per_request_ms']:.3f}",
                f"{row['share'] * 100:.1f}%",
            )
        )
    return [*out, ""]


HTTP_STACK = ("httpx", "httpcore", "anyio", "h11")
GRAPHQL_STACK = ("graphql", "strawberry")


def _observations(results: dict[str, Any]) -> list[str]:
    """Facts computed from the figures, to read them by (no judgement beyond arithmetic)."""
    notes: list[str] = []
    for scenario in ("S1", "S2"):
        bound = results["bounds"].get(scenario)
        cold, base = _get(results, "gateway_cold", scenario), _get(results, "baseline", scenario)
        if bound and cold and base and cold["latency_ms"]["p50"] and base["latency_ms"]["p50"]:
            gp, bp = cold["latency_ms"]["p50"], base["latency_ms"]["p50"]
            gc, bc = cold["cpu_ms_per_request"].get("client"), base["cpu_ms_per_request"].get("client")
            notes.append(
                f"{scenario}: the direct baseline itself reaches p50 {bp / bound['limit_ms']:.2f} × limit"
                " — the limit leaves out the systems' own processing and the client's; the gateway's p50 is"
                f" {gp - bp:+.1f} ms from the baseline's, and it spends {gc:.1f} ms of CPU a request to the"
                f" baseline's {bc:.1f} ms."
            )
    for scenario, mode in (("S3", "cold"), ("S3", "warm"), ("S3m", "cold"), ("S3m", "warm")):
        gw, base = _get(results, f"gateway_{mode}", scenario), _get(results, "baseline", scenario)
        if not gw:
            continue
        cores = gw["cpu_cores_used"].get("gateway", 0.0)
        per = gw["cpu_ms_per_request"].get("gateway")
        text = (
            f"{scenario} {mode}: {gw['rps']:.1f} req/s with the gateway process at {cores:.2f} cores"
            f" ({_fmt(per)} ms of CPU per answer) and the machine {100 * (gw['machine_busy'] or 0):.0f}% busy"
            f" ({_others(gw):.2f} cores of it outside the benchmark's processes)"
        )
        if per:
            text += f"; one process at one full core would top out near {1000 / per:.0f} req/s"
        text += f"; {_binding(results, gw, 'gateway')}"
        if base and base["rps"]:
            bper = base["cpu_ms_per_request"].get("loadgen")
            text += (
                f". The baseline: {base['rps']:.1f} req/s at {_fmt(bper)} ms of CPU per answer in its"
                f" process, machine {100 * (base['machine_busy'] or 0):.0f}% busy ({_others(base):.2f} cores"
                f" outside the benchmark); {_binding(results, base, 'loadgen')}"
            )
        notes.append(text + ".")
    cold4, base4 = _get(results, "gateway_cold", "S4"), _get(results, "baseline", "S4")
    if cold4 and base4 and base4["cpu_ms_per_request"]:
        notes.append(
            f"S4: the gateway spends {cold4['cpu_ms_per_request']:.1f} ms of CPU on an S1 request, the direct"
            f" client {base4['cpu_ms_per_request']:.1f} ms for the same nine upstream calls"
            f" ({cold4['cpu_ms_per_request'] / base4['cpu_ms_per_request']:.1f} ×)."
        )
    for key, label, stack in (
        ("profile", "S1 cold", HTTP_STACK),
        ("profile_s2_warm", "S2 warm", GRAPHQL_STACK),
    ):
        profile = results.get(key) or {}
        if "by_package" not in profile:
            continue
        share = sum(profile["by_package"].get(name, 0.0) for name in stack)
        text = f"Profile {label}: {', '.join(stack)} take {share * 100:.0f}% of the own CPU time"
        audit = [r for r in profile.get("ours_by_cumulative", []) if "/store/" in r["function"]]
        if audit:
            text += (
                f"; the audit store's `{audit[0]['function']}` {audit[0]['cum_share'] * 100:.0f}% cumulative"
            )
        notes.append(text + ".")
    notes.append(
        "cProfile counts every resumption of a coroutine as a call, so coroutine call counts exceed the"
        " upstream calls; and its per-call overhead inflates call-heavy code (the shares rank, the ms do not"
        " add up to the unprofiled S4 figure)."
    )
    return ["## Observations (arithmetic on the figures above)", "", *(f"- {n}" for n in notes), ""]


def _binding(results: dict[str, Any], run: dict[str, Any], process: str) -> str:
    """Which limits an S3 run was near (at least 85% used), from its CPU and register figures."""
    cores = run["cpu_cores_used"].get(process, 0.0)
    register_rate = run["upstream"]["contracts"]["calls"] / run["elapsed_s"] if run["elapsed_s"] else 0.0
    latency = results["config"]["latency_ms"]["contracts"]
    register_max = REGISTER_WIDTH * 1000.0 / latency if latency else 0.0
    near = []
    if cores >= NEAR:
        near.append(f"one full core for its one event loop ({cores:.2f} cores)")
    if (run.get("machine_busy") or 0.0) >= NEAR:
        near.append(f"the machine's cores ({100 * run['machine_busy']:.0f}% busy)")
    if register_max and register_rate >= NEAR * register_max:
        near.append(f"the register's 4 in flight ({register_rate:.0f} of {register_max:.0f} calls/s)")
    if near:
        return "it is at or near " + " and ".join(near)
    return (
        f"neither its CPU ({cores:.2f} cores), the machine's, nor the register ({register_rate:.0f} calls/s)"
        " is near its limit: it waits on something else (a self-imposed bound?)"
    )


def _others(run: dict[str, Any]) -> float:
    """Cores used during an S3 window by processes that are not the benchmark's."""
    busy = float(run.get("machine_busy") or 0.0) * int(run.get("cores", 0))
    return max(0.0, busy - float(sum(run["cpu_cores_used"].values())))


def _calls(calls: dict[str, Any]) -> str:
    return ", ".join(f"{s} {v:g}" for s, v in calls.items())


def plot(results: dict[str, Any], path: Path) -> str | None:
    """Latency distributions per scenario, gateway vs baseline; a note instead when impossible."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "No plot: matplotlib is not installed (`pip install -e '.[bench]'`; `make bench` does)."
    series = (
        ("gateway cold", "gateway_cold", "tab:blue"),
        ("gateway warm", "gateway_warm", "tab:green"),
        ("baseline (direct)", "baseline", "tab:orange"),
    )
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    for ax, scenario in zip(axes.flat[:3], ("S1", "S2", "S3"), strict=True):
        drawn = False
        for label, key, color in series:
            r = _get(results, key, scenario)
            if not r:
                continue
            if scenario == "S3":
                xs = r.get("quantiles_ms") or []
                ys = [q / 100 for q in range(len(xs))]
                label += f" ({r['rps']:.0f} req/s)"
            else:
                xs = sorted(r["latencies_ms"])
                ys = [(i + 1) / len(xs) for i in range(len(xs))]
            if xs:
                ax.step(xs, ys, where="post", label=label, color=color)
                drawn = True
        bound = results["bounds"].get(scenario)
        if bound is not None:
            limit = bound["limit_ms"]
            ax.axvline(limit, color="grey", linestyle="--", linewidth=1, label=f"limit {limit:g} ms")
            ax.axvline(limit * P99_FACTOR, color="grey", linestyle=":", linewidth=1, label="1.30 × limit")
        titles = {
            "S1": "S1 one customer, every field (sequential)",
            "S2": "S2 page of 50, every field (sequential)",
            "S3": f"S3 {results['config']['s3_clients']} clients, one customer, closed loop",
        }
        ax.set_title(titles[scenario])
        ax.set_xscale("log")
        ax.set_xlabel("latency (ms, log scale)")
        ax.set_ylabel("share of requests ≤ x")
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=8, loc="lower right")
        else:
            ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
    ax = axes.flat[3]
    labels, values, colors = [], [], []
    for label, key, color in series:
        r = _get(results, key, "S4")
        if r:
            labels.append(label)
            values.append(r["cpu_ms_per_request"])
            colors.append(color)
    if values:
        ax.bar(labels, values, color=colors)
        for i, v in enumerate(values):
            ax.text(i, v, f"{v:.2f}", ha="center", va="bottom")
    ax.axhline(S4_CPU_MS, color="grey", linestyle="--", linewidth=1, label="target 5 ms")
    ax.set_title("S4 CPU per S1 request, zero latency")
    ax.set_ylabel("CPU ms / request")
    ax.legend(fontsize=8)
    fig.suptitle(f"customer-graph benchmark {results['date']} ({results['machine']['cores_usable']} cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def rerender(json_path: Path) -> list[Path]:
    """The Markdown and the plot again from a run's JSON (no measuring)."""
    results = json.loads(json_path.read_text())
    found = targets(results)
    results["targets"] = [t.to_json() for t in found]
    stem = json_path.name.removesuffix(".json")
    png_path = json_path.with_name(f"{stem}-latency.png")
    plotted = plot(results, png_path)
    results["plot"] = png_path.name if plotted is None else None
    md_path = json_path.with_name(f"{stem}.md")
    md_path.write_text(markdown(results, found, plot_note=plotted))
    json_path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    return [md_path, json_path] + ([png_path] if plotted is None else [])


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m bench.report RESULTS.json", file=sys.stderr)
        sys.exit(2)
    for written in rerender(Path(sys.argv[1])):
        print(f"bench: wrote {written}")
