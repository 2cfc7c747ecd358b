"""Scalars with the contract's formats: DateTime is ISO 8601 UTC with ``Z``; Date is ``YYYY-MM-DD``."""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import strawberry

from .errors import BadUserInput


@functools.lru_cache(maxsize=65_536)  # cached entities hand out the same datetimes request after request
def _serialize_datetime(value: datetime) -> str:
    if value.tzinfo is not UTC:  # the connectors already give UTC; anything else is converted
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    # ends in "+00:00" (UTC): swapped for "Z"
    return value.isoformat(timespec="milliseconds" if value.microsecond else "seconds")[:-6] + "Z"


def _parse_datetime(value: object) -> datetime:
    if not isinstance(value, str):
        raise BadUserInput("DateTime must be an ISO 8601 string such as 2025-03-02T08:15:00Z")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise BadUserInput("DateTime must be an ISO 8601 string such as 2025-03-02T08:15:00Z") from None
    if parsed.tzinfo is None:
        raise BadUserInput("DateTime needs a time zone, e.g. 2025-03-02T08:15:00Z")
    return parsed.astimezone(UTC)


def _parse_date(value: object) -> date:
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise BadUserInput("Date must be YYYY-MM-DD") from None


def _parse_decimal(value: object) -> Decimal:
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise BadUserInput('Decimal must be a decimal string such as "1299.00"') from None


SCALAR_MAP: dict[object, Any] = {
    datetime: strawberry.scalar(
        name="DateTime",
        description="An instant, ISO 8601 in UTC: 2025-03-02T08:15:00Z",
        serialize=_serialize_datetime,
        parse_value=_parse_datetime,
    ),
    date: strawberry.scalar(
        name="Date",
        description="A calendar day: 2025-03-02",
        serialize=date.isoformat,
        parse_value=_parse_date,
    ),
    Decimal: strawberry.scalar(
        name="Decimal",
        description='An exact decimal number as a string: "1299.00" (never a float)',
        serialize=str,
        parse_value=_parse_decimal,
    ),
}
