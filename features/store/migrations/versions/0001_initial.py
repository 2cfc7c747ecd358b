"""The audit trail (hash-chained), its customer index and chain head, and access requests.

Revision ID: 0001
Revises:
Create Date: 2025-06-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GENESIS_HASH = "0" * 64


def _big_id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", _big_id(), primary_key=True, autoincrement=False),
        sa.Column("at", _time(), nullable=False),
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column("user_sub", sa.Text(), nullable=False),
        sa.Column("roles", sa.JSON(), nullable=False),
        sa.Column("operation_name", sa.Text(), nullable=True),
        sa.Column("operation_type", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("customers", sa.JSON(), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("grant_id", sa.Text(), nullable=True),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_audit_log_user_id", "audit_log", ["user_sub", "id"])
    op.create_index("ix_audit_log_kind_id", "audit_log", ["kind", "id"])
    op.create_index("ix_audit_log_operation_id", "audit_log", ["operation_name", "id"])
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_grant", "audit_log", ["grant_id"])

    op.create_table(
        "audit_customers",
        sa.Column("account_no", sa.Text(), primary_key=True),
        sa.Column(
            "audit_id",
            _big_id(),
            sa.ForeignKey("audit_log.id", ondelete="CASCADE"),
            primary_key=True,
        ),
    )
    op.create_index("ix_audit_customers_audit_id", "audit_customers", ["audit_id"])

    head = op.create_table(
        "audit_chain_head",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("last_id", _big_id(), nullable=False),
        sa.Column("last_hash", sa.String(64), nullable=False),
    )
    op.bulk_insert(head, [{"id": 1, "last_id": 0, "last_hash": GENESIS_HASH}])

    op.create_table(
        "access_requests",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("requester_sub", sa.Text(), nullable=False),
        sa.Column("requester_roles", sa.JSON(), nullable=False),
        sa.Column("account_no", sa.Text(), nullable=False),
        sa.Column("account_region", sa.Text(), nullable=False),
        sa.Column("account_owner", sa.Text(), nullable=True),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("decided_by", sa.Text(), nullable=True),
        sa.Column("decided_at", _time(), nullable=True),
        sa.Column("expires_at", _time(), nullable=True),
    )
    op.create_index("ix_access_requests_grants", "access_requests", ["requester_sub", "status", "expires_at"])
    op.create_index("ix_access_requests_mine", "access_requests", ["requester_sub", "created_at", "id"])
    op.create_index(
        "ix_access_requests_queue", "access_requests", ["status", "account_region", "created_at", "id"]
    )
    op.create_index("ix_access_requests_created", "access_requests", ["created_at", "id"])


def downgrade() -> None:
    op.drop_table("access_requests")
    op.drop_table("audit_chain_head")
    op.drop_table("audit_customers")
    op.drop_table("audit_log")
