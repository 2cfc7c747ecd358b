"""Personal data sealed at rest (features/store/sealed.py): notes, reasons, e-mails, tax ids and event
details become ciphertext of the data keys; e-mails and tax ids get blind-index columns for lookups;
``identity_requesters`` is keyed by the blind index; identity blocking keys (unkeyed digests of phones,
e-mails…) become blind indexes too; ``sealed_keys`` keeps the blind-index key;
``event_inbox.payload_purged_at`` records the retention purge (it can no longer tell a pseudonym in SQL).

Existing rows are sealed here, in the migration's transaction, with the keys of the ``Database`` that runs
it (``Database(url, keyring=…)``; the gateway passes CG_DATA_KEYS): a database with personal data cannot be
upgraded without them (``SealedValueError``, nothing changed). The downgrade opens everything again, but
empties ``identity_keys`` (keyed digests cannot be undone; ``identity scan`` rebuilds them).

Revision ID: 0009_sealed
Revises: 0008_access_review
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

from features.store.migrations.sealing import (
    CHUNK,
    has_rows,
    open_text,
    rewrite,
    rows_by_key,
    seal_json,
    seal_text,
    sealer_for,
)
from features.store.sealed import INDEX_HEX, INDEX_KEY_NAME, Sealer, decode_index_key, new_index_key

revision: str = "0009_sealed"
down_revision: str | None = "0008_access_review"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PSEUDONYM = "pseudonym:"  # features/retention.py: an e-mail the purge already replaced

# table → (primary key, sealed text columns, sealed JSON columns, {blind index column: its source})
SEALED: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], dict[str, str]]] = {
    "access_requests": (("id",), ("reason", "revoke_reason"), (), {}),
    "pool_history": (("id",), ("note",), (), {}),
    "pool_reviews": (("id",), ("note", "decision_note"), (), {}),
    "event_inbox": (
        ("id",),
        ("email", "tax_id"),
        ("detail",),
        {"email_idx": "email", "tax_id_idx": "tax_id"},
    ),
    "identity_accounts": (("account_no",), ("email",), (), {"email_idx": "email"}),
    "identity_emails": (("id",), ("email", "note", "removed_reason"), (), {"email_idx": "email"}),
    "identity_distinct": (("a", "b"), ("reason",), (), {}),
}


def _time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    conn = op.get_bind()
    has_data = any(has_rows(conn, t) for t in (*SEALED, "identity_requesters", "identity_keys"))
    op.create_table(
        "sealed_keys",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("created_at", _time(), nullable=False),
    )
    with op.batch_alter_table("event_inbox") as batch:
        batch.alter_column(
            "detail", type_=sa.Text(), existing_type=sa.JSON(), postgresql_using="detail::text"
        )
        batch.add_column(sa.Column("email_idx", sa.String(INDEX_HEX), nullable=True))
        batch.add_column(sa.Column("tax_id_idx", sa.String(INDEX_HEX), nullable=True))
        batch.add_column(sa.Column("payload_purged_at", _time(), nullable=True))
    op.create_index("ix_event_inbox_email", "event_inbox", ["email_idx"])
    op.create_index("ix_event_inbox_tax_id", "event_inbox", ["tax_id_idx"])
    with op.batch_alter_table("identity_keys") as batch:
        batch.alter_column("key", type_=sa.String(INDEX_HEX), existing_type=sa.String(40))
    op.add_column("identity_accounts", sa.Column("email_idx", sa.String(INDEX_HEX), nullable=True))
    op.drop_index("ix_identity_accounts_email", table_name="identity_accounts")
    op.create_index("ix_identity_accounts_email", "identity_accounts", ["email_idx"])
    op.add_column("identity_emails", sa.Column("email_idx", sa.String(INDEX_HEX), nullable=True))
    op.drop_index("ix_identity_emails_email", table_name="identity_emails")
    op.create_index("ix_identity_emails_email", "identity_emails", ["email_idx"])
    op.create_table(
        "identity_requesters_sealed",
        sa.Column("email_idx", sa.String(INDEX_HEX), primary_key=True),
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("first_seen", _time(), nullable=False),
        sa.Column("last_seen", _time(), nullable=False),
    )

    if has_data:  # seal what is there: the keys are needed, and the blind-index key is made now
        sealer = sealer_for(conn, "(0009_sealed) seals the personal data already in this database")
        index_key = new_index_key()
        sealer.index_key = decode_index_key(index_key)
        keys = sa.table("sealed_keys", sa.column("name"), sa.column("value"), sa.column("created_at"))
        conn.execute(
            keys.insert().values(
                name=INDEX_KEY_NAME,
                value=sealer.seal("sealed_keys.value", index_key.encode()),
                created_at=datetime.now(UTC),
            )
        )
        _seal_rows(conn, sealer)

    with op.batch_alter_table("identity_emails") as batch:
        batch.alter_column("email_idx", existing_type=sa.String(INDEX_HEX), nullable=False)
    op.drop_table("identity_requesters")
    op.rename_table("identity_requesters_sealed", "identity_requesters")


def _sealing(table: str, sealer: Sealer, now: datetime) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A row of ``table`` as it is stored from now on: sealed values, blind indexes."""
    _pk, texts, jsons, indexes = SEALED[table]

    def change(row: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for column in texts:
            if row[column] is not None:
                out[column] = seal_text(sealer, f"{table}.{column}", str(row[column]))
        for column in jsons:
            if row[column] is not None:
                out[column] = seal_json(sealer, f"{table}.{column}", row[column])
        for index, source in indexes.items():
            if row[source] is not None:
                out[index] = sealer.index(f"{table}.{source}", str(row[source]))
        if table == "event_inbox" and str(row["email"] or "").startswith(PSEUDONYM):
            out["payload_purged_at"] = now
        return out

    return change


def _rekey(conn: sa.Connection, change: Callable[[str], str]) -> None:
    """Every blocking key through ``change``, a chunk of accounts at a time (the key is part of the
    primary key: an account's rows are replaced, and the pages go by account number, which stays)."""
    keys = sa.table("identity_keys", sa.column("key"), sa.column("account_no"))
    last: str | None = None
    while True:
        query = sa.select(keys.c.account_no).distinct().order_by(keys.c.account_no).limit(CHUNK)
        if last is not None:
            query = query.where(keys.c.account_no > last)
        accounts = [row[0] for row in conn.execute(query)]
        if not accounts:
            return
        rows = conn.execute(sa.select(keys.c.key, keys.c.account_no).where(keys.c.account_no.in_(accounts)))
        new = [{"key": change(k), "account_no": a} for k, a in rows]
        conn.execute(keys.delete().where(keys.c.account_no.in_(accounts)))
        conn.execute(keys.insert(), new)
        last = accounts[-1]


def _opening(table: str, sealer: Sealer) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A row of ``table`` as it was stored before: plain values (the downgrade)."""
    _pk, texts, jsons, _indexes = SEALED[table]

    def change(row: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for column in (*texts, *jsons):
            if row[column] is not None:
                out[column] = open_text(sealer, f"{table}.{column}", row[column])
        return out

    return change


def _seal_rows(conn: sa.Connection, sealer: Sealer) -> None:
    now = datetime.now(UTC)
    for table, (pk, texts, jsons, _indexes) in SEALED.items():
        rewrite(conn, table, pk, (*texts, *jsons), _sealing(table, sealer, now))
    _rekey(conn, lambda digest: sealer.index("identity_keys.key", digest))
    old = sa.table("identity_requesters", sa.column("email"), sa.column("first_seen"), sa.column("last_seen"))
    new = sa.table(
        "identity_requesters_sealed",
        sa.column("email_idx"),
        sa.column("email"),
        sa.column("first_seen"),
        sa.column("last_seen"),
    )
    last: str | None = None
    while True:
        query = sa.select(old.c.email, old.c.first_seen, old.c.last_seen).order_by(old.c.email).limit(CHUNK)
        if last is not None:
            query = query.where(old.c.email > last)
        chunk = conn.execute(query).all()
        if not chunk:
            break
        conn.execute(
            new.insert(),
            [
                {
                    "email_idx": sealer.index("identity_requesters.email", email),
                    "email": seal_text(sealer, "identity_requesters.email", email),
                    "first_seen": first,
                    "last_seen": latest,
                }
                for email, first, latest in chunk
            ],
        )
        last = chunk[-1][0]


def downgrade() -> None:
    conn = op.get_bind()
    has_data = any(has_rows(conn, t) for t in (*SEALED, "identity_requesters"))
    # blocking keys cannot be opened (keyed digests): they go; the next identity scan makes them again
    conn.execute(sa.text("DELETE FROM identity_keys"))
    with op.batch_alter_table("identity_keys") as batch:
        batch.alter_column("key", type_=sa.String(40), existing_type=sa.String(INDEX_HEX))
    op.create_table(
        "identity_requesters_open",
        sa.Column("email", sa.Text(), primary_key=True),
        sa.Column("first_seen", _time(), nullable=False),
        sa.Column("last_seen", _time(), nullable=False),
    )
    if has_data:
        sealer = sealer_for(conn, "(0009_sealed, down) opens the sealed personal data again")
        for table, (pk, texts, jsons, _indexes) in SEALED.items():
            rewrite(conn, table, pk, (*texts, *jsons), _opening(table, sealer))
        new = sa.table(
            "identity_requesters_open", sa.column("email"), sa.column("first_seen"), sa.column("last_seen")
        )
        for chunk in rows_by_key(
            conn, "identity_requesters", ("email_idx",), ("email", "first_seen", "last_seen")
        ):
            conn.execute(
                new.insert(),
                [
                    {
                        "email": open_text(sealer, "identity_requesters.email", row[1]),
                        "first_seen": row[2],
                        "last_seen": row[3],
                    }
                    for row in chunk
                ],
            )
    op.drop_table("identity_requesters")
    op.rename_table("identity_requesters_open", "identity_requesters")
    with op.batch_alter_table("identity_emails") as batch:
        batch.drop_index("ix_identity_emails_email")
        batch.drop_column("email_idx")
        batch.create_index("ix_identity_emails_email", ["email"])
    with op.batch_alter_table("identity_accounts") as batch:
        batch.drop_index("ix_identity_accounts_email")
        batch.drop_column("email_idx")
        batch.create_index("ix_identity_accounts_email", ["email"])
    op.drop_index("ix_event_inbox_tax_id", table_name="event_inbox")
    op.drop_index("ix_event_inbox_email", table_name="event_inbox")
    with op.batch_alter_table("event_inbox") as batch:
        batch.drop_column("payload_purged_at")
        batch.drop_column("tax_id_idx")
        batch.drop_column("email_idx")
        batch.alter_column(
            "detail", type_=sa.JSON(), existing_type=sa.Text(), postgresql_using="detail::json"
        )
    op.drop_table("sealed_keys")
