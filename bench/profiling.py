"""Where the gateway's CPU goes: requests in-process under cProfile (CPU time).

The gateway app (``gateway.app.create_app``) runs in this process behind ``httpx.ASGITransport``
(no socket, no uvicorn), against the running demo systems with zero latency; cProfile records every
function of the thread (the in-process test client's share is small and listed by name).
"""

from __future__ import annotations

import cProfile
import io
import pstats
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

_ROOT = str(Path(__file__).resolve().parent.parent) + "/"
OUR_PACKAGES = frozenset({"gateway", "schema", "policies", "connectors"})


async def profile_requests(
    environ: Mapping[str, str], token: str, bodies: list[dict[str, Any]], requests: int, title: str
) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    """(the pstats text, the top entries by own time, totals) over ``requests`` requests, cycling
    through ``bodies`` (after a few unprofiled ones: imports, document cache, pools, cache)."""
    from gateway.app import create_app
    from gateway.settings import load_settings

    app = create_app(load_settings(environ=environ))
    headers = {"Authorization": f"Bearer {token}"}
    # CPU time, not wall time: on shared cores a wall-clock profile charges preemption (typically
    # to the socket send that wakes a demo system) to whatever function was running.
    profiler = cProfile.Profile(time.process_time)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
    ):

        async def one(i: int) -> None:
            response = await client.post("/graphql", json=bodies[i % len(bodies)], headers=headers)
            response.raise_for_status()
            if response.json().get("errors"):
                raise RuntimeError(f"errors in the profile run: {response.json()['errors'][:3]}")

        for i in range(min(5, requests)):
            await one(i)
        started = time.perf_counter()
        cpu_started = time.process_time()
        profiler.enable()
        for i in range(requests):
            await one(i)
        profiler.disable()
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu_started

    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream)
    total = stats.total_tt  # type: ignore[attr-defined]
    stream.write(
        f"cProfile (CPU time) of {requests} sequential {title}, gateway in-process (ASGITransport),"
        f" zero upstream latency.\nProfiled CPU {total:.3f} s = {total / requests * 1000:.2f} ms a request"
        f" (cProfile's overhead included; the process's CPU {cpu:.2f} s, wall {wall:.2f} s).\n\n"
    )
    stream.write("=== by own time (tottime) ===\n")
    stats.sort_stats("tottime").print_stats(30)
    stream.write("\n=== by cumulative time ===\n")
    stats.sort_stats("cumulative").print_stats(30)

    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    rows = sorted(raw.items(), key=lambda item: item[1][2], reverse=True)[:15]
    top = [
        {
            "function": _name(key),
            "calls": value[1],
            "tottime_s": round(value[2], 4),
            "cumtime_s": round(value[3], 4),
            "share": round(value[2] / total, 4) if total else 0.0,
            "per_request_ms": round(value[2] / requests * 1000, 3),
        }
        for key, value in rows
    ]
    by_package = _by_package(raw, total)
    ours = sorted(
        (
            (key, value)
            for key, value in raw.items()
            if key[0].startswith(_ROOT) and key[0][len(_ROOT) :].split("/", 1)[0] in OUR_PACKAGES
        ),
        key=lambda item: item[1][3],
        reverse=True,
    )[:15]
    totals = {
        "ours_by_cumulative": [
            {
                "function": _name(key),
                "calls": value[1],
                "cumtime_s": round(value[3], 4),
                "cum_share": round(value[3] / total, 4) if total else 0.0,
                "cum_ms_per_request": round(value[3] / requests * 1000, 3),
            }
            for key, value in ours
        ],
        "requests": requests,
        "profiled_cpu_s": round(total, 4),
        "per_request_ms": round(total / requests * 1000, 3),
        "wall_s": round(wall, 3),
        "title": title,
        "by_package": by_package,
    }
    return stream.getvalue(), top, totals


def _name(key: tuple[str, int, str]) -> str:
    path, line, func = key
    if path == "~":
        return func
    short = path
    for marker in ("site-packages/", "/lib/python3.11/", _ROOT):
        if marker in path:
            short = path.split(marker, 1)[1]
            break
    return f"{short}:{line}({func})"


def _by_package(
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]], total: float
) -> dict[str, float]:
    """Own time grouped by top-level package (strawberry, graphql, httpx, our packages, …)."""
    groups: dict[str, float] = {}
    for (path, _, _func), value in raw.items():
        if path == "~":
            name = "builtins"
        elif "site-packages/" in path:
            name = path.split("site-packages/", 1)[1].split("/", 1)[0]
        elif "/lib/python3" in path:
            name = "stdlib:" + path.rsplit("/lib/python3", 1)[1].split("/", 2)[1].removesuffix(".py")
        else:
            parts = path.rstrip("/").split("/")
            name = parts[-2] if len(parts) > 1 else parts[-1]
        groups[name] = groups.get(name, 0.0) + value[2]
    ordered = sorted(groups.items(), key=lambda kv: kv[1], reverse=True)[:15]
    return {name: round(seconds / total, 4) if total else 0.0 for name, seconds in ordered}
