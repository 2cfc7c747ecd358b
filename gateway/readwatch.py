"""The bulk-read watch: a user who reads personal data of many customers in an hour is noticed.

For each user the watch keeps the customers whose policy-controlled values it was served (what the
request's ``read`` audit record names), each with when it was last read. When more than ``threshold``
distinct customers were read within the sliding ``window`` (an hour), ``on_alert`` is called — once per
user per window: the gateway increments ``cg_bulk_read_alerts_total{roles}`` and logs one warning naming
the user id and the count (never a customer or a value).

Memory is bounded: per user only the ``threshold + 1`` most recently read customers are kept (that is
enough to know whether more than ``threshold`` were read in the window), and users with nothing in the
window are forgotten. The count is **per gateway process**: with N instances behind a balancer a user
is noticed once it read more than ``threshold`` customers through one of them (see the README).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable

Alert = Callable[[str, Collection[str], int], None]  # (user id, its roles, distinct customers read)

WINDOW = 3600.0
_SWEEP_EVERY = 1000  # observations between sweeps of idle users


class ReadWatch:
    """Distinct customers read per user in a sliding window; ``on_alert`` above ``threshold``."""

    def __init__(
        self,
        threshold: int,
        on_alert: Alert,
        *,
        window: float = WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if threshold < 1:
            raise ValueError("threshold: at least 1 (0 turns the watch off: do not build one)")
        self.threshold = threshold
        self.window = window
        self.on_alert = on_alert
        self.clock = clock
        self._reads: dict[str, OrderedDict[str, float]] = {}  # user → customer → last read, oldest first
        self._alerted: dict[str, float] = {}  # user → when it was last alerted
        self._observed = 0

    def observe(self, user: str, roles: Collection[str], customers: Iterable[str]) -> None:
        """``user`` was served personal data of these customers now."""
        now = self.clock()
        reads = self._reads.get(user)
        if reads is None:
            reads = self._reads[user] = OrderedDict()
        for customer in customers:
            reads[customer] = now
            reads.move_to_end(customer)
        horizon = now - self.window
        while reads and (len(reads) > self.threshold + 1 or next(iter(reads.values())) <= horizon):
            reads.popitem(last=False)
        if len(reads) > self.threshold:
            last = self._alerted.get(user)
            if last is None or last <= horizon:
                self._alerted[user] = now
                self.on_alert(user, roles, len(reads))
        self._observed += 1
        if self._observed % _SWEEP_EVERY == 0:
            self._sweep(horizon)

    def count(self, user: str) -> int:
        """Distinct customers ``user`` read in the window (at most ``threshold + 1``)."""
        reads = self._reads.get(user)
        if not reads:
            return 0
        horizon = self.clock() - self.window
        return sum(1 for at in reads.values() if at > horizon)

    def _sweep(self, horizon: float) -> None:
        for user in [
            u for u, reads in self._reads.items() if not reads or next(reversed(reads.values())) <= horizon
        ]:
            del self._reads[user]
        for user in [u for u, at in self._alerted.items() if at <= horizon]:
            del self._alerted[user]

    @property
    def users(self) -> int:
        """Users currently tracked (tests, memory)."""
        return len(self._reads)
