"""The public pool's rules, pure: every decision is made from the account, its activities, the pool
history and the settings — no I/O here, so each rule is a unit test away.

**Ownership limit.** A sales rep owns at most ``max_owned`` customers [50]; a claim beyond is refused.

**Cooldown.** A rep who released a customer, or lost it to a recycle (inactivity or dormancy), cannot
claim that customer again for ``cooldown`` [30 days] after it left.

**Recycling.** A customer goes back to the pool when its owner has logged no activity for
``recycle_after`` [90 days]. Only the owner's own activities count (``by_user == owner_id``): the issue
says "whose owner has logged no activity", and a colleague's or support agent's call does not show that
the owner works the account. With no activity by the owner, the clock runs from ``owner_since`` (the
claim or assignment). An activity dated after "now" counts as now (a future date cannot postpone a
recycle). A customer is never recycled within ``protection`` [14 days] of ``owner_since``:

    recycle_at = max((last owner activity or owner_since) + recycle_after, owner_since + protection)

The owner is warned ``warn_before`` [7 days] ahead: once per announced ``recycle_at`` (an activity that
moves it gives a new warning when the new date approaches).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

SYSTEM_ACTOR = "system:pool-sweep"  # ``actor`` of what the scheduled sweep does
MAX_NOTE = 500  # characters of a release note
CLAIM_RACE_WINDOW = timedelta(minutes=10)  # a claim this recent explains a "not in the pool any more"


class PoolEventKind(StrEnum):
    CLAIM = "claim"
    RELEASE = "release"
    RECYCLE = "recycle"
    WARNING = "warning"
    REASSIGN = "reassign"  # a manager or steward gave it to another owner (or to the pool): a loss
    REVIEW = "review"  # a reviewer decided a customer that entered the pool (approve, return, cleanup)


class ReleaseReason(StrEnum):
    """Why a rep gives a customer back (a fixed list; ``other`` needs a note)."""

    NO_DEMAND = "no_demand"  # no need for our products for now
    UNREACHABLE = "unreachable"  # the contact cannot be reached
    DUPLICATE = "duplicate"  # duplicate of another account
    WRONG_REGION = "wrong_region"  # belongs to another region's team
    CAPACITY = "capacity"  # the rep cannot serve it well
    OTHER = "other"  # explained in the note


class RecycleCause(StrEnum):
    INACTIVE = "inactive"  # the owner logged no activity for recycle_after (the scheduled sweep)
    DORMANT = "dormant"  # no contact across all systems for 365 days (recycleDormant, by a manager)


class SweepAction(StrEnum):
    KEEP = "keep"
    WARN = "warn"
    RECYCLE = "recycle"


class OwnedAccount(Protocol):
    """What the rules read of a customer (``connectors.models.Account`` fits)."""

    @property
    def owner_id(self) -> str | None: ...

    @property
    def owner_since(self) -> datetime | None: ...


class OwnerActivity(Protocol):
    """What the rules read of an activity (``connectors.models.Activity`` fits)."""

    @property
    def by_user(self) -> str: ...

    @property
    def occurred_at(self) -> datetime: ...


@dataclass(frozen=True, slots=True)
class PoolRules:
    max_owned: int = 50
    cooldown: timedelta = timedelta(days=30)
    recycle_after: timedelta = timedelta(days=90)
    warn_before: timedelta = timedelta(days=7)
    protection: timedelta = timedelta(days=14)
    review: bool = True  # a customer entering the pool waits for a review before it can be claimed
    review_skip: frozenset[str] = frozenset()  # reasons (release reasons, recycle causes) that skip it

    @classmethod
    def from_settings(cls, settings: Any) -> PoolRules:
        """From ``gateway.settings.Settings`` (``pool_*`` in days, ``pool_max_owned``)."""
        return cls(
            max_owned=int(settings.pool_max_owned),
            cooldown=timedelta(days=float(settings.pool_cooldown_days)),
            recycle_after=timedelta(days=float(settings.pool_recycle_after_days)),
            warn_before=timedelta(days=float(settings.pool_warn_days)),
            protection=timedelta(days=float(settings.pool_protection_days)),
            review=bool(getattr(settings, "pool_review", True)),
            review_skip=frozenset(
                r.strip() for r in str(getattr(settings, "pool_review_skip", "")).split(",") if r.strip()
            ),
        )

    def reviews(self, reason: str | None) -> bool:
        """Does a customer entering the pool for ``reason`` wait for a review?"""
        return self.review and (reason or "") not in self.review_skip


@dataclass(frozen=True, slots=True)
class PoolRecord:
    """One row of the pool history."""

    kind: PoolEventKind
    account_no: str
    actor: str  # the user who acted, or SYSTEM_ACTOR
    at: datetime
    owner_id: str | None = None  # the rep concerned: who claimed, released, lost or was warned
    reason: str | None = None  # ReleaseReason (release), RecycleCause (recycle)
    note: str | None = None  # a release's free text
    # the sales system's owner_since (claim) or pool_since (release, recycle) after it; a warning: recycle_at
    sales_stamp: datetime | None = None
    request_id: str | None = None
    dedupe_key: str | None = None  # warnings: one per (account, owner, recycle_at)
    duplicate_of: str | None = None  # a release with reason duplicate: the account it duplicates
    assigned_to: str | None = None  # a reassignment: the new owner (None: to the pool)
    region: str | None = None  # the customer's region (a review queue is per region; not history)
    id: int | None = None  # set once stored


@dataclass(frozen=True, slots=True)
class PoolEvent:
    """What ``on_pool_event`` callbacks receive (live updates): no personal data, ids and times only."""

    kind: str  # claimed | released | recycled | recycle_warning
    account_no: str
    owner_id: str | None
    actor: str
    at: datetime
    reason: str | None = None
    recycle_at: datetime | None = None  # recycle_warning: when it will happen

    @classmethod
    def of(cls, record: PoolRecord) -> PoolEvent:
        kind = {
            PoolEventKind.CLAIM: "claimed",
            PoolEventKind.RELEASE: "released",
            PoolEventKind.RECYCLE: "recycled",
            PoolEventKind.WARNING: "recycle_warning",
            PoolEventKind.REASSIGN: "reassigned",
            PoolEventKind.REVIEW: "reviewed",
        }[record.kind]
        return cls(
            kind=kind,
            account_no=record.account_no,
            owner_id=record.owner_id,
            actor=record.actor,
            at=record.at,
            reason=record.reason,
            recycle_at=record.sales_stamp if record.kind is PoolEventKind.WARNING else None,
        )


@dataclass(frozen=True, slots=True)
class Refusal:
    """A claim the rules refuse: ``code`` for ``extensions.reason``, a message without personal data."""

    code: str  # OWNED_LIMIT | COOLDOWN
    message: str
    rule: str  # for the audit trail's denial record
    details: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HistoryPage:
    records: list[PoolRecord]  # newest first
    has_next_page: bool
    end_cursor: str | None


# --- the decisions ---------------------------------------------------------------------------------


def last_owner_activity(
    owner_id: str, activities: Iterable[OwnerActivity], now: datetime | None = None
) -> datetime | None:
    """The newest activity the owner logged itself (one dated after ``now`` counts as ``now``)."""
    newest: datetime | None = None
    for activity in activities:
        if activity.by_user != owner_id:
            continue
        moment = activity.occurred_at if now is None else min(activity.occurred_at, now)
        if newest is None or moment > newest:
            newest = moment
    return newest


def recycle_at(
    account: OwnedAccount,
    activities: Iterable[OwnerActivity],
    rules: PoolRules,
    now: datetime | None = None,
) -> datetime | None:
    """When the customer goes back to the pool unless its owner logs an activity first; ``None`` for a
    pool customer (or an owned one the sales system gives no owner_since and no owner activity for)."""
    owner = account.owner_id
    if owner is None:
        return None
    since = account.owner_since
    base = last_owner_activity(owner, activities, now) or since
    if base is None:
        return None
    due = base + rules.recycle_after
    if since is not None:
        due = max(due, since + rules.protection)
    return due


def protected_until(account: OwnedAccount, rules: PoolRules) -> datetime | None:
    since = account.owner_since
    return None if account.owner_id is None or since is None else since + rules.protection


def sweep_action(
    account: OwnedAccount, activities: Iterable[OwnerActivity], rules: PoolRules, now: datetime
) -> tuple[SweepAction, datetime | None]:
    """What the sweep does with the customer now, and the recycle time that decided it."""
    due = recycle_at(account, activities, rules, now)
    if due is None:
        return SweepAction.KEEP, None
    if due <= now:
        return SweepAction.RECYCLE, due
    if due - rules.warn_before <= now:
        return SweepAction.WARN, due
    return SweepAction.KEEP, due


def claim_refusal(
    *, owned: int, last_loss: datetime | None, rules: PoolRules, now: datetime
) -> Refusal | None:
    """Why the rep may not claim (``owned``: customers it owns now; ``last_loss``: when it last released
    or lost this customer), or ``None``."""
    if owned >= rules.max_owned:
        return Refusal(
            "OWNED_LIMIT",
            f"You already own {owned} customers; the limit is {rules.max_owned}. Release one first.",
            f"pool.maxOwned ({rules.max_owned})",
            {"owned": owned, "limit": rules.max_owned},
        )
    if last_loss is not None:
        until = last_loss + rules.cooldown
        if until > now:
            return Refusal(
                "COOLDOWN",
                "You released or lost this customer recently; it can be claimed by you again "
                f"from {until.strftime('%Y-%m-%dT%H:%M:%SZ')}.",
                f"pool.cooldown ({_days(rules.cooldown)} days)",
                {"until": until.strftime("%Y-%m-%dT%H:%M:%SZ")},
            )
    return None


def cooldown_start(rules: PoolRules, now: datetime) -> datetime:
    """Losses at or after this time still block a claim."""
    return now - rules.cooldown


def release_problem(reason: ReleaseReason, note: str | None) -> str | None:
    """What is wrong with a release's reason and note, or ``None``."""
    if reason is ReleaseReason.OTHER and not note:
        return "A release with reason OTHER needs a note."
    if note is not None and len(note) > MAX_NOTE:
        return f"The note is longer than {MAX_NOTE} characters."
    return None


def warning_key(account_no: str, owner_id: str, due: datetime) -> str:
    return f"warning:{account_no}:{owner_id}:{due.strftime('%Y-%m-%dT%H:%M:%S')}"


def recently_claimed(account: OwnedAccount, now: datetime) -> bool:
    """Taken from the pool moments ago (so a rep racing for it is told so, not "no such customer")."""
    since = account.owner_since
    return account.owner_id is not None and since is not None and now - since <= CLAIM_RACE_WINDOW


def _days(delta: timedelta) -> str:
    days = delta.total_seconds() / 86400
    return str(int(days)) if days == int(days) else f"{days:g}"


class ReviewState(StrEnum):
    PENDING = "pending"  # not claimable until decided
    APPROVED = "approved"  # claimable
    RETURNED = "returned"  # sent back to an owner
    CLEANUP = "cleanup"  # marked for data cleanup: not claimable


@dataclass(frozen=True, slots=True)
class Review:
    """The review of a customer that entered the pool (``pool_reviews``)."""

    id: int
    account_no: str
    region: str
    state: ReviewState
    cause: str  # the release reason or recycle cause, or "reassign"
    note: str | None
    previous_owner: str | None
    entered_at: datetime
    entered_by: str
    decided_by: str | None = None
    decided_at: datetime | None = None
    decision_note: str | None = None

    @property
    def blocks_claims(self) -> bool:
        return self.state in (ReviewState.PENDING, ReviewState.CLEANUP)
