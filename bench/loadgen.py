"""S3's closed-loop load generator, run as a separate process.

``clients`` coroutines (each its own caller: one token per client) each run S1 for a random
company customer, one request after the other: ``warmup`` seconds first (the clients join one after
the other over its first half), then the measured window of ``duration`` seconds, which counts
every request that *completes* inside it (throughput = completions / window; the requests in flight
at its end finish but are not counted).

Against the gateway each client holds one keep-alive HTTP/1.1 connection and speaks through a
minimal hand-rolled client (httpx costs about a millisecond of CPU a request, which on two cores
would be taken from the gateway); against the baseline the same process runs
``bench.baseline.DirectClient`` — the direct client *is* the app, so its cost is what is measured.

``python -m bench.loadgen CONFIG.json RESULT.json``. On stdout it prints only ``START`` when the
measured window opens and ``END`` when every client has finished its last request (the orchestrator
samples every process's CPU time then); the results go to ``RESULT.json``.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import resource
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from .baseline import DirectClient, run_on_gateway_loop
from .queries import S1_QUERY, customer_id


class RawHttp:
    """One keep-alive HTTP/1.1 connection for POSTing JSON (Content-Length or chunked answers)."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.path = parts.path or "/"
        head = [f"Host: {self.host}:{self.port}", "Content-Type: application/json"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        self._head = ("\r\n".join(head) + "\r\n").encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes) -> tuple[int, bytes]:
        if self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        try:
            self._writer.write(
                f"POST {self.path} HTTP/1.1\r\n".encode()
                + self._head
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            head = await self._reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            headers = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            if "content-length" in headers:
                content = await self._reader.readexactly(int(headers["content-length"]))
            elif headers.get("transfer-encoding", "").lower() == "chunked":
                content = await self._chunked()
            else:
                content = await self._reader.read()
                await self.close()
            if headers.get("connection", "").lower() == "close":
                await self.close()
            return status, content
        except BaseException:
            await self.close()
            raise

    async def _chunked(self) -> bytes:
        assert self._reader is not None
        out = bytearray()
        while True:
            size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self._reader.readuntil(b"\r\n")
                return bytes(out)
            out += await self._reader.readexactly(size)
            await self._reader.readexactly(2)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._reader = None


@dataclass
class Tally:
    """Answers that completed inside the measured window, and what went wrong with the others."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    outside: int = 0  # completed during the warm-up or after the window


def _gateway_ok(status: int, content: bytes) -> str | None:
    """None when the answer is a complete S1 answer, else what was wrong (no data in it)."""
    if status != 200:
        return f"HTTP {status}"
    body = orjson.loads(content)
    if body.get("errors"):
        return error_kind(body["errors"])
    if not (body.get("data") or {}).get("customer"):
        return "no customer in the answer"
    return None


def error_kind(errors: list[dict[str, Any]]) -> str:
    """What went wrong, from the errors' codes and messages (which carry no personal data)."""
    kinds = sorted(
        {f"{(e.get('extensions') or {}).get('code')}: {e.get('message', '')[:80]}" for e in errors}
    )
    return "; ".join(kinds)


async def run(config: dict[str, Any]) -> dict[str, Any]:
    """The closed loop; counts the requests that *complete* inside ``[warmup, warmup + duration)``."""
    mode: str = config["mode"]
    ids: list[str] = config["account_nos"]
    clients: int = config["clients"]
    warmup: float = config["warmup"]
    duration: float = config["duration"]
    seed: int = config.get("seed", 1)
    direct: DirectClient | None = None
    if mode == "baseline":
        direct = DirectClient(
            config["urls"],
            sales_api_key=config["sales_api_key"],
            support_token=config["support_token"],
            contracts_auth=tuple(config["contracts_auth"]),  # type: ignore[arg-type]
        )
    elif mode != "gateway":
        raise ValueError(f"unknown mode {mode!r}")
    tokens: list[str] = config.get("tokens") or [""]
    tally = Tally()
    ramp = warmup / 2
    window = [math.inf, math.inf]  # start, end (perf_counter)
    stopping = asyncio.Event()

    async def client(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        headers = {"Authorization": f"Bearer {tokens[index % len(tokens)]}"}
        conn = RawHttp(config.get("gateway_url", ""), headers) if mode == "gateway" else None
        await asyncio.sleep(ramp * index / clients)  # clients join over the first half of the warm-up
        try:
            while not stopping.is_set():
                account_no = rng.choice(ids)
                started = time.perf_counter()
                problem: str | None
                try:
                    if conn is not None:
                        body = orjson.dumps({"query": S1_QUERY, "variables": {"id": customer_id(account_no)}})
                        problem = _gateway_ok(*(await conn.post(body)))
                    else:
                        assert direct is not None
                        found = await direct.customer(account_no)
                        problem = None if found else "no customer"
                except Exception as exc:
                    problem = type(exc).__name__
                ended = time.perf_counter()
                if not window[0] <= ended < window[1]:
                    tally.outside += 1
                elif problem is None:
                    tally.latencies_ms.append((ended - started) * 1000.0)
                else:
                    tally.errors[problem] += 1
        finally:
            if conn is not None:
                await conn.close()

    tasks = [asyncio.create_task(client(i)) for i in range(clients)]
    await asyncio.sleep(warmup)
    window[0] = time.perf_counter()
    cpu_start = _own_cpu()
    print("START", flush=True)
    await asyncio.sleep(duration)
    window[1] = time.perf_counter()
    cpu = _own_cpu() - cpu_start
    print("END", flush=True)
    stopping.set()
    _, late = await asyncio.wait(tasks, timeout=60)  # the last requests finish (not counted)
    for task in late:
        task.cancel()
    if direct is not None:
        await direct.aclose()
    elapsed = window[1] - window[0]
    done = len(tally.latencies_ms)
    return {
        "mode": mode,
        "clients": clients,
        "warmup_s": warmup,
        "duration_s": duration,
        "elapsed_s": round(elapsed, 3),
        "ok": done,
        "errors": sum(tally.errors.values()),
        "error_kinds": dict(tally.errors.most_common(5)),
        "rps": round(done / elapsed, 2) if elapsed > 0 else 0.0,
        "latencies_ms": [round(v, 3) for v in tally.latencies_ms],
        "loadgen_cpu_s": round(cpu, 3),
        "outside_window": tally.outside,
    }


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m bench.loadgen CONFIG.json RESULT.json", file=sys.stderr)
        return 2
    config = json.loads(Path(args[0]).read_text())
    result = run_on_gateway_loop(run(config))
    Path(args[1]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
