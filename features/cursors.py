"""The one cursor codec: an opaque cursor is base64url (no padding) of ``kind:part[:part…]``.

Every paged list hands these out — customer lists (``schema/paging.py``: kind ``o``, the streams'
offsets), the audit log and access requests (``features/store``), the pool history — and takes back
only its own kind with the right number of parts, matched whole; anything else is ``InvalidCursor``
(the schema answers ``BAD_USER_INPUT``)."""

from __future__ import annotations

import base64
import binascii

__all__ = ["InvalidCursor", "decode_cursor", "encode_cursor"]


class InvalidCursor(ValueError):
    """A paging cursor this list did not hand out."""


def encode_cursor(kind: str, *parts: str) -> str:
    raw = ":".join((kind, *parts)).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str, count: int) -> list[str]:
    """The ``count`` parts of a cursor of ``kind``; ``InvalidCursor`` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidCursor("invalid cursor") from None
    head, _, rest = raw.partition(":")
    parts = rest.split(":", count - 1) if rest else []
    if head != kind or len(parts) != count or not all(parts):
        raise InvalidCursor("invalid cursor")
    return parts
