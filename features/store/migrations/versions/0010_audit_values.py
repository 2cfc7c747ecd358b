"""Audit values committed, not hashed in (format 2), and sealed: every value of a record gets a salt of its
own and enters the hash as a commitment, so erasure and retention can remove values while the chain still
verifies (features/store/audit.py); the values themselves (``before``, ``after``, ``detail``, and the rows
``audit_quarantine`` keeps) are sealed like the rest of the personal data (features/store/sealed.py). The
chain commits to the plaintext, never to ciphertext: ``rotate-keys`` leaves it intact.

The existing chain is checked in its first format and moved to the second here; a chain that does not
verify stops the migration with nothing changed. Every gateway must run this release before records are
appended again: a gateway of the previous release would append records in the first format, which
``audit verify`` reports as broken.

Revision ID: 0010_audit_values
Revises: 0009_sealed
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op

from features.store.audit import upgrade_chain_format
from features.store.migrations.sealing import has_rows, open_text, rewrite, seal_json, sealer_for

revision: str = "0010_audit_values"
down_revision: str | None = "0009_sealed"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VALUES = ("before", "after", "detail")


@contextmanager
def _customer_index_kept(conn: sa.Connection) -> Iterator[None]:
    """SQLite changes a column by copying the table and dropping the old one, and that drop cascades to
    ``audit_customers`` (its foreign key): keep the index aside meanwhile and put it back."""
    if conn.dialect.name != "sqlite":
        yield
        return
    conn.execute(sa.text("CREATE TEMPORARY TABLE _audit_customers_kept AS SELECT * FROM audit_customers"))
    yield
    conn.execute(sa.text("DELETE FROM audit_customers"))
    conn.execute(sa.text("INSERT INTO audit_customers SELECT * FROM _audit_customers_kept"))
    conn.execute(sa.text("DROP TABLE _audit_customers_kept"))


def upgrade() -> None:
    conn = op.get_bind()
    op.add_column("audit_log", sa.Column("salts", sa.JSON(), nullable=True))
    op.add_column("audit_log", sa.Column("redactions", sa.JSON(), nullable=True))
    op.add_column("audit_log", sa.Column("personal", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_index("ix_audit_log_personal", "audit_log", ["personal", "id"])
    with _customer_index_kept(conn), op.batch_alter_table("audit_log") as batch:
        for name in VALUES:
            batch.alter_column(
                name, type_=sa.Text(), existing_type=sa.JSON(), postgresql_using=f"{name}::text"
            )
    with op.batch_alter_table("audit_quarantine") as batch:
        batch.alter_column("row", type_=sa.Text(), existing_type=sa.JSON(), postgresql_using="row::text")
    if has_rows(conn, "audit_log") or has_rows(conn, "audit_quarantine"):
        sealer = sealer_for(conn, "seals the audit values already there")
        rewrite(
            conn,
            "audit_log",
            ("id",),
            VALUES,
            lambda row: {  # a JSON null becomes SQL NULL, as the sealed column keeps it
                name: None if text == "null" else seal_json(sealer, f"audit_log.{name}", text)
                for name, text in row.items()
                if text is not None
            },
        )
        rewrite(
            conn,
            "audit_quarantine",
            ("qid",),
            ("row",),
            lambda row: {"row": seal_json(sealer, "audit_quarantine.row", row["row"])},
        )
    upgrade_chain_format(conn)  # reads the values through their (sealed) column types


def downgrade() -> None:
    conn = op.get_bind()
    if conn.execute(sa.text("SELECT count(*) FROM audit_log")).scalar():
        raise RuntimeError(
            "the audit chain cannot go back to its first format: restore a backup taken before 0010"
        )
    if has_rows(conn, "audit_quarantine"):
        sealer = sealer_for(conn, "opens the quarantined audit rows")
        rewrite(
            conn,
            "audit_quarantine",
            ("qid",),
            ("row",),
            lambda row: {"row": open_text(sealer, "audit_quarantine.row", row["row"])},
        )
    with op.batch_alter_table("audit_quarantine") as batch:
        batch.alter_column("row", type_=sa.JSON(), existing_type=sa.Text(), postgresql_using="row::json")
    with _customer_index_kept(conn), op.batch_alter_table("audit_log") as batch:
        for name in VALUES:
            batch.alter_column(
                name, type_=sa.JSON(), existing_type=sa.Text(), postgresql_using=f"{name}::json"
            )
    op.drop_index("ix_audit_log_personal", table_name="audit_log")
    with _customer_index_kept(conn), op.batch_alter_table("audit_log") as batch:
        batch.drop_column("personal")
        batch.drop_column("redactions")
        batch.drop_column("salts")
