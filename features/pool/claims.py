"""One claim per rep at a time across every gateway process sharing the database.

A claim reads the rep's owned count, checks the limit and changes the owner: two claims of one rep
through two instances could both read 49 and both pass a limit of 50. The claim holds this lock from
the count to the owner change:

- PostgreSQL: a session advisory lock keyed by the rep (``pg_try_advisory_lock``, retried), on a
  connection held for the claim (autocommit: no transaction stays open);
- SQLite (one host, several processes): a row in ``pool_sweeps`` named by the rep's digest, taken
  under ``BEGIN IMMEDIATE``, with an expiry so a crashed holder's lock lapses.

A claim that cannot get the lock within ``wait`` seconds raises ``ClaimBusy``.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import sqlalchemy as sa

from features.store.db import Database

from . import lockrows

LOCK_TTL = timedelta(seconds=30)  # a claim takes well under a second; a crashed holder's row lapses


class ClaimBusy(Exception):
    """Another claim of the same rep held the lock for too long."""


class ClaimLock:
    def __init__(self, database: Database, *, wait: float = 10.0) -> None:
        self.db = database
        self.wait = wait
        self.holder = uuid.uuid4().hex[:12]

    @staticmethod
    def _digest(sub: str) -> bytes:
        return hashlib.sha256(b"claim\n" + sub.encode()).digest()

    @asynccontextmanager
    async def hold(self, sub: str) -> AsyncIterator[None]:
        if self.db.is_postgresql:
            async with self._pg(int.from_bytes(self._digest(sub)[:8], "big", signed=True)):
                yield
            return
        name = "claim:" + self._digest(sub).hex()[:24]
        await self._sqlite_take(name)
        try:
            yield
        finally:
            await self._sqlite_release(name)

    @asynccontextmanager
    async def _pg(self, key: int) -> AsyncIterator[None]:
        async with self.db.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            deadline = asyncio.get_running_loop().time() + self.wait
            while not (await conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key})).scalar():
                if asyncio.get_running_loop().time() > deadline:
                    raise ClaimBusy
                await asyncio.sleep(0.02)
            try:
                yield
            finally:
                await conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})

    async def _sqlite_take(self, name: str) -> None:
        deadline = asyncio.get_running_loop().time() + self.wait
        while not await lockrows.take(self.db, name, self.holder, LOCK_TTL, reentrant=False):
            if asyncio.get_running_loop().time() > deadline:
                raise ClaimBusy
            await asyncio.sleep(0.02)

    async def _sqlite_release(self, name: str) -> None:
        await lockrows.release(self.db, name, self.holder)
