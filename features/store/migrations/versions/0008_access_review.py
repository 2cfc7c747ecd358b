"""Access review: a grant can be revoked before it ends (who, when, why; status "revoked").

Revision ID: 0008_access_review
Revises: 0007_data_requests
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_access_review"
down_revision: str | None = "0007_data_requests"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("access_requests", sa.Column("revoked_by", sa.Text(), nullable=True))
    op.add_column("access_requests", sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("access_requests", sa.Column("revoke_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("access_requests") as batch:
        batch.drop_column("revoke_reason")
        batch.drop_column("revoked_at")
        batch.drop_column("revoked_by")
