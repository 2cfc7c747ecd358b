"""``python -m bench.identity``: a full ``customer-graph identity scan`` of a large data set — wall time and
peak memory of the scan process (the issue's target: 100,000 accounts in under 60 s and under 1 GB).

Generates (or reuses) the demo data set, serves its sales system alone in a process of its own
(``bench.systems``), and runs the scan command against it in another, with a fresh SQLite database.
Prints one line and writes ``bench/results/<date>-identity.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime
from pathlib import Path

from demo import sales as demo_sales
from demo.data import DemoData, generate


@contextlib.contextmanager
def sales_system(data: DemoData) -> Iterator[str]:
    """The demo sales system alone in a process of its own (``bench.systems``); its URL."""
    command = [sys.executable, "-m", "bench.systems", "--system", "sales", "--data-dir", str(data.data_dir)]
    command += ["--customers", str(data.customers), "--seed", str(data.seed)]
    command += ["--anchor", data.anchor.isoformat(), "--support-rate", "1000"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        yield str(json.loads(line)["url"])
    finally:
        process.terminate()
        process.wait(timeout=10)


TARGET_SECONDS = 60.0
TARGET_BYTES = 1 << 30


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.identity", description=__doc__)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--anchor", type=date.fromisoformat, default=date(2026, 12, 4))
    parser.add_argument("--data-dir", type=Path, default=Path("var/bench-identity"))
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    data = generate(args.data_dir, customers=args.customers, seed=args.seed, anchor=args.anchor)
    with sales_system(data) as url, tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "CG_SALES_URL": url,
            "CG_SALES_API_KEY": demo_sales.DEFAULT_API_KEY,
            "CG_LOG_LEVEL": "WARNING",
        }
        command = [sys.executable, "-m", "gateway.cli", "identity", "scan", "--no-progress"]
        command += ["--database-url", f"sqlite:///{tmp}/gateway.db"]
        started = time.perf_counter()
        scan = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(scan.pid, 0)  # the scan process's own peak memory, not the system's
        seconds = time.perf_counter() - started
        assert scan.stdout is not None and scan.stderr is not None
        output, errors = scan.stdout.read(), scan.stderr.read()
    peak = usage.ru_maxrss * 1024
    if os.waitstatus_to_exitcode(status) != 0:
        print(errors, file=sys.stderr)
        return 1
    result = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "customers": args.customers,
        "scan": output.strip(),
        "wall_seconds": round(seconds, 2),
        "peak_rss_bytes": peak,
        "targets": {"seconds": TARGET_SECONDS, "bytes": TARGET_BYTES},
        "met": seconds < TARGET_SECONDS and peak < TARGET_BYTES,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{date.today().isoformat()}-identity.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"identity scan of {args.customers} customers: {seconds:.1f} s wall "
        f"(target < {TARGET_SECONDS:g} s), "
        f"peak {peak / 1e6:.0f} MB (target < {TARGET_BYTES / 1e6:.0f} MB): "
        f"{'met' if result['met'] else 'NOT met'}"
    )
    print(f"  {result['scan']}")
    return 0 if result["met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
