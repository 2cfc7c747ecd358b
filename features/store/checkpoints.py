"""Checkpoints of the audit chain kept outside its database: the anchor that makes truncation evident.

Whoever can write the database can cut records off the end of the chain and move the head back: the
chain is then consistent again. So every ``every`` records (and at least once a minute while records
come in) the writer appends a line to a file — ``{"chain", "id", "hash", "at", "mac"}`` — and ``audit
verify`` checks that the database's chain still has each checkpointed record with that hash. The line
is signed with HMAC-SHA256 when a key is configured (``CG_AUDIT_CHECKPOINT_KEY``), so the file cannot
be forged without the key. ``chain`` is the first record's hash: one file may serve several databases
(tests, a move), and only a chain's own checkpoints are compared with it.

Detected: records removed or rewritten anywhere up to the last checkpoint, the head moved back past a
checkpoint, a forged or edited checkpoint line (with a key). Not detected: changes after the last
checkpoint (at most ``every`` records or a minute); an attacker who can write both the database and
the checkpoint file and has the key — keep the file on another volume or ship it to an append-only
store, and the key in a secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    chain: str
    record_id: int
    hash: str
    at: str


class CheckpointError(Exception):
    """A checkpoint line that cannot be trusted (unreadable, or its signature does not match)."""


class Checkpoints:
    """The checkpoint file of the audit chain: appended by the writer, read by ``verify``."""

    def __init__(self, path: Path, key: str = "", every: int = 100, max_age: float = 60.0) -> None:
        self.path = path
        self.key = key.encode()
        self.every = max(1, every)
        self.max_age = max_age
        self._last_id = 0
        self._last_time = 0.0

    def _mac(self, chain: str, record_id: int, digest: str, at: str) -> str:
        if not self.key:
            return ""
        message = f"{chain}\n{record_id}\n{digest}\n{at}".encode()
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()

    def due(self, last_id: int) -> bool:
        return last_id - self._last_id >= self.every or time.monotonic() - self._last_time >= self.max_age

    def write(self, chain: str, record_id: int, digest: str) -> None:
        """Append one checkpoint (and fsync it). Failing to write is logged, never fatal: the chain in
        the database is the record; the file only makes tampering with it evident."""
        at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        line = json.dumps(
            {
                "chain": chain,
                "id": record_id,
                "hash": digest,
                "at": at,
                "mac": self._mac(chain, record_id, digest, at),
            },
            separators=(",", ":"),
        )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(descriptor, (line + "\n").encode())
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        except OSError as exc:
            log.error("audit checkpoint not written (%s)", type(exc).__name__)
            return
        self._last_id, self._last_time = record_id, time.monotonic()

    def read(self, chain: str) -> Iterator[Checkpoint]:
        """This chain's checkpoints, in file order; ``CheckpointError`` for a line that fails its check."""
        if not self.path.exists():
            return
        for number, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                point = Checkpoint(str(item["chain"]), int(item["id"]), str(item["hash"]), str(item["at"]))
                mac = str(item.get("mac", ""))
            except (ValueError, KeyError, TypeError):
                raise CheckpointError(f"checkpoint line {number} cannot be read") from None
            if point.chain != chain:
                continue
            if self.key and not hmac.compare_digest(
                mac, self._mac(point.chain, point.record_id, point.hash, point.at)
            ):
                raise CheckpointError(f"checkpoint line {number} is not signed with the configured key")
            yield point


DEFAULT_FILE = Path("var") / "audit-checkpoints.jsonl"


def checkpoints_for(
    database_path: str | None, file: str = "", key: str = "", every: int = 100
) -> Checkpoints:
    """The checkpoint file a deployment configured (``CG_AUDIT_CHECKPOINT_FILE``), else one beside a
    SQLite database file (``gateway.db.checkpoints``), else ``var/audit-checkpoints.jsonl``."""
    if file:
        path = Path(file)
    elif database_path:
        path = Path(database_path + ".checkpoints")
    else:
        path = DEFAULT_FILE
    return Checkpoints(path, key, every)
