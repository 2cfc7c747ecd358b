"""The demo systems' control routes (``/_demo/faults``, ``/_demo/stats``) and their auth headers."""

from __future__ import annotations

import base64
import statistics
import time
from typing import Any

import httpx

from demo import contracts, sales, support

SYSTEMS = ("sales", "support", "contracts")


def auth_headers() -> dict[str, dict[str, str]]:
    pair = f"{contracts.DEFAULT_USER}:{contracts.DEFAULT_PASSWORD}".encode()
    return {
        "sales": {"X-Api-Key": sales.DEFAULT_API_KEY},
        "support": {"Authorization": f"Bearer {support.DEFAULT_TOKEN}"},
        "contracts": {"Authorization": "Basic " + base64.b64encode(pair).decode()},
    }


class Control:
    """Faults and stats of the three running systems."""

    def __init__(self, urls: dict[str, str]) -> None:
        self.urls = urls
        self.http = httpx.Client(timeout=10)

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, system: str, path: str, body: Any = None) -> dict[str, Any]:
        response = self.http.request(method, f"{self.urls[system]}/_demo/{path}", json=body)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def set_latency(self, latencies: dict[str, float]) -> None:
        """Replace each system's faults with exactly ``latency_ms`` (no jitter, no errors); checked."""
        for system, ms in latencies.items():
            body = {"latency_ms": ms} if ms > 0 else {}
            answer = self._call("POST", system, "faults", body)
            if float(answer.get("latency_ms", -1)) != float(ms) or answer.get("jitter_ms"):
                raise RuntimeError(f"{system} did not take latency_ms={ms}: {answer}")

    def reset_stats(self) -> None:
        for system in SYSTEMS:
            self._call("POST", system, "stats/reset")

    def stats(self) -> dict[str, dict[str, Any]]:
        return {system: self._call("GET", system, "stats") for system in SYSTEMS}

    def calibrate(self, probes: dict[str, tuple[str, str, dict[str, Any]]], n: int = 10) -> dict[str, Any]:
        """Round-trip times of a cheap call to each system (median and min of ``n``), in ms."""
        headers = auth_headers()
        result: dict[str, Any] = {}
        for system, (method, path, params) in probes.items():
            times = []
            for _ in range(n):
                started = time.perf_counter()
                response = self.http.request(
                    method, self.urls[system] + path, params=params, headers=headers[system]
                )
                times.append((time.perf_counter() - started) * 1000)
                response.raise_for_status()
            result[system] = {"median_ms": round(statistics.median(times), 2), "min_ms": round(min(times), 2)}
        return result


def call_counts(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Calls per system and endpoint between two ``stats()`` snapshots (no reset in between)."""
    out: dict[str, Any] = {}
    for system in SYSTEMS:
        b, a = before[system], after[system]
        endpoints = {}
        for name, entry in a["endpoints"].items():
            made = entry["count"] - b["endpoints"].get(name, {}).get("count", 0)
            if made:
                endpoints[name] = made
        statuses = {}
        for status, count in a["statuses"].items():
            made = count - b["statuses"].get(status, 0)
            if made:
                statuses[status] = made
        out[system] = {
            "calls": a["count"] - b["count"],
            "endpoints": endpoints,
            "statuses": statuses,
            "peak_in_flight": a["peak_in_flight"],
        }
    return out
