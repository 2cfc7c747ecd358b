"""Audit values committed, not hashed in (format 2): every value of a record gets a salt of its own and
enters the hash as a commitment, so erasure and retention can remove values while the chain still
verifies (features/store/audit.py). The existing chain is checked in its first format and moved to the
second here; a chain that does not verify stops the migration with nothing changed.

Every gateway must run this release before records are appended again: a gateway of the previous
release would append records in the first format, which ``audit verify`` reports as broken.

Revision ID: 0009_audit_values
Revises: 0008_access_review
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from features.store.audit import upgrade_chain_format

revision: str = "0009_audit_values"
down_revision: str | None = "0008_access_review"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("audit_log", sa.Column("salts", sa.JSON(), nullable=True))
    op.add_column("audit_log", sa.Column("redactions", sa.JSON(), nullable=True))
    op.add_column("audit_log", sa.Column("personal", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_index("ix_audit_log_personal", "audit_log", ["personal", "id"])
    upgrade_chain_format(op.get_bind())


def downgrade() -> None:
    records = op.get_bind().execute(sa.text("SELECT count(*) FROM audit_log")).scalar()
    if records:
        raise RuntimeError(
            "the audit chain cannot go back to its first format: restore a backup taken before 0009"
        )
    op.drop_index("ix_audit_log_personal", table_name="audit_log")
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("personal")
        batch.drop_column("redactions")
        batch.drop_column("salts")
