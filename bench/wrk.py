"""S3 against the gateway with ``wrk`` (Debian's package): a closed loop in C, so the load generator
takes almost no CPU from the two shared cores and S3 measures the gateway, not its client.

The Python load generator (``bench/loadgen.py``) costs little per request too, but it is one more
Python event loop on the same two cores: measured side by side on this machine the choice of load
generator decided the ranking of two gateways (issue #19). ``make bench`` installs ``wrk`` when it
is missing and it may (root, ``apt-get``); without it S3 falls back to the Python generator and the
report says so.

``wrk`` runs one thread with ``clients`` keep-alive connections. A Lua script sends S1 for a customer
drawn at random from the scenario's list, with each request's token taken in turn from the clients'
tokens (each client its own caller, as in the Python generator), and checks every answer: HTTP 200,
no ``errors`` entry and a customer in ``data``; anything else counts as an error. It prints one line
``RESULT {json}`` at the end: completed requests, the good and bad answers, wrk's socket errors and
the latency percentiles 0–100 (ms).

A warm-up run (``warmup`` seconds, not counted) comes first; the measured run counts the requests
that complete within its ``duration`` (wrk does not count those still in flight at its end).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path
from typing import Any

WRK_TIMEOUT_S = 60  # wrk's own per-request timeout (its default, 2 s, would cut cold S3's tail)


def find_wrk() -> str | None:
    """The ``wrk`` executable, or None when it is not installed."""
    return shutil.which("wrk")


def _lua_string(text: str) -> str:
    """``text`` as a Lua long-bracket literal (JSON bodies and JWTs never contain ``]==]``)."""
    if "]==]" in text:
        raise ValueError("cannot quote this text for Lua")
    return "[==[" + text + "]==]"


SCRIPT = """
local bodies = {%(bodies)s}
local tokens = {%(tokens)s}
sent, good, bad = 0, 0, 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(%(seed)d)
end

function request()
  sent = sent + 1
  local body = bodies[math.random(#bodies)]
  local token = tokens[(sent %% #tokens) + 1]
  return wrk.format("POST", "%(path)s", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
  }, body)
end

function response(status, headers, body)
  if status == 200 and not body:find('"errors"', 1, true) and body:find('"customer":{', 1, true) then
    good = good + 1
  else
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local ok, failed = 0, 0
  for _, thread in ipairs(threads) do
    ok = ok + thread:get("good")
    failed = failed + thread:get("bad")
  end
  local q = {}
  for p = 0, 100 do
    local v = (p == 0) and latency.min or latency:percentile(p)
    table.insert(q, string.format("%%.3f", v / 1000.0))
  end
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %%d, "duration_us": %%d, "good": %%d, "bad": %%d, "connect": %%d, "read": %%d,'
    .. ' "write": %%d, "status": %%d, "timeout": %%d, "mean_ms": %%.3f, "quantiles_ms": [%%s]}\\n',
    summary.requests, summary.duration, ok, failed, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean / 1000.0, table.concat(q, ",")))
end
"""


def write_script(path: Path, *, url_path: str, bodies: list[str], tokens: list[str], seed: int) -> Path:
    """The Lua script for ``wrk -s``: S1 over ``bodies`` (JSON texts), tokens in turn."""
    path.write_text(
        SCRIPT
        % {
            "bodies": ",".join(_lua_string(b) for b in bodies),
            "tokens": ",".join(_lua_string(t) for t in tokens) or '""',
            "seed": seed,
            "path": url_path,
        }
    )
    return path


def command(wrk: str, url: str, script: Path, clients: int, seconds: float) -> list[str]:
    """One wrk run: one thread, ``clients`` connections, ``seconds`` (whole seconds, at least 1)."""
    return [
        wrk,
        "-t1",
        f"-c{clients}",
        f"-d{max(1, math.ceil(seconds))}s",
        f"--timeout={WRK_TIMEOUT_S}s",
        "-s",
        str(script),
        url,
    ]


def parse(output: str) -> dict[str, Any]:
    """The ``RESULT`` line of a run's output, as a dict; ValueError when there is none."""
    for line in output.splitlines():
        if line.startswith("RESULT "):
            found: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
            return found
    raise ValueError(f"wrk printed no result:\n{output[-2000:]}")


def run(cmd: list[str], timeout: float) -> dict[str, Any]:
    """Run wrk to its end; its parsed result."""
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited with {done.returncode}: {done.stderr[-2000:]}")
    return parse(done.stdout)
