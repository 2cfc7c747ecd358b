"""Latency summaries: percentiles by linear interpolation between closest ranks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(latencies_ms: Sequence[float]) -> dict[str, Any]:
    """n, p50, p90, p99, mean, min, max (milliseconds, rounded to 0.01)."""
    if not latencies_ms:
        return {"n": 0, "p50": None, "p90": None, "p99": None, "mean": None, "min": None, "max": None}
    return {
        "n": len(latencies_ms),
        "p50": round(percentile(latencies_ms, 50), 2),
        "p90": round(percentile(latencies_ms, 90), 2),
        "p99": round(percentile(latencies_ms, 99), 2),
        "mean": round(sum(latencies_ms) / len(latencies_ms), 2),
        "min": round(min(latencies_ms), 2),
        "max": round(max(latencies_ms), 2),
    }
