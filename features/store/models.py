"""The gateway's own tables, as SQLAlchemy Core metadata (the migrations create the same; a test checks).

``audit_log``        one row per audit record; ``id`` is the record's position in the hash chain (1, 2, …),
                     assigned under the chain lock, so a missing row is a gap.
``audit_customers``  (account_no, audit_id): which records name which customer — an index for
                     ``auditLog(filter: {customerId})``, derived from ``audit_log.customers``
                     (verify checks it).
``audit_chain_head`` one row: the last record's id and hash, updated in the same transaction as every
                     append, so that cutting records off the end of the chain is evident as well.
``access_requests``  access requests and, once approved, the grants they are (grant id = request id).

Personal data is sealed at rest (``sealed.py``, migration 0009_sealed): columns typed ``Sealed`` /
``SealedJSON`` hold ciphertext the data keys open; what is looked up by value has a ``BlindIndex`` column
beside it (``email_idx``, ``tax_id_idx``: a keyed digest) that queries compare instead.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from .sealed import BlindIndex, Sealed, SealedJSON, index_of

GENESIS_HASH = "0" * 64  # prev_hash of the first record
CHAIN_HEAD_ID = 1


class UTCDateTime(sa.TypeDecorator[datetime]):
    """An aware UTC datetime in and out, microsecond precision, on SQLite (naive storage) and PostgreSQL."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: the store keeps aware UTC times only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# SQLite only auto-increments / indexes as rowid an INTEGER PRIMARY KEY; BIGINT elsewhere.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

metadata = sa.MetaData()

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=False),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("request_id", sa.Text(), nullable=False),
    sa.Column("user_sub", sa.Text(), nullable=False),
    sa.Column("roles", sa.JSON(), nullable=False),
    sa.Column("operation_name", sa.Text(), nullable=True),
    sa.Column("operation_type", sa.Text(), nullable=False),
    sa.Column("kind", sa.Text(), nullable=False),
    sa.Column("customers", sa.JSON(), nullable=False),
    sa.Column("fields", sa.JSON(), nullable=False),
    sa.Column("grant_id", sa.Text(), nullable=True),
    # a write's values, a search term…: sealed (migration 0010); the chain commits to them, not to ciphertext
    sa.Column("before", SealedJSON("audit_log.before"), nullable=True),
    sa.Column("after", SealedJSON("audit_log.after"), nullable=True),
    sa.Column("detail", SealedJSON("audit_log.detail"), nullable=True),
    # path → salt of each value present (``before.email``); path → commitment of each value redacted
    sa.Column("salts", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("redactions", sa.JSON(none_as_null=True), nullable=True),
    # does it still hold personal values (a write's before/after, a search term)? erasure and retention
    # look only at those
    sa.Column("personal", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Index("ix_audit_log_user_id", "user_sub", "id"),
    sa.Index("ix_audit_log_kind_id", "kind", "id"),
    sa.Index("ix_audit_log_operation_id", "operation_name", "id"),
    sa.Index("ix_audit_log_at", "at"),
    sa.Index("ix_audit_log_grant", "grant_id"),
    sa.Index("ix_audit_log_personal", "personal", "id"),
)

audit_customers = sa.Table(
    "audit_customers",
    metadata,
    sa.Column("account_no", sa.Text(), primary_key=True),
    sa.Column("audit_id", BigId, sa.ForeignKey("audit_log.id", ondelete="CASCADE"), primary_key=True),
    sa.Index("ix_audit_customers_audit_id", "audit_id"),
)

audit_chain_head = sa.Table(
    "audit_chain_head",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("last_id", BigId, nullable=False),
    sa.Column("last_hash", sa.String(64), nullable=False),
)

access_requests = sa.Table(
    "access_requests",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("requester_sub", sa.Text(), nullable=False),
    sa.Column("requester_roles", sa.JSON(), nullable=False),
    sa.Column("account_no", sa.Text(), nullable=False),
    # the customer as it was when the request was made: lets listAccessRequests find what an approver
    # may decide in SQL; decide() checks the live customer again
    sa.Column("account_region", sa.Text(), nullable=False),
    sa.Column("account_owner", sa.Text(), nullable=True),
    sa.Column("fields", sa.JSON(), nullable=False),
    sa.Column("reason", Sealed("access_requests.reason"), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # pending | approved | denied | revoked
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("decided_by", sa.Text(), nullable=True),
    sa.Column("decided_at", UTCDateTime(), nullable=True),
    sa.Column("expires_at", UTCDateTime(), nullable=True),  # approved: when the grant ends
    # revoked (migration 0006): who ended the grant early, when and why; status becomes "revoked"
    sa.Column("revoked_by", sa.Text(), nullable=True),
    sa.Column("revoked_at", UTCDateTime(), nullable=True),
    sa.Column("revoke_reason", Sealed("access_requests.revoke_reason"), nullable=True),
    # when retention or an erasure removed the reasons (migration 0011; they are sealed: SQL cannot tell)
    sa.Column("reasons_removed_at", UTCDateTime(), nullable=True),
    sa.Index("ix_access_requests_grants", "requester_sub", "status", "expires_at"),
    sa.Index("ix_access_requests_mine", "requester_sub", "created_at", "id"),
    sa.Index("ix_access_requests_queue", "status", "account_region", "created_at", "id"),
    sa.Index("ix_access_requests_created", "created_at", "id"),
)

# --- the public pool (features/pool; migration 0002_pool) -------------------------------------------
# ``pool_history``  one row per pool event: claim, release, recycle (auto or dormant), warning. ``owner_id``
#                   is the rep concerned (who claimed, released, lost or was warned), ``actor`` who acted (a
#                   user, or ``system:pool-sweep``); ``sales_stamp`` the sales system's own owner_since /
#                   pool_since after the change (a warning: the recycle time it announced); ``dedupe_key``
#                   makes a warning idempotent.
# ``pool_sweeps``   one row per scheduled job: the SQLite lock (holder, expiry) and the last run's outcome.
pool_history = sa.Table(
    "pool_history",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("account_no", sa.Text(), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # claim | release | recycle | warning
    sa.Column("owner_id", sa.Text(), nullable=True),
    sa.Column("actor", sa.Text(), nullable=False),
    sa.Column("reason", sa.String(32), nullable=True),
    sa.Column("note", Sealed("pool_history.note"), nullable=True),
    sa.Column("sales_stamp", UTCDateTime(), nullable=True),
    sa.Column("request_id", sa.Text(), nullable=True),
    sa.Column("dedupe_key", sa.Text(), nullable=True),
    sa.Column("duplicate_of", sa.Text(), nullable=True),  # a release with reason duplicate: the other account
    sa.Column("assigned_to", sa.Text(), nullable=True),  # a reassignment: the new owner (null: the pool)
    sa.Index("ix_pool_history_account", "account_no", "id"),
    sa.Index("ix_pool_history_owner", "owner_id", "account_no", "at"),
    sa.Index("ix_pool_history_dedupe", "dedupe_key", unique=True),
)

pool_sweeps = sa.Table(
    "pool_sweeps",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("holder", sa.Text(), nullable=True),
    sa.Column("expires_at", UTCDateTime(), nullable=True),
    sa.Column("last_started_at", UTCDateTime(), nullable=True),
    sa.Column("last_finished_at", UTCDateTime(), nullable=True),
    sa.Column("last_result", sa.JSON(none_as_null=True), nullable=True),
)

# --- live updates (gateway/events; migration 0003_events) ------------------------------------------
# ``event_inbox``  one row per change event accepted from a system (sales and support webhooks, the
#                  register's poll), written before the webhook is acknowledged. ``(source, event_id)`` is
#                  unique: a redelivered event is acknowledged again and stored once. ``published_at`` stays
#                  null until the event was evicted from the cache and published to subscribers, so a
#                  gateway that stops in between publishes it when it starts again. ``id`` is the order
#                  of acceptance, the order of publishing.
event_inbox = sa.Table(
    "event_inbox",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(16), nullable=False),  # sales | support | contracts
    sa.Column("event_id", sa.String(200), nullable=False),
    sa.Column("type", sa.String(64), nullable=False),  # the system's own: account.updated, ticket.created…
    sa.Column("account_no", sa.Text(), nullable=True),  # sales events
    sa.Column("email", Sealed("event_inbox.email"), nullable=True),  # support events: the requester
    sa.Column("tax_id", Sealed("event_inbox.tax_id"), nullable=True),  # register changes: the party
    sa.Column("occurred_at", UTCDateTime(), nullable=True),  # when the system says it happened
    # ticket_id, contract_id, confidential, party_name…
    sa.Column("detail", SealedJSON("event_inbox.detail"), nullable=True),
    sa.Column("received_at", UTCDateTime(), nullable=False),
    sa.Column("published_at", UTCDateTime(), nullable=True),
    # (migration 0009_sealed) the blind indexes of email and tax_id (lookups by value), and when the
    # retention purge pseudonymised the payload (null: not yet)
    sa.Column("email_idx", BlindIndex("event_inbox.email"), nullable=True, default=index_of("email")),
    sa.Column("tax_id_idx", BlindIndex("event_inbox.tax_id"), nullable=True, default=index_of("tax_id")),
    sa.Column("payload_purged_at", UTCDateTime(), nullable=True),
    sa.Index("ux_event_inbox_source_event", "source", "event_id", unique=True),
    sa.Index("ix_event_inbox_pending", "published_at", "id"),
    sa.Index("ix_event_inbox_source_received", "source", "received_at"),
    sa.Index("ix_event_inbox_email", "email_idx"),
    sa.Index("ix_event_inbox_tax_id", "tax_id_idx"),
)

# --- audit integrity (migration 0004_audit_integrity) ----------------------------------------------
# ``audit_quarantine``  rows found in ``audit_log`` past the chain head (forged, or left by tampering),
#                       moved here by the next append, which then continues the real chain: evidence kept,
#                       the writer not blocked; ``audit verify`` fails while any is here.
# ``write_intents``     a write is recorded here (state ``open``) before it is sent to a system, and closed
#                       (``done``) in the same transaction as its audit record; a write whose outcome
#                       was never recorded (the gateway or its database failed in between) is flagged in
#                       the audit trail (kind ``write``, outcome ``unknown``) and marked ``flagged``.
audit_quarantine = sa.Table(
    "audit_quarantine",
    metadata,
    sa.Column("qid", BigId, primary_key=True, autoincrement=True),
    sa.Column("record_id", BigId, nullable=False),
    sa.Column("row", SealedJSON("audit_quarantine.row"), nullable=False),  # the row as found, every column
    sa.Column("quarantined_at", UTCDateTime(), nullable=False),
)

write_intents = sa.Table(
    "write_intents",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("request_id", sa.Text(), nullable=False),
    sa.Column("user_sub", sa.Text(), nullable=False),
    sa.Column("operation", sa.String(64), nullable=False),
    sa.Column("account_no", sa.Text(), nullable=True),
    sa.Column("state", sa.String(16), nullable=False),  # open | done | failed | flagged
    sa.Column("settled_at", UTCDateTime(), nullable=True),
    sa.Index("ix_write_intents_open", "state", "at"),
)

# --- identity (features/identity; migration 0005_identity) ------------------------------------------
# ``identity_keys``        blocking keys of every sales account the gateway has looked at (a scan, a change
#                          event, a write): a digest of the normalised value (tax id, e-mail, phone, company
#                          name, contact + region), never the value, stored as its blind index (keyed).
#                          Accounts sharing a key are compared.
# ``identity_accounts``    per account: the e-mail last seen on it (to notice a change and keep the old one
#                          as a support identity) and which contact fields it lacks (``missing``, bit flags).
# ``identity_emails``      support identities besides the current e-mail: ``previous`` (the account had it;
#                          from the gateway's own writes, change events, scans) and ``linked`` (a data
#                          steward linked it). Unlinking sets ``removed_at``; rows are never deleted.
# ``identity_pairs``       probable and possible duplicates found by scans and change events (a < b), with
#                          the score and reasons on all evidence; a steward's view.
# ``identity_distinct``    pairs a data steward marked as not the same customer (a < b).
# ``identity_requesters``  helpdesk requesters the gateway heard of (the helpdesk cannot list them).
identity_keys = sa.Table(
    "identity_keys",
    metadata,
    # (migration 0009_sealed) the blind index of the digest: a digest alone of a phone number or an e-mail
    # is found again by hashing guesses; keyed, only with the database's index key
    sa.Column("key", BlindIndex("identity_keys.key"), primary_key=True),
    sa.Column("account_no", sa.String(32), primary_key=True),
    sa.Index("ix_identity_keys_account", "account_no"),
)

identity_accounts = sa.Table(
    "identity_accounts",
    metadata,
    sa.Column("account_no", sa.String(32), primary_key=True),
    sa.Column("email", Sealed("identity_accounts.email"), nullable=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("region", sa.String(16), nullable=False),
    sa.Column("missing", sa.Integer(), nullable=False),
    sa.Column("seen_at", UTCDateTime(), nullable=False),
    sa.Column("email_idx", BlindIndex("identity_accounts.email"), nullable=True, default=index_of("email")),
    sa.Index("ix_identity_accounts_email", "email_idx"),
    sa.Index("ix_identity_accounts_missing", "missing", "account_no"),
)

identity_emails = sa.Table(
    "identity_emails",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("account_no", sa.String(32), nullable=False),
    sa.Column("email", Sealed("identity_emails.email"), nullable=False),
    sa.Column("origin", sa.String(16), nullable=False),  # previous | linked
    sa.Column("source", sa.String(16), nullable=False),  # gateway | event | scan | steward
    sa.Column("actor", sa.Text(), nullable=False),
    sa.Column("note", Sealed("identity_emails.note"), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("removed_at", UTCDateTime(), nullable=True),
    sa.Column("removed_by", sa.Text(), nullable=True),
    sa.Column("removed_reason", Sealed("identity_emails.removed_reason"), nullable=True),
    sa.Column("email_idx", BlindIndex("identity_emails.email"), nullable=False, default=index_of("email")),
    sa.Index("ix_identity_emails_account", "account_no", "removed_at"),
    sa.Index("ix_identity_emails_email", "email_idx"),
)

identity_pairs = sa.Table(
    "identity_pairs",
    metadata,
    sa.Column("a", sa.String(32), primary_key=True),
    sa.Column("b", sa.String(32), primary_key=True),
    sa.Column("score", sa.Float(), nullable=False),
    sa.Column("reasons", sa.JSON(), nullable=False),
    sa.Column("region", sa.String(16), nullable=False),  # a's region (b's when they differ: both kept)
    sa.Column("found_at", UTCDateTime(), nullable=False),
    sa.Index("ix_identity_pairs_score", "score", "a", "b"),
    sa.Index("ix_identity_pairs_b", "b"),
)

identity_distinct = sa.Table(
    "identity_distinct",
    metadata,
    sa.Column("a", sa.String(32), primary_key=True),
    sa.Column("b", sa.String(32), primary_key=True),
    sa.Column("actor", sa.Text(), nullable=False),
    sa.Column("reason", Sealed("identity_distinct.reason"), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

identity_requesters = sa.Table(
    "identity_requesters",
    metadata,
    # (migration 0009_sealed) keyed by the e-mail's blind index; the e-mail itself sealed
    sa.Column(
        "email_idx", BlindIndex("identity_requesters.email"), primary_key=True, default=index_of("email")
    ),
    sa.Column("email", Sealed("identity_requesters.email"), nullable=False),
    sa.Column("first_seen", UTCDateTime(), nullable=False),
    sa.Column("last_seen", UTCDateTime(), nullable=False),
)

# --- pool review (features/pool; migration 0006_pool_review) ----------------------------------------
# ``pool_reviews``  one row per entry into the pool that waits for a review: ``state`` pending until a
#                   sales manager of its region or a data steward approves it (claimable), returns it to an
#                   owner, or marks it for cleanup. The newest row of an account is its review state; an
#                   account without one (in the pool before reviews, or a skipped reason) is claimable.
pool_reviews = sa.Table(
    "pool_reviews",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("account_no", sa.Text(), nullable=False),
    sa.Column("region", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # pending | approved | returned | cleanup
    sa.Column("cause", sa.String(32), nullable=False),
    sa.Column("note", Sealed("pool_reviews.note"), nullable=True),
    sa.Column("previous_owner", sa.Text(), nullable=True),
    sa.Column("entered_at", UTCDateTime(), nullable=False),
    sa.Column("entered_by", sa.Text(), nullable=False),
    sa.Column("decided_by", sa.Text(), nullable=True),
    sa.Column("decided_at", UTCDateTime(), nullable=True),
    sa.Column("decision_note", Sealed("pool_reviews.decision_note"), nullable=True),
    sa.Index("ix_pool_reviews_account", "account_no", "id"),
    sa.Index("ix_pool_reviews_state", "state", "region", "id"),
)

# --- a data subject's requests (features/privacy.py; migration 0007_data_requests) --------------------
# ``data_requests``  one row per request (kind ``export``): who asked, its status and progress (0..1), and
#                    the parts written so far (name, source, read time, count; never values).
data_requests = sa.Table(
    "data_requests",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("account_no", sa.Text(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # queued | running | done | failed
    sa.Column("progress", sa.Float(), nullable=False),
    sa.Column("parts", sa.JSON(), nullable=False),
    sa.Column("requested_by", sa.Text(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=True),
    sa.Column("finished_at", UTCDateTime(), nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Index("ix_data_requests_account", "account_no", "created_at"),
)

# --- sealed personal data (features/store/sealed.py; migration 0009_sealed) ---------------------------
# ``sealed_keys``  keys the database keeps itself, sealed with the data keys: ``blind_index``, the key of
#                  every BlindIndex column (made once; it never rotates, the data keys sealing it do).
sealed_keys = sa.Table(
    "sealed_keys",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("value", Sealed("sealed_keys.value"), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

# --- erasure (features/erasure.py; migration 0011_erasures) -----------------------------------------
# ``erasures``           a data subject's erasure: asked by one privacy officer, approved by another, then
#                        carried out system by system (``steps``: system → status, note, at). ``pending``
#                        holds the values being erased only while it runs (what the gateway looks for in its
#                        own data), and is dropped when it is done.
# ``identity_forgotten`` keyed digests of erased e-mails: never linked or listed again by the gateway on its
#                        own (a change event, a requester import), so an erased identity does not come back.
erasures = sa.Table(
    "erasures",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("account_no", sa.Text(), nullable=False),
    sa.Column("reason", Sealed("erasures.reason"), nullable=False),
    # pending_approval | rejected | running | done | failed
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("requested_by", sa.Text(), nullable=False),
    sa.Column("requested_at", UTCDateTime(), nullable=False),
    sa.Column("decided_by", sa.Text(), nullable=True),
    sa.Column("decided_at", UTCDateTime(), nullable=True),
    sa.Column("decision_note", Sealed("erasures.decision_note"), nullable=True),
    sa.Column("steps", sa.JSON(), nullable=False),
    sa.Column("pending", SealedJSON("erasures.pending"), nullable=True),
    sa.Column("heartbeat_at", UTCDateTime(), nullable=True),
    sa.Column("finished_at", UTCDateTime(), nullable=True),
    sa.Index("ix_erasures_account", "account_no", "requested_at"),
    sa.Index("ix_erasures_status", "status", "requested_at"),
)

identity_forgotten = sa.Table(
    "identity_forgotten",
    metadata,
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("at", UTCDateTime(), nullable=False),
)
