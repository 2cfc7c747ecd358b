"""The bulk-read watch (gateway/readwatch.py): distinct customers per user in a sliding hour, one alert
per user per hour above the threshold, bounded memory. Through the gateway: tests/e2e/test_bulk_reads.py."""

from __future__ import annotations

from collections.abc import Collection

import pytest

from gateway.readwatch import ReadWatch
from gateway.settings import SettingsError, load_settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def watch(threshold: int = 3) -> tuple[ReadWatch, Clock, list[tuple[str, int]]]:
    clock = Clock()
    alerts: list[tuple[str, int]] = []

    def alert(user: str, roles: Collection[str], count: int) -> None:
        alerts.append((user, count))

    return ReadWatch(threshold, alert, clock=clock), clock, alerts


def test_alert_once_above_the_threshold_of_distinct_customers() -> None:
    w, clock, alerts = watch(3)
    w.observe("u-1", ["finance"], ["A-1", "A-2"])
    w.observe("u-1", ["finance"], ["A-1", "A-2", "A-3"])  # the same customers again count once
    assert alerts == [] and w.count("u-1") == 3
    w.observe("u-2", ["finance"], ["A-4", "A-5"])  # another user's reads are its own
    w.observe("u-1", ["finance"], ["A-4"])
    assert alerts == [("u-1", 4)]
    clock.now += 60
    w.observe("u-1", ["finance"], [f"B-{i}" for i in range(50)])
    assert alerts == [("u-1", 4)]  # once per user per hour
    assert w.count("u-1") == 4  # only threshold + 1 kept


def test_the_window_slides() -> None:
    w, clock, alerts = watch(3)
    w.observe("u-1", [], ["A-1", "A-2", "A-3"])
    clock.now += 3000
    w.observe("u-1", [], ["A-4"])  # four within the hour: alert
    assert alerts == [("u-1", 4)]
    clock.now += 700  # A-1..A-3 are now older than an hour
    assert w.count("u-1") == 1
    w.observe("u-1", [], ["A-5", "A-6"])
    assert w.count("u-1") == 3 and len(alerts) == 1
    clock.now += 3000  # an hour after the alert: the next crossing alerts again
    w.observe("u-1", [], ["A-7", "A-8", "A-9", "A-10"])
    assert alerts == [("u-1", 4), ("u-1", 4)]


def test_idle_users_are_forgotten() -> None:
    w, clock, _ = watch(3)
    for i in range(500):
        w.observe(f"u-{i}", [], ["A-1"])
    assert w.users == 500
    clock.now += 3601
    for _ in range(500):
        w.observe("u-active", [], ["A-1"])  # the 1000th observation sweeps
    assert w.users == 1


def test_threshold_setting() -> None:
    assert load_settings(environ={}).read_alert_customers == 500
    assert load_settings(environ={"CG_READ_ALERT_CUSTOMERS": "0"}).read_alert_customers == 0
    with pytest.raises(SettingsError, match="read_alert_customers"):
        load_settings(environ={"CG_READ_ALERT_CUSTOMERS": "-1"})
    with pytest.raises(ValueError):
        ReadWatch(0, lambda *_: None)
