"""What a migration that seals columns needs (``versions/0009_sealed.py``; a later one sealing the audit
trail's values can use the same): the keys of the ``Database`` running it, and every row's columns rewritten
in chunks by primary key, as they are stored (text: ciphertext or plaintext, no column types in between).

    sealer = sealer_for(op.get_bind(), "seals the audit values already there")
    rewrite(conn, "audit_log", ("id",), ("before", "after"), lambda row: {
        name: seal_json(sealer, f"audit_log.{name}", text) for name, text in row.items() if text is not None
    })
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from itertools import groupby
from typing import Any

import orjson
import sqlalchemy as sa

from features.store.sealed import SealedValueError, Sealer, sealer_of

CHUNK = 1000


def sealer_for(conn: sa.Connection, purpose: str) -> Sealer:
    """The keys of the ``Database`` that runs the migration (``Database(url, keyring=…)``); a clear
    ``SealedValueError`` without them."""
    sealer = sealer_of(conn.dialect)
    if sealer.keyring is None:
        raise SealedValueError(
            f"this migration {purpose}: configure the data keys (CG_DATA_KEYS or CG_DATA_KEYS_FILE)"
        )
    return sealer


def has_rows(conn: sa.Connection, table: str) -> bool:
    return conn.execute(sa.text(f"SELECT 1 FROM {table} LIMIT 1")).first() is not None


def rows_by_key(
    conn: sa.Connection, table: str, pk: Sequence[str], columns: Sequence[str], chunk: int = CHUNK
) -> Iterator[Sequence[Sequence[Any]]]:
    """Every row's primary key and ``columns`` as stored (read as text), ``chunk`` rows at a time, by
    primary key (keyset: rows rewritten in between are not met again, as long as the key stays)."""
    t = sa.table(table, *[sa.column(c, sa.Text()) for c in (*pk, *columns)])
    keys = [t.c[c] for c in pk]
    last: tuple[Any, ...] | None = None
    while True:
        query = sa.select(*keys, *[t.c[c] for c in columns]).order_by(*keys).limit(chunk)
        if last is not None:
            query = query.where(sa.tuple_(*keys) > sa.tuple_(*last) if len(keys) > 1 else keys[0] > last[0])
        rows = conn.execute(query).all()
        if not rows:
            return
        yield rows
        last = tuple(rows[-1][: len(pk)])


def rewrite(
    conn: sa.Connection,
    table: str,
    pk: Sequence[str],
    read: Sequence[str],
    change: Callable[[dict[str, Any]], dict[str, Any]],
    chunk: int = CHUNK,
) -> None:
    """Each row's ``read`` columns (name → stored text) through ``change``, which answers the columns to
    set (name → value as stored); rows with the same columns to set go in one executemany UPDATE."""
    for rows in rows_by_key(conn, table, pk, read, chunk):
        updates = []
        for row in rows:
            values = change(dict(zip(read, row[len(pk) :], strict=True)))
            if values:
                updates.append(({f"k_{c}": row[i] for i, c in enumerate(pk)}, values))

        def columns_set(update: tuple[dict[str, Any], dict[str, Any]]) -> tuple[str, ...]:
            return tuple(sorted(update[1]))

        for names, group in groupby(sorted(updates, key=columns_set), key=columns_set):
            t = sa.table(table, *[sa.column(c) for c in (*pk, *names)])
            statement = (
                sa.update(t)
                .where(*[t.c[c] == sa.bindparam(f"k_{c}") for c in pk])
                .values({name: sa.bindparam(f"v_{name}") for name in names})
            )
            conn.execute(
                statement, [{**key, **{f"v_{n}": v for n, v in values.items()}} for key, values in group]
            )


def seal_text(sealer: Sealer, column: str, text: str) -> str:
    return sealer.seal(column, text.encode("utf-8"))


def seal_json(sealer: Sealer, column: str, text: str) -> str:
    """A JSON column's stored text, sealed as ``SealedJSON`` reads it (checked to be JSON first)."""
    return sealer.seal(column, orjson.dumps(orjson.loads(text)))


def open_text(sealer: Sealer, column: str, token: str) -> str:
    return sealer.open(column, token).decode("utf-8")
