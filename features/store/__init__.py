"""The gateway's own database: the audit trail and access requests/grants.

    database = Database(url)            # None: SQLite var/gateway.db; postgresql+asyncpg://… for PostgreSQL
    await database.migrate()            # at gateway start (Alembic, head)
    audit = AuditLog(database)
    await audit.record([AuditEntry(...), ...])  # before the response leaves; AuditUnavailable → INTERNAL
    access = AccessRequests(database, policy_holder, audit=audit)
    grants = await access.active_grants(sub, account_nos)   # {account_no: {field: grant_id}}

See ``audit`` and ``access`` for the rules; ``cli`` for ``customer-graph audit export|verify``.
"""

from __future__ import annotations

from features.cursors import InvalidCursor

from .access import (
    AccessRequest,
    AccessRequestError,
    AccessRequestPage,
    AccessRequests,
    AccessRequestStatus,
    AccountRef,
    AuditContext,
    GrantFilter,
)
from .audit import (
    AUDIT_KINDS,
    AuditEntry,
    AuditFilter,
    AuditKind,
    AuditLog,
    AuditPage,
    AuditRecord,
    AuditTransaction,
    AuditUnavailable,
    VerifyResult,
)
from .db import (
    DATABASE_URL_ENV,
    Database,
    DatabaseConfigError,
    StoreUnavailable,
    database_url_from_env,
)

__all__ = [
    "AUDIT_KINDS",
    "DATABASE_URL_ENV",
    "AccessRequest",
    "AccessRequestError",
    "AccessRequestPage",
    "AccessRequestStatus",
    "AccessRequests",
    "AccountRef",
    "AuditContext",
    "AuditEntry",
    "AuditFilter",
    "AuditKind",
    "AuditLog",
    "AuditPage",
    "AuditRecord",
    "AuditTransaction",
    "AuditUnavailable",
    "Database",
    "DatabaseConfigError",
    "GrantFilter",
    "InvalidCursor",
    "StoreUnavailable",
    "VerifyResult",
    "database_url_from_env",
]
