"""Pool review: a customer entering the pool waits for a reviewer (``pool_reviews``); a reassignment names
its new owner (``pool_history.assigned_to``).

Revision ID: 0006_pool_review
Revises: 0005_identity
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_pool_review"
down_revision: str | None = "0005_identity"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pool_reviews",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
        ),
        sa.Column("account_no", sa.Text(), nullable=False),
        sa.Column("region", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("cause", sa.String(32), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("previous_owner", sa.Text(), nullable=True),
        sa.Column("entered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("entered_by", sa.Text(), nullable=False),
        sa.Column("decided_by", sa.Text(), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decision_note", sa.Text(), nullable=True),
    )
    op.create_index("ix_pool_reviews_account", "pool_reviews", ["account_no", "id"])
    op.create_index("ix_pool_reviews_state", "pool_reviews", ["state", "region", "id"])
    op.add_column("pool_history", sa.Column("assigned_to", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("pool_history", "assigned_to")
    op.drop_index("ix_pool_reviews_state", table_name="pool_reviews")
    op.drop_index("ix_pool_reviews_account", table_name="pool_reviews")
    op.drop_table("pool_reviews")
