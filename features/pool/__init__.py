"""The public pool: claim, release, auto-recycle, dormant customers, history (``schema/pool.py`` is its
GraphQL side).

``rules``   the rules, pure (limit, cooldown, recycle time, protection, warnings)
``store``   the pool history in the gateway's database (``pool_history``)
``sweep``   the recycling pass and its cross-instance lock
``service`` ``PoolService``: what the gateway holds, starts and stops
``cli``     ``customer-graph pool sweep``
"""

from __future__ import annotations

from .rules import PoolEvent, PoolRecord, PoolRules, ReleaseReason
from .service import PoolService
from .sweep import SweepResult

__all__ = ["PoolEvent", "PoolRecord", "PoolRules", "PoolService", "ReleaseReason", "SweepResult"]
