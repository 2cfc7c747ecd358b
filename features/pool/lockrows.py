"""Lock rows in ``pool_sweeps`` (SQLite, where there are no advisory locks): a named row holds a
holder and an expiry, taken under ``BEGIN IMMEDIATE``, so a crashed holder's lock lapses. The
recycling sweep (``sweep.SweepLock``) and a rep's claims (``claims.ClaimLock``) both use them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from features.store.db import Database
from features.store.models import pool_sweeps


async def upsert(conn: AsyncConnection, db: Database, name: str, values: dict[str, Any]) -> None:
    dialect = postgresql if db.is_postgresql else sqlite
    stmt = dialect.insert(pool_sweeps).values(name=name, **values)
    await conn.execute(stmt.on_conflict_do_update(index_elements=["name"], set_=values))


async def take(db: Database, name: str, holder: str, ttl: timedelta, *, reentrant: bool) -> bool:
    """Take (or, ``reentrant``, renew) the row for ``holder`` until now + ``ttl``; False while another
    holder's unexpired lock is there. Expiry is wall-clock time."""
    async with db.write_transaction() as conn:
        query = sa.select(pool_sweeps.c.holder, pool_sweeps.c.expires_at).where(pool_sweeps.c.name == name)
        row = (await conn.execute(query)).one_or_none()
        now = datetime.now(UTC)
        mine = reentrant and row is not None and row.holder == holder
        if row is not None and row.holder is not None and not mine and (row.expires_at or now) > now:
            return False
        await upsert(conn, db, name, {"holder": holder, "expires_at": now + ttl})
    return True


async def release(db: Database, name: str, holder: str) -> None:
    async with db.write_transaction() as conn:
        await conn.execute(
            pool_sweeps.update()
            .where(pool_sweeps.c.name == name, pool_sweeps.c.holder == holder)
            .values(holder=None, expires_at=None)
        )
