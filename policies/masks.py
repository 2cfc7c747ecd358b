"""Mask kinds: the exact masked strings of policy.md. A mask keeps the value's type (a string).

Each mask reveals only what its format names and nothing about the rest but, for phone, its length:

=========  ==========================================================  ====================
kind       output                                                      too short → ``****``
=========  ==========================================================  ====================
phone      first 3 characters, ``*`` per middle character, last 4       under 8 characters
email      first character of the local part, ``***@``, the domain     no ``@``, or nothing
                                                                       before or after it
address    first 6 characters, then ``****``                           under 7 characters
taxId      first 4, ``*`` × 10, last 4                                 not 18 characters
=========  ==========================================================  ====================

``+8613812345678`` → ``+86*******5678``; ``wang.fang@chengchuan.cn`` → ``w***@chengchuan.cn``;
``上海市浦东新区张江路 88 号`` → ``上海市浦东新****``; ``91310115MA1K4Q2X3L`` → ``9131**********2X3L``.
Lengths count characters (code points), so a Chinese address keeps 6 characters, not 6 bytes.
An e-mail's domain is what follows its last ``@``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

WHOLE = "****"  # what a value too short (or too odd) to mask by its format becomes


def mask_phone(value: str) -> str:
    if len(value) < 8:
        return WHOLE
    return value[:3] + "*" * (len(value) - 7) + value[-4:]


def mask_email(value: str) -> str:
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain:
        return WHOLE
    return local[0] + "***@" + domain


def mask_address(value: str) -> str:
    if len(value) < 7:
        return WHOLE
    return value[:6] + WHOLE


def mask_tax_id(value: str) -> str:
    if len(value) != 18:
        return WHOLE
    return value[:4] + "*" * 10 + value[-4:]


MASKS: Mapping[str, Callable[[str], str]] = MappingProxyType(
    {"phone": mask_phone, "email": mask_email, "address": mask_address, "taxId": mask_tax_id}
)

FORMATS: Mapping[str, str] = MappingProxyType(
    {
        "phone": "first 3 characters, * for each middle character, last 4 (under 8 characters: ****)",
        "email": "first character of the local part, ***@, the domain (no @: ****)",
        "address": "first 6 characters, then **** (under 7 characters: ****)",
        "taxId": "first 4, * x 10, last 4 (not 18 characters: ****)",
    }
)
