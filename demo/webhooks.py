"""Webhook delivery of the demo systems' change events, as their contracts describe it.

``WebhookSender`` is an ``on_change`` hook: the demo API calls it with the event dict (already in the
webhook's shape) and answers at once; a background thread POSTs the raw JSON body to the subscriber
URL, signed with HMAC-SHA256 of that body and the shared secret — sales ``X-Sales-Signature:
sha256=<hex>``, support ``X-Helpdesk-Signature: <hex>`` (no prefix). A non-2xx answer or a failed
connection is retried with back-off (0.1 s doubling to 30 s) until it is accepted: at least once, in
the order the changes were made (one queue per system, so also in order per account). Events still
queued when the system stops are given ``flush_timeout`` seconds, then dropped (and counted).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import queue
import threading
from collections.abc import Mapping
from typing import Any

import httpx
import orjson

log = logging.getLogger("demo.webhooks")

DEFAULT_SECRETS: Mapping[str, str] = {
    "sales": "customer-graph-demo-sales-webhook-secret",
    "support": "customer-graph-demo-support-webhook-secret",
}
HEADERS: Mapping[str, str] = {"sales": "X-Sales-Signature", "support": "X-Helpdesk-Signature"}
SYSTEMS = tuple(HEADERS)

_STOP = object()

__all__ = ["DEFAULT_SECRETS", "HEADERS", "SYSTEMS", "WebhookSender", "sign"]


def sign(system: str, secret: str, body: bytes) -> str:
    """The signature header's value for ``body``."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}" if system == "sales" else digest


class WebhookSender:
    """Delivers one system's change events to ``url``; call it (from any thread) with each event."""

    def __init__(
        self,
        system: str,
        url: str,
        secret: str,
        *,
        timeout: float = 5.0,
        first_backoff: float = 0.1,
        max_backoff: float = 30.0,
        flush_timeout: float = 2.0,
    ) -> None:
        if system not in HEADERS:
            raise ValueError(f"{system} sends no webhooks")
        if not secret:
            raise ValueError("a webhook secret is required")
        self.system = system
        self.url = url
        self.secret = secret
        self.timeout = timeout
        self.first_backoff = first_backoff
        self.max_backoff = max_backoff
        self.flush_timeout = flush_timeout
        self.delivered = 0  # events accepted by the subscriber
        self.attempts_failed = 0  # answers that were not 2xx, and failed connections
        self.dropped = 0  # events still queued when the sender stopped
        self._queue: queue.Queue[object] = queue.Queue()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def __call__(self, event: dict[str, Any]) -> None:
        self._queue.put(orjson.dumps(event))

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def start(self) -> WebhookSender:
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name=f"{self.system}-webhooks", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout=self.flush_timeout)
        self._stopping.set()
        self._thread.join(timeout=self.timeout + 1)
        self._thread = None
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                self.dropped += 1
        if self.dropped:
            log.warning("%s: %d change events were not delivered before stopping", self.system, self.dropped)

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout) as client:
            while not self._stopping.is_set():
                item = self._queue.get()
                if item is _STOP:
                    return
                assert isinstance(item, bytes)
                if not self._deliver(client, item):
                    self.dropped += 1
                    return

    def _deliver(self, client: httpx.Client, body: bytes) -> bool:
        """POST until accepted; False when stopped first."""
        signature = sign(self.system, self.secret, body)
        headers = {"Content-Type": "application/json", HEADERS[self.system]: signature}
        backoff = self.first_backoff
        while not self._stopping.is_set():
            try:
                response = client.post(self.url, content=body, headers=headers)
                if 200 <= response.status_code < 300:
                    self.delivered += 1
                    return True
                log.info("%s webhook answered %d; retrying", self.system, response.status_code)
            except httpx.HTTPError as exc:
                log.info("%s webhook failed (%s); retrying", self.system, type(exc).__name__)
            self.attempts_failed += 1
            self._stopping.wait(backoff)
            backoff = min(backoff * 2, self.max_backoff)
        return False
