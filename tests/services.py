"""Services beyond Python (PostgreSQL, Redis): skip where missing, fail when CI says they must run."""

from __future__ import annotations

import os
import socket

import pytest

REQUIRED = os.environ.get("CG_REQUIRE_SERVICES") == "1"
REDIS_URL = os.environ.get("CG_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def need_redis() -> str:
    """The Redis URL for tests; skips (or fails under CG_REQUIRE_SERVICES=1) when none answers."""
    if _reachable("127.0.0.1", 6379) or "CG_TEST_REDIS_URL" in os.environ:
        return REDIS_URL
    message = "Redis is not running on 127.0.0.1:6379 (set CG_TEST_REDIS_URL to use another)"
    if REQUIRED:
        pytest.fail(f"CG_REQUIRE_SERVICES=1 but {message}")
    pytest.skip(message)
