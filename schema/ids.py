"""Global ids (Relay): base64 of ``"<Type>:<key>"``, opaque to callers and stable."""

from __future__ import annotations

import base64
import binascii
import re

from .errors import BadUserInput

_ACCOUNT_NO = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # always fullmatch: no trailing newline
_ID_TEXT = re.compile(r"[A-Za-z0-9_-]{1,200}")  # unpadded urlsafe base64


def encode_id(type_name: str, key: str) -> str:
    return base64.urlsafe_b64encode(f"{type_name}:{key}".encode()).decode().rstrip("=")


def decode_id(global_id: str) -> tuple[str, str]:
    """``(type name, key)``; BAD_USER_INPUT for anything that is not one of our ids."""
    text = global_id
    if not _ID_TEXT.fullmatch(text):
        raise BadUserInput("Not a valid id.")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadUserInput("Not a valid id.") from None
    type_name, sep, key = raw.partition(":")
    if not sep or not type_name.isidentifier() or not _ACCOUNT_NO.fullmatch(key):
        raise BadUserInput("Not a valid id.")
    return type_name, key


def customer_key(global_id: str) -> str:
    """The account number inside a Customer id; BAD_USER_INPUT for another type's id."""
    type_name, key = decode_id(global_id)
    if type_name != "Customer":
        raise BadUserInput(f"The id is a {type_name} id, not a Customer id.")
    return key


def account_key(account_no: str) -> str:
    """An account number as callers type it (``customer(accountNo:)``); BAD_USER_INPUT otherwise."""
    if not _ACCOUNT_NO.fullmatch(account_no):
        raise BadUserInput("Not a valid account number.")
    return account_no
