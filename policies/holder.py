"""The running gateway's current policy, swapped atomically when its file changes.

``reload()`` reads the file again; a bad file leaves the current policy in place and returns its
problems. ``maybe_reload()`` does that only when the file's modification time, size or inode changed
(one ``stat``; throttled to ``min_interval`` seconds), so it is cheap to call per request; the gateway
may also call ``reload()`` on SIGHUP.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from .engine import Policy
from .loader import PolicyError

_Stamp = tuple[int, int, int]  # mtime_ns, size, inode


def _stamp(path: Path) -> _Stamp | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class PolicyHolder:
    """Holds the current ``Policy``. Construction loads the file and raises ``PolicyError`` if it is bad."""

    def __init__(self, path: str | Path, *, min_interval: float = 1.0) -> None:
        self.path = Path(path)
        self.min_interval = min_interval
        self._lock = threading.Lock()
        self._stamp = _stamp(self.path)
        self._policy = Policy.from_file(self.path)
        self._checked = time.monotonic()
        self.generation = 1  # +1 on every successful reload
        self.last_problems: list[str] = []

    @property
    def policy(self) -> Policy:
        return self._policy

    def reload(self) -> list[str]:
        """Load the file again. Returns [] on success, else its problems (the old policy stays)."""
        with self._lock:
            stamp = _stamp(self.path)
            try:
                policy = Policy.from_file(self.path)
            except PolicyError as exc:
                self._stamp = stamp  # do not retry the same bad file on every call
                self.last_problems = exc.problems
                return exc.problems
            self._policy = policy
            self._stamp = stamp
            self.generation += 1
            self.last_problems = []
            return []

    def maybe_reload(self) -> list[str] | None:
        """Reload if the file changed since the last (attempted) load: None = unchanged, [] = reloaded,
        else the new file's problems (the old policy stays)."""
        now = time.monotonic()
        if now - self._checked < self.min_interval:
            return None
        self._checked = now
        if _stamp(self.path) == self._stamp:
            return None
        return self.reload()
