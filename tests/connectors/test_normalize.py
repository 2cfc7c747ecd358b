from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from connectors.models import Money
from connectors.normalize import (
    epoch_seconds,
    format_time,
    money_from_cents,
    money_from_decimal,
    normalize_email,
    normalize_phone,
    parse_date,
    parse_epoch,
    parse_time,
    round2,
)


def test_iso_z_time_becomes_aware_utc() -> None:
    parsed = parse_time("2025-03-02T08:15:00Z")
    assert parsed == datetime(2025, 3, 2, 8, 15, tzinfo=UTC)
    assert parsed.utcoffset() == timedelta(0)


def test_offset_time_is_converted_to_utc() -> None:
    assert parse_time("2025-03-02T16:15:00+08:00") == datetime(2025, 3, 2, 8, 15, tzinfo=UTC)
    assert parse_time("2025-03-02T16:15:00+08:00").tzinfo is UTC


def test_epoch_seconds_become_aware_utc() -> None:
    assert parse_epoch(1717000000) == datetime(2024, 5, 29, 16, 26, 40, tzinfo=UTC)


@pytest.mark.parametrize("bad", ["1717000000", 1.5, True, None])
def test_epoch_must_be_an_integer(bad: object) -> None:
    with pytest.raises(TypeError):
        parse_epoch(bad)  # type: ignore[arg-type]


def test_date() -> None:
    assert parse_date("2024-01-15") == date(2024, 1, 15)


def test_outbound_time_is_utc_z_without_fraction() -> None:
    shanghai = timezone(timedelta(hours=8))
    assert format_time(datetime(2025, 3, 2, 16, 15, 30, 999, tzinfo=shanghai)) == "2025-03-02T08:15:30Z"
    assert format_time(datetime(2025, 3, 2, 8, 15)) == "2025-03-02T08:15:00Z"
    assert epoch_seconds(datetime(2024, 5, 29, 16, 26, 40, 500_000, tzinfo=UTC)) == 1717000000


def test_cents_become_exact_two_place_money() -> None:
    assert money_from_cents(1299900, "CNY") == Money(Decimal("12999.00"), "CNY")
    assert str(money_from_cents(5, "CNY").amount) == "0.05"
    assert str(money_from_cents(0, "USD").amount) == "0.00"
    assert str(money_from_cents(-250, "CNY").amount) == "-2.50"


def test_cents_must_be_an_integer() -> None:
    with pytest.raises(TypeError):
        money_from_cents(12.5, "CNY")  # type: ignore[arg-type]


def test_decimal_string_becomes_two_place_money() -> None:
    assert money_from_decimal("125000.00", "CNY") == Money(Decimal("125000.00"), "CNY")
    assert str(money_from_decimal("7", "CNY").amount) == "7.00"


@pytest.mark.parametrize("bad", ["abc", "NaN", "Infinity", ""])
def test_bad_decimal_string_raises(bad: str) -> None:
    with pytest.raises((ValueError, ArithmeticError)):
        money_from_decimal(bad, "CNY")


def test_round2_rounds_half_up() -> None:
    assert round2(4.25) == Decimal("4.25")
    assert round2(4.125) == Decimal("4.13")
    assert round2(3.3333333) == Decimal("3.33")
    assert round2(5) == Decimal("5.00")


def test_email_is_trimmed_and_lower_cased() -> None:
    assert normalize_email("  Wang.Fang@ChengChuan.CN\t") == "wang.fang@chengchuan.cn"


@pytest.mark.parametrize(
    ("typed", "e164"),
    [
        ("+86 138 1234 5678", "+8613812345678"),
        ("13812345678", "+8613812345678"),
        ("138-1234-5678", "+8613812345678"),
        ("0086 13812345678", "+8613812345678"),
        (" 138 1234 5678 ", "+8613812345678"),
        ("021-5888 1234", "+862158881234"),
        ("(021)58881234", "+862158881234"),
        ("+1 415 555 0100", "+14155550100"),
        # an extension, as the demo's sales system holds some: E.164 has none, the number is served
        ("0591-35012910 转 705", "+8659135012910"),
        ("021-5888 1234 分机 12", "+862158881234"),
        ("021-5888 1234 ext. 12", "+862158881234"),
    ],
)
def test_phone_becomes_e164(typed: str, e164: str) -> None:
    assert normalize_phone(typed) == e164


@pytest.mark.parametrize(("typed", "kept"), [("  ask reception ", "ask reception"), ("12", "12"), ("", "")])
def test_unparsable_phone_is_kept_as_typed(typed: str, kept: str) -> None:
    assert normalize_phone(typed) == kept
