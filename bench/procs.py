"""Child processes of the benchmark: start, wait until ready, read their CPU time, always stop.

Every child is started in its own session (Ctrl-C in the terminal reaches only the benchmark, which
then stops them in order) and with ``PR_SET_PDEATHSIG`` on Linux, so a benchmark that is killed
outright does not leave systems or a gateway behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import httpx

CLK_TCK = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (for programs that want ``--port``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (``/proc/<pid>/stat``), in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    # After the command: state(3) ... utime(14) stime(15), numbered from 1 over the whole line.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far (``/proc/stat``), all cores."""
    with open("/proc/stat") as fh:
        parts = [int(v) for v in fh.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)  # idle + iowait
    total = sum(parts[:8])  # guest time is already in user
    return (total - idle) / CLK_TCK, total / CLK_TCK


@dataclass
class Child:
    """One started process, its log file and (once known) where it listens."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    url: str = ""
    info: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Processes:
    """The benchmark's children; ``with Processes(dir) as procs:`` stops every one on exit."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[Child] = []
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        stdout_pipe: bool = False,
        cwd: Path | None = None,
    ) -> Child:
        log_path = self.log_dir / f"{name}.log"
        log: IO[bytes] = open(log_path, "wb")  # noqa: SIM115 - closed once the child has it
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout_pipe else log,
                stderr=log,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        finally:
            log.close()
        child = Child(name, proc, log_path)
        self.children.append(child)
        return child

    def read_line(self, child: Child, timeout: float) -> str:
        """The next line the child writes to its stdout pipe; RuntimeError after ``timeout`` s."""
        assert child.proc.stdout is not None
        deadline = time.monotonic() + timeout
        buf = b""
        fd = child.proc.stdout.fileno()
        while not buf.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or (not child.alive() and not select.select([fd], [], [], 0)[0]):
                raise RuntimeError(f"{child.name} did not start:\n{child.log_tail()}")
            ready, _, _ = select.select([fd], [], [], min(left, 0.2))
            if ready:
                chunk = os.read(fd, 1)
                if not chunk:
                    raise RuntimeError(f"{child.name} exited:\n{child.log_tail()}")
                buf += chunk
        return buf.decode().strip()

    def wait_http(self, child: Child, url: str, timeout: float = 30.0) -> None:
        """Poll ``url`` until it answers 200; RuntimeError if the child dies or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            if not child.alive():
                raise RuntimeError(f"{child.name} exited:\n{child.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{child.name} did not answer {url} in {timeout:.0f} s:\n{child.log_tail()}"
                )
            time.sleep(0.05)

    def stop(self, child: Child, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        if child.alive():
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(signal.SIGTERM)
            try:
                child.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.kill()
                child.proc.wait(timeout=timeout)
        if child.proc.stdout is not None:
            child.proc.stdout.close()
        if child in self.children:
            self.children.remove(child)

    def stop_all(self) -> None:
        for child in reversed(list(self.children)):
            with contextlib.suppress(Exception):
                self.stop(child)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_all()
