"""``db rotate-keys``: every sealed value re-sealed with the newest data key, so the older keys can go.

Table by table (every column typed ``Sealed`` / ``SealedJSON`` in ``models.metadata``, ``sealed_keys``
included), in batches by primary key: a batch is read, each value the newest key does not open already is
re-sealed (``MultiFernet.rotate``: opened with any listed key, sealed with the newest) and written back in one
short transaction, only where the row still holds the value that was read. So it is

- **safe while gateways run**: they open values sealed with any listed key; a value a gateway changed in
  between is left as that gateway wrote it (sealed with the newest key, once every gateway lists it first:
  the procedure rolls the gateways before rotating) and counted as ``changed``;
- **idempotent and resumable**: a value already sealed with the newest key is left alone (``current``), so a
  run that stopped half way is simply run again;
- **blind indexes unaffected**: they use the database's own index key (``sealed_keys``), which rotation
  re-seals but never changes.

A value no listed key opens stops the run with ``SealedValueError`` (naming the column): the old key must stay
listed until a run has finished.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from .db import Database
from .models import metadata
from .sealed import SealedValueError, raw_table, sealed_columns

BATCH = 500


@dataclass(slots=True)
class Rotated:
    """Counts of sealed values (non-null), per ``table.column``."""

    resealed: dict[str, int] = field(default_factory=dict)  # re-sealed with the newest key now
    current: dict[str, int] = field(default_factory=dict)  # sealed with the newest key already
    changed: dict[str, int] = field(default_factory=dict)  # written by a gateway between read and write

    def total(self, which: str) -> int:
        counts: dict[str, int] = getattr(self, which)
        return sum(counts.values())


async def rotate_keys(
    database: Database, *, batch: int = BATCH, progress: Callable[[str, int], None] | None = None
) -> Rotated:
    """Re-seal every sealed value with the newest data key (see the module's docstring)."""
    keyring = database.sealer.keyring
    if keyring is None:
        raise SealedValueError("rotate-keys needs the data keys (CG_DATA_KEYS or CG_DATA_KEYS_FILE)")
    result = Rotated()
    for table in metadata.sorted_tables:
        columns = sealed_columns(table)
        if not columns:
            continue
        raw = raw_table(table)
        keys = list(raw.primary_key.columns)
        values = [raw.c[c.name] for c in columns]
        for c in columns:
            for counts in (result.resealed, result.current, result.changed):
                counts[f"{table.name}.{c.name}"] = 0
        last: tuple[Any, ...] | None = None
        while True:
            query = sa.select(*keys, *values).order_by(*keys).limit(batch)
            if last is not None:
                after = sa.tuple_(*keys) > sa.tuple_(*last) if len(keys) > 1 else keys[0] > last[0]
                query = query.where(after)
            async with database.read() as conn:
                rows = (await conn.execute(query)).all()
            if not rows:
                break
            last = tuple(rows[-1][: len(keys)])
            writes: list[tuple[tuple[Any, ...], sa.Column[Any], str, str]] = []
            for row in rows:
                pk = tuple(row[: len(keys)])
                for n, column in enumerate(values):
                    token = row[len(keys) + n]
                    if token is None:
                        continue
                    name = f"{table.name}.{column.name}"
                    if keyring.is_current(token):
                        result.current[name] += 1
                    else:
                        writes.append((pk, column, token, keyring.rotate(token, name)))
            if writes:
                async with database.write_transaction() as conn:
                    for pk, column, old, new in writes:
                        name = f"{table.name}.{column.name}"
                        where = [k == v for k, v in zip(keys, pk, strict=True)]
                        done = await conn.execute(
                            sa.update(raw).where(*where, column == old).values({column.name: new})
                        )
                        if done.rowcount:
                            result.resealed[name] += 1
                        else:
                            result.changed[name] += 1
            if progress is not None:
                progress(table.name, len(rows))
    return result
