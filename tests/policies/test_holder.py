"""PolicyHolder: reload from the file, keep the old policy when the new one is bad."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from policies import PolicyError, PolicyHolder

from .conftest import account, who


def _write(path: Path, text: str, mtime_ns: int) -> None:
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(mtime_ns, mtime_ns))


@pytest.fixture()
def policy_file(tmp_path: Path, default_text: str) -> Path:
    path = tmp_path / "policy.yaml"
    _write(path, default_text, 1_000_000_000_000_000_000)
    return path


def test_reload_swaps_in_a_good_file(policy_file: Path, default_text: str) -> None:
    holder = PolicyHolder(policy_file, min_interval=0)
    old = holder.policy
    assert not old.view(who("finance"), account())["activities"].allowed
    edited = default_text.replace(
        "  activities:            [allow,       deny,         allow,        allow,        deny,",
        "  activities:            [allow,       deny,         allow,        allow,        allow,",
    )
    assert edited != default_text
    _write(policy_file, edited, 1_000_000_001_000_000_000)
    assert holder.reload() == []
    assert holder.policy is not old and holder.generation == 2
    assert holder.policy.view(who("finance"), account())["activities"].allowed


def test_reload_keeps_the_old_policy_on_a_bad_file(policy_file: Path, default_text: str) -> None:
    holder = PolicyHolder(policy_file, min_interval=0)
    old = holder.policy
    _write(policy_file, default_text.replace("[allow,", "[alow, ", 1), 1_000_000_001_000_000_000)
    problems = holder.reload()
    assert len(problems) == 1 and 'unknown decision "alow"' in problems[0]
    assert problems[0].startswith(f"{policy_file}:")
    assert holder.policy is old and holder.generation == 1
    assert holder.last_problems == problems


def test_reload_keeps_the_old_policy_when_the_file_is_gone(policy_file: Path) -> None:
    holder = PolicyHolder(policy_file, min_interval=0)
    old = holder.policy
    policy_file.unlink()
    problems = holder.reload()
    assert problems and "cannot read" in problems[0]
    assert holder.policy is old


def test_maybe_reload_only_when_the_file_changed(policy_file: Path, default_text: str) -> None:
    holder = PolicyHolder(policy_file, min_interval=0)
    old = holder.policy
    assert holder.maybe_reload() is None
    assert holder.policy is old
    _write(policy_file, default_text.replace("[allow,", "[alow, ", 1), 1_000_000_002_000_000_000)
    first = holder.maybe_reload()
    assert first is not None and len(first) == 1
    assert holder.maybe_reload() is None  # the same bad file is not parsed again
    assert holder.policy is old
    _write(policy_file, default_text, 1_000_000_003_000_000_000)
    assert holder.maybe_reload() == []
    assert holder.policy is not old


def test_maybe_reload_is_throttled(policy_file: Path, default_text: str) -> None:
    holder = PolicyHolder(policy_file, min_interval=3600)
    _write(policy_file, default_text + "\n", 1_000_000_002_000_000_000)
    assert holder.maybe_reload() is None  # checked too recently
    assert holder.reload() == []  # an explicit reload (SIGHUP) is never throttled


def test_a_bad_file_at_start_raises(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("version: 1\n", encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        PolicyHolder(path)
    assert any("missing required section" in p for p in caught.value.problems)
