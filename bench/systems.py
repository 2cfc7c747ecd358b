"""``python -m bench.systems --system NAME ...``: one demo system alone in this process.

``python -m demo`` serves all three systems on one event loop and keeps the register's built-in
20–60 ms latency. The benchmark wants each system in its own process (as the departments' servers
are) and every latency exactly as configured, so this runner starts ``demo.servers.DemoSystems``
with one system and the register's built-in latency at zero: the benchmark injects each system's
latency with ``POST /_demo/faults`` (``latency_ms``), the same mechanism for all three. It prints
``{"system": ..., "url": ...}`` as one line once listening, then serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from types import FrameType

from demo.servers import SYSTEMS, DemoSystems

# The register's own latency (DemoSystems' contracts_latency_ms, default 20–60 ms): off, so the only
# latency is the injected one and the report's figure is the effective one.
REGISTER_BUILTIN_LATENCY_MS = (0.0, 0.0)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.systems", description=__doc__)
    p.add_argument("--system", choices=SYSTEMS, required=True)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--customers", type=int, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--anchor", type=date.fromisoformat, required=True)
    p.add_argument("--support-rate", type=float, required=True)
    p.add_argument("--host", default="127.0.0.1")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    systems = DemoSystems(
        args.data_dir,
        customers=args.customers,
        seed=args.seed,
        anchor=args.anchor,
        host=args.host,
        sales_port=0,
        support_port=0,
        contracts_port=0,
        support_rate=args.support_rate,
        contracts_latency_ms=REGISTER_BUILTIN_LATENCY_MS,
        in_memory=True,  # reads only; no disk I/O in the measurements
        systems=[args.system],
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    systems.start()
    try:
        print(json.dumps({"system": args.system, "url": systems.urls[args.system]}), flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        systems.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
