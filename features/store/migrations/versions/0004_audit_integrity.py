"""Audit integrity: forged rows past the chain head are quarantined; writes are journaled before they
are sent (intent) and closed with their audit record (outcome).

Revision ID: 0004_audit_integrity
Revises: 0003_events
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_audit_integrity"
down_revision: str | None = "0003_events"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _big_id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "audit_quarantine",
        sa.Column("qid", _big_id(), primary_key=True, autoincrement=True),
        sa.Column("record_id", _big_id(), nullable=False),
        sa.Column("row", sa.JSON(), nullable=False),
        sa.Column("quarantined_at", _time(), nullable=False),
    )
    op.create_table(
        "write_intents",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("at", _time(), nullable=False),
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column("user_sub", sa.Text(), nullable=False),
        sa.Column("operation", sa.String(64), nullable=False),
        sa.Column("account_no", sa.Text(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("settled_at", _time(), nullable=True),
    )
    op.create_index("ix_write_intents_open", "write_intents", ["state", "at"])


def downgrade() -> None:
    op.drop_index("ix_write_intents_open", table_name="write_intents")
    op.drop_table("write_intents")
    op.drop_table("audit_quarantine")
