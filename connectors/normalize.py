"""Plain, fast conversions from upstream wire formats to the domain's types.

Inbound: ISO strings and epoch seconds → aware UTC ``datetime``; ``YYYY-MM-DD`` → ``date``;
integer cents or decimal strings → ``Money``; e-mails → trimmed, lower-cased; phones → E.164.
Outbound: ``format_time`` and ``epoch_seconds`` for query parameters and bodies.
A malformed value raises ``ValueError``/``TypeError``/``ArithmeticError`` (the connectors turn
that into ``bad_response``), except phones, which never raise.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from typing import TypeVar

import phonenumbers

from .models import Money

__all__ = [
    "epoch_seconds",
    "format_time",
    "money_from_cents",
    "money_from_decimal",
    "normalize_email",
    "normalize_phone",
    "opt",
    "parse_date",
    "parse_epoch",
    "parse_time",
    "round2",
]

A = TypeVar("A")
B = TypeVar("B")

CENT = Decimal("0.01")
PHONE_REGION = "CN"


def opt(convert: Callable[[A], B], value: A | None) -> B | None:
    """``convert(value)``, or ``None`` when the value is ``None``."""
    return None if value is None else convert(value)


# --- time ------------------------------------------------------------------------------------


def parse_time(value: str) -> datetime:
    """ISO 8601 (``2025-03-02T08:15:00Z``) → aware UTC datetime; a naive value is taken as UTC."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def parse_epoch(value: int) -> datetime:
    """Integer epoch seconds → aware UTC datetime."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("epoch seconds must be an integer")
    return datetime.fromtimestamp(value, UTC)


def parse_date(value: str) -> date:
    """``YYYY-MM-DD`` → date."""
    return date.fromisoformat(value)


def format_time(value: datetime) -> str:
    """Datetime → ``YYYY-MM-DDTHH:MM:SSZ`` in UTC (naive taken as UTC).

    Fractions of a second are dropped: every bound we send is inclusive, so rounding down only
    ever widens the answer by records of that same second.
    """
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def epoch_seconds(value: datetime) -> int:
    """Datetime → integer epoch seconds, rounded down (naive taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return math.floor(value.timestamp())


# --- money -----------------------------------------------------------------------------------


def money_from_cents(cents: int, currency: str) -> Money:
    """Integer cents → ``Money`` with exactly two decimals (``1299900`` → ``12999.00``)."""
    if not isinstance(cents, int) or isinstance(cents, bool):
        raise TypeError("cents must be an integer")
    return Money(Decimal(cents).scaleb(-2), _currency(currency))


def money_from_decimal(value: str, currency: str) -> Money:
    """Decimal string (``"125000.00"``) → ``Money`` with exactly two decimals."""
    amount = Decimal(value)
    if not amount.is_finite():
        raise ValueError("amount is not a finite number")
    return Money(amount.quantize(CENT, ROUND_HALF_UP), _currency(currency))


def round2(value: float | int | str) -> Decimal:
    """A JSON number → ``Decimal`` rounded half-up to two places (``4.125`` → ``4.13``)."""
    amount = Decimal(str(value))
    if not amount.is_finite():
        raise ValueError("not a finite number")
    return amount.quantize(CENT, ROUND_HALF_UP)


def _currency(value: str) -> str:
    if not isinstance(value, str):
        raise TypeError("currency must be a string")
    return value


# --- contact details -------------------------------------------------------------------------


def normalize_email(value: str) -> str:
    """Trimmed and lower-cased: the form every system matches e-mails by."""
    return value.strip().lower()


# An extension as typed in Chinese (``021-5888 1234 转 705``, ``分机 705``): read like ``ext. 705``.
_EXTENSION = re.compile(r"\s*(?:转|分机)\s*(?=\d{1,7}\s*$)")


@lru_cache(maxsize=8192)
def normalize_phone(value: str) -> str:
    """Free-text phone → E.164, reading national numbers as Chinese (``021-5888 1234`` →
    ``+862158881234``). An extension (``转 705``, ``ext. 12``) has no place in E.164: the number
    without it is served. Text that is not a possible phone number comes back trimmed, as typed."""
    text = value.strip()
    try:
        number = phonenumbers.parse(_EXTENSION.sub(" ext. ", text), PHONE_REGION)
    except phonenumbers.NumberParseException:
        return text
    if not phonenumbers.is_possible_number(number):
        return text
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
