"""A data subject's erasure: ``erasures`` (request, approval, per-system steps; the reason, the decision's
note and the values being erased are sealed) and ``identity_forgotten`` (keyed digests of erased e-mails the
gateway must not link again on its own); ``access_requests.reasons_removed_at`` (retention or an erasure
removed the sealed reasons: SQL cannot tell otherwise).

Revision ID: 0011_erasures
Revises: 0010_audit_values
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_erasures"
down_revision: str | None = "0010_audit_values"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "erasures",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("account_no", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),  # sealed
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("requested_by", sa.Text(), nullable=False),
        sa.Column("requested_at", _time(), nullable=False),
        sa.Column("decided_by", sa.Text(), nullable=True),
        sa.Column("decided_at", _time(), nullable=True),
        sa.Column("decision_note", sa.Text(), nullable=True),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.Column("pending", sa.Text(), nullable=True),
        sa.Column("heartbeat_at", _time(), nullable=True),
        sa.Column("finished_at", _time(), nullable=True),
    )
    op.create_index("ix_erasures_account", "erasures", ["account_no", "requested_at"])
    op.create_index("ix_erasures_status", "erasures", ["status", "requested_at"])
    op.add_column("access_requests", sa.Column("reasons_removed_at", _time(), nullable=True))
    op.create_table(
        "identity_forgotten",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("at", _time(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("identity_forgotten")
    with op.batch_alter_table("access_requests") as batch:
        batch.drop_column("reasons_removed_at")
    op.drop_index("ix_erasures_status", table_name="erasures")
    op.drop_index("ix_erasures_account", table_name="erasures")
    op.drop_table("erasures")
