"""The public pool's rules, pure (features/pool/rules.py), and its settings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from features.pool import rules
from features.pool.rules import PoolRules, ReleaseReason, SweepAction
from gateway.settings import SettingsError, load_settings

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
RULES = PoolRules()


@dataclass(frozen=True)
class Acc:
    owner_id: str | None
    owner_since: datetime | None


@dataclass(frozen=True)
class Act:
    by_user: str
    occurred_at: datetime


def owned(since_days: float, owner: str = "u-1") -> Acc:
    return Acc(owner, NOW - since_days * DAY)


def test_defaults() -> None:
    expected = PoolRules(
        max_owned=50, cooldown=30 * DAY, recycle_after=90 * DAY, warn_before=7 * DAY, protection=14 * DAY
    )
    assert expected == RULES


def test_recycle_at_from_the_owners_last_activity() -> None:
    account = owned(200)
    activities = [Act("u-1", NOW - 40 * DAY), Act("u-1", NOW - 10 * DAY), Act("u-2", NOW - 1 * DAY)]
    # only the owner's own activities count: a colleague's call one day ago does not
    assert rules.recycle_at(account, activities, RULES) == NOW - 10 * DAY + 90 * DAY


def test_recycle_at_without_activity_runs_from_owner_since() -> None:
    assert rules.recycle_at(owned(30), [Act("u-2", NOW)], RULES) == NOW - 30 * DAY + 90 * DAY


def test_recycle_at_is_null_in_the_pool() -> None:
    assert rules.recycle_at(Acc(None, None), [Act("u-1", NOW)], RULES) is None
    assert rules.protected_until(Acc(None, None), RULES) is None


def test_recycle_at_never_inside_the_protection_period() -> None:
    # claimed 2 days ago; its owner's last activity (from an earlier ownership) is 200 days old
    account = owned(2)
    activities = [Act("u-1", NOW - 200 * DAY)]
    assert rules.recycle_at(account, activities, RULES) == NOW - 2 * DAY + 14 * DAY
    assert rules.protected_until(account, RULES) == NOW + 12 * DAY
    assert rules.sweep_action(account, activities, RULES, NOW)[0] is SweepAction.KEEP
    assert rules.sweep_action(account, activities, RULES, NOW + 12 * DAY)[0] is SweepAction.RECYCLE


def test_a_future_dated_activity_does_not_postpone_recycling() -> None:
    account = owned(200)
    activities = [Act("u-1", NOW + 365 * DAY)]
    assert rules.recycle_at(account, activities, RULES, NOW) == NOW + 90 * DAY


def test_sweep_actions_at_the_boundaries() -> None:
    account = owned(300)
    last = [Act("u-1", NOW - 90 * DAY)]
    assert rules.sweep_action(account, last, RULES, NOW) == (SweepAction.RECYCLE, NOW)
    assert rules.sweep_action(account, last, RULES, NOW - timedelta(seconds=1))[0] is SweepAction.WARN
    assert rules.sweep_action(account, last, RULES, NOW - 7 * DAY) == (SweepAction.WARN, NOW)
    assert rules.sweep_action(account, last, RULES, NOW - 7 * DAY - timedelta(seconds=1)) == (
        SweepAction.KEEP,
        NOW,
    )
    assert rules.sweep_action(Acc(None, None), last, RULES, NOW) == (SweepAction.KEEP, None)


def test_claim_refused_at_the_limit() -> None:
    refusal = rules.claim_refusal(owned=50, last_loss=None, rules=RULES, now=NOW)
    assert refusal is not None and refusal.code == "OWNED_LIMIT"
    assert refusal.details == {"owned": 50, "limit": 50}
    assert rules.claim_refusal(owned=49, last_loss=None, rules=RULES, now=NOW) is None


def test_claim_refused_within_the_cooldown() -> None:
    refusal = rules.claim_refusal(owned=0, last_loss=NOW - 29 * DAY, rules=RULES, now=NOW)
    assert refusal is not None and refusal.code == "COOLDOWN"
    assert refusal.details == {"until": (NOW + DAY).strftime("%Y-%m-%dT%H:%M:%SZ")}
    assert rules.claim_refusal(owned=0, last_loss=NOW - 30 * DAY, rules=RULES, now=NOW) is None
    assert rules.cooldown_start(RULES, NOW) == NOW - 30 * DAY


def test_release_reason_and_note() -> None:
    assert rules.release_problem(ReleaseReason.NO_DEMAND, None) is None
    assert rules.release_problem(ReleaseReason.OTHER, None) is not None
    assert rules.release_problem(ReleaseReason.OTHER, "moved abroad") is None
    assert rules.release_problem(ReleaseReason.CAPACITY, "x" * 501) is not None


def test_warning_key_is_one_per_owner_and_recycle_time() -> None:
    key = rules.warning_key("A1", "u-1", NOW)
    assert key == rules.warning_key("A1", "u-1", NOW)
    assert key != rules.warning_key("A1", "u-2", NOW)
    assert key != rules.warning_key("A1", "u-1", NOW + DAY)


def test_recently_claimed() -> None:
    assert rules.recently_claimed(Acc("u-1", NOW - timedelta(minutes=1)), NOW)
    assert not rules.recently_claimed(Acc("u-1", NOW - timedelta(hours=1)), NOW)
    assert not rules.recently_claimed(Acc(None, None), NOW)


def test_settings() -> None:
    base = {"CG_JWT_SECRET": "s"}
    settings = load_settings(environ=base)
    assert PoolRules.from_settings(settings) == RULES
    assert settings.pool_sweep_interval == 3600
    changed = load_settings(
        environ={
            **base,
            "CG_POOL_MAX_OWNED": "3",
            "CG_POOL_COOLDOWN_DAYS": "0.5",
            "CG_POOL_RECYCLE_AFTER_DAYS": "10",
            "CG_POOL_WARN_DAYS": "2",
            "CG_POOL_PROTECTION_DAYS": "1",
            "CG_POOL_SWEEP_INTERVAL": "0",
        }
    )
    assert PoolRules.from_settings(changed) == PoolRules(3, DAY / 2, 10 * DAY, 2 * DAY, DAY)
    assert changed.pool_sweep_interval == 0
    with pytest.raises(SettingsError, match="pool_max_owned"):
        load_settings(environ={**base, "CG_POOL_MAX_OWNED": "0"})
    with pytest.raises(SettingsError, match="pool_cooldown_days"):
        load_settings(environ={**base, "CG_POOL_COOLDOWN_DAYS": "-1"})
