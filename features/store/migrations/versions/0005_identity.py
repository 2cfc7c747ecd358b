"""Identity: blocking keys, support identities, duplicate pairs, not-duplicate marks, heard-of requesters;
a pool release names the duplicate it was released for.

Revision ID: 0005_identity
Revises: 0004_audit_integrity
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_identity"
down_revision: str | None = "0004_audit_integrity"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _big_id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "identity_keys",
        sa.Column("key", sa.String(40), primary_key=True),
        sa.Column("account_no", sa.String(32), primary_key=True),
    )
    op.create_index("ix_identity_keys_account", "identity_keys", ["account_no"])
    op.create_table(
        "identity_accounts",
        sa.Column("account_no", sa.String(32), primary_key=True),
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("region", sa.String(16), nullable=False),
        sa.Column("missing", sa.Integer(), nullable=False),
        sa.Column("seen_at", _time(), nullable=False),
    )
    op.create_index("ix_identity_accounts_email", "identity_accounts", ["email"])
    op.create_index("ix_identity_accounts_missing", "identity_accounts", ["missing", "account_no"])
    op.create_table(
        "identity_emails",
        sa.Column("id", _big_id(), primary_key=True, autoincrement=True),
        sa.Column("account_no", sa.String(32), nullable=False),
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("removed_at", _time(), nullable=True),
        sa.Column("removed_by", sa.Text(), nullable=True),
        sa.Column("removed_reason", sa.Text(), nullable=True),
    )
    op.create_index("ix_identity_emails_account", "identity_emails", ["account_no", "removed_at"])
    op.create_index("ix_identity_emails_email", "identity_emails", ["email"])
    op.create_table(
        "identity_pairs",
        sa.Column("a", sa.String(32), primary_key=True),
        sa.Column("b", sa.String(32), primary_key=True),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("region", sa.String(16), nullable=False),
        sa.Column("found_at", _time(), nullable=False),
    )
    op.create_index("ix_identity_pairs_score", "identity_pairs", ["score", "a", "b"])
    op.create_index("ix_identity_pairs_b", "identity_pairs", ["b"])
    op.create_table(
        "identity_distinct",
        sa.Column("a", sa.String(32), primary_key=True),
        sa.Column("b", sa.String(32), primary_key=True),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", _time(), nullable=False),
    )
    op.create_table(
        "identity_requesters",
        sa.Column("email", sa.Text(), primary_key=True),
        sa.Column("first_seen", _time(), nullable=False),
        sa.Column("last_seen", _time(), nullable=False),
    )
    op.add_column("pool_history", sa.Column("duplicate_of", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("pool_history", "duplicate_of")
    for table in (
        "identity_requesters",
        "identity_distinct",
        "identity_pairs",
        "identity_emails",
        "identity_accounts",
        "identity_keys",
    ):
        op.drop_table(table)
