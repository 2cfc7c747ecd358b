"""The public pool: its history (claims, releases, recycles, warnings) and the sweep's lock row.

Revision ID: 0002_pool
Revises: 0001
Create Date: 2025-07-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_pool"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _big_id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "pool_history",
        sa.Column("id", _big_id(), primary_key=True, autoincrement=True),
        sa.Column("at", _time(), nullable=False),
        sa.Column("account_no", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("owner_id", sa.Text(), nullable=True),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("reason", sa.String(32), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("sales_stamp", _time(), nullable=True),
        sa.Column("request_id", sa.Text(), nullable=True),
        sa.Column("dedupe_key", sa.Text(), nullable=True),
    )
    op.create_index("ix_pool_history_account", "pool_history", ["account_no", "id"])
    op.create_index("ix_pool_history_owner", "pool_history", ["owner_id", "account_no", "at"])
    op.create_index("ix_pool_history_dedupe", "pool_history", ["dedupe_key"], unique=True)

    op.create_table(
        "pool_sweeps",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("holder", sa.Text(), nullable=True),
        sa.Column("expires_at", _time(), nullable=True),
        sa.Column("last_started_at", _time(), nullable=True),
        sa.Column("last_finished_at", _time(), nullable=True),
        sa.Column("last_result", sa.JSON(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("pool_sweeps")
    op.drop_index("ix_pool_history_dedupe", table_name="pool_history")
    op.drop_index("ix_pool_history_owner", table_name="pool_history")
    op.drop_index("ix_pool_history_account", table_name="pool_history")
    op.drop_table("pool_history")
