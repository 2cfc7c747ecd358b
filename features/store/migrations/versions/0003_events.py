"""Live updates: the inbox of accepted change events (webhooks and the register's poll).

Revision ID: 0003_events
Revises: 0002_pool
Create Date: 2025-07-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_events"
down_revision: str | None = "0002_pool"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _big_id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "event_inbox",
        sa.Column("id", _big_id(), primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("account_no", sa.Text(), nullable=True),
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column("tax_id", sa.Text(), nullable=True),
        sa.Column("occurred_at", _time(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.Column("received_at", _time(), nullable=False),
        sa.Column("published_at", _time(), nullable=True),
    )
    op.create_index("ux_event_inbox_source_event", "event_inbox", ["source", "event_id"], unique=True)
    op.create_index("ix_event_inbox_pending", "event_inbox", ["published_at", "id"])
    op.create_index("ix_event_inbox_source_received", "event_inbox", ["source", "received_at"])


def downgrade() -> None:
    op.drop_index("ix_event_inbox_source_received", table_name="event_inbox")
    op.drop_index("ix_event_inbox_pending", table_name="event_inbox")
    op.drop_index("ux_event_inbox_source_event", table_name="event_inbox")
    op.drop_table("event_inbox")
