"""The benchmark's quick run end to end, with tiny numbers: every process starts and stops, and the
report has every scenario. Timing is never asserted (that is what ``make bench`` reports)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ["S1", "S2", "S3", "S4"]
RUN_KEYS = ["S1", "S2", "S3", "S3m", "S4"]  # S3 runs twice: one customer (S3), many customers (S3m)


@pytest.mark.bench
def test_quick_bench_writes_a_report_with_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "results"
    command = [
        sys.executable, "-m", "bench", "--quick",
        "--customers", "60", "--data-dir", str(tmp_path / "data"), "--out", str(out),
        "--sales-latency", "1", "--support-latency", "1", "--contracts-latency", "2",
        "--s1-requests", "2", "--s2-requests", "1", "--s4-requests", "3", "--profile-requests", "2",
        "--clients", "4", "--duration", "0.5", "--warmup", "0.2",
        "--quiet-wait", "0", "--timeout", "150",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]

    reports = list(out.glob("*-quick.md"))
    assert len(reports) == 1, sorted(p.name for p in out.iterdir())
    stem = reports[0].name.removesuffix(".md")
    results = json.loads((out / f"{stem}.json").read_text())
    markdown = reports[0].read_text()

    failed = [
        f"{run} {name}: {found['failed']}"
        for run, block in results["runs"].items()
        for name, found in (block or {}).items()
        if "failed" in found
    ]
    assert not failed, failed
    assert "failed" not in results["profile"], results["profile"]
    for scenario in RUN_KEYS:
        assert f"## {scenario} " in markdown
        assert scenario in results["runs"]["gateway_cold"]
        assert scenario in results["runs"]["baseline"]
        assert any(t["scenario"] == scenario for t in results["targets"])
    if results["cache"]["available"]:
        assert sorted(results["runs"]["gateway_warm"]) == RUN_KEYS
    else:
        assert results["runs"]["gateway_warm"] is None
        assert "cache" in results["cache"]["note"]
    assert set(results["bounds"]) == {"S1", "S2"}
    assert results["bounds"]["S1"]["min_total"] >= 8
    assert results["runs"]["gateway_cold"]["S1"]["requests"] == 2
    assert (out / f"{stem}-profile.txt").stat().st_size > 0
    if importlib.util.find_spec("matplotlib") is not None:
        assert (out / f"{stem}-latency.png").stat().st_size > 0
    assert "Reproduce" in markdown
    assert "Core speed: a fixed pure-Python loop took" in markdown  # runs on shared cores compare by it
    assert results["speed_at_start"]["fixed_loop_ms"] > 0
