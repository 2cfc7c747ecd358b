"""Mask formats of policy.md, exactly, and that no mask reveals more than its format."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.masks import WHOLE, mask_address, mask_email, mask_phone, mask_tax_id


@pytest.mark.parametrize(
    ("mask", "value", "masked"),
    [
        (mask_phone, "+8613812345678", "+86*******5678"),
        (mask_email, "wang.fang@chengchuan.cn", "w***@chengchuan.cn"),
        (mask_address, "上海市浦东新区张江路 88 号", "上海市浦东新****"),
        (mask_tax_id, "91310115MA1K4Q2X3L", "9131**********2X3L"),
    ],
)
def test_policy_examples(mask, value, masked) -> None:
    assert mask(value) == masked


@pytest.mark.parametrize(
    ("mask", "value", "masked"),
    [
        (mask_phone, "", WHOLE),
        (mask_phone, "1234567", WHOLE),  # under 8 characters
        (mask_phone, "12345678", "123*5678"),  # 8: one middle character
        (mask_address, "浦东新区张江", WHOLE),  # 6 characters: under 7
        (mask_address, "浦东新区张江路", "浦东新区张江****"),
        (mask_tax_id, "91310115MA1K4Q2X3", WHOLE),  # 17
        (mask_tax_id, "91310115MA1K4Q2X3LX", WHOLE),  # 19
        (mask_email, "no-at-sign", WHOLE),
        (mask_email, "@chengchuan.cn", WHOLE),
        (mask_email, "wang@", WHOLE),
        (mask_email, "a@b", "a***@b"),
        (mask_email, '"odd@local"@example.com', '"***@example.com'),  # the domain follows the last @
    ],
)
def test_too_short_or_odd_values(mask, value, masked) -> None:
    assert mask(value) == masked


TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40)


@given(TEXT, TEXT)
def test_phone_reveals_only_first_3_last_4_and_length(a: str, b: str) -> None:
    out = mask_phone(a)
    if len(a) < 8:
        assert out == WHOLE
        return
    assert len(out) == len(a) and out[3:-4] == "*" * (len(a) - 7)
    assert out[:3] == a[:3] and out[-4:] == a[-4:]
    # a value differing only in the middle masks identically: the middle is never revealed
    n = len(a) - 7
    other = a[:3] + ((b or "x") * n)[:n] + a[-4:]
    assert mask_phone(other) == out


@given(st.from_regex(r"\+861[3-9]\d{9}", fullmatch=True))
def test_phone_never_contains_the_middle_digits(phone: str) -> None:
    out = mask_phone(phone)
    assert out == phone[:3] + "*******" + phone[-4:]
    assert not any(ch.isdigit() for ch in out[3:-4])


@given(TEXT, TEXT, TEXT)
def test_email_reveals_only_first_character_and_domain(local: str, domain: str, other: str) -> None:
    value = f"{local}@{domain}"
    out = mask_email(value)
    real_local, _, real_domain = value.rpartition("@")
    if not real_local or not real_domain:
        assert out == WHOLE
        return
    assert out == real_local[0] + "***@" + real_domain
    if other:  # another local part with the same first character masks the same
        assert mask_email(real_local[0] + other.replace("@", "") + "@" + real_domain) == out


@given(TEXT, TEXT)
def test_address_reveals_only_first_6(a: str, tail: str) -> None:
    out = mask_address(a)
    if len(a) < 7:
        assert out == WHOLE
        return
    assert out == a[:6] + "****"
    assert mask_address(a[:6] + (tail or "x")) == out


@given(st.text(alphabet="0123456789ABCDEFGHJKLMNPQRTUWXY", min_size=0, max_size=24), TEXT)
def test_tax_id_reveals_only_first_4_and_last_4(a: str, middle: str) -> None:
    out = mask_tax_id(a)
    if len(a) != 18:
        assert out == WHOLE
        return
    assert out == a[:4] + "*" * 10 + a[-4:]
    replaced = a[:4] + middle[:10].ljust(10, "0") + a[-4:]
    assert mask_tax_id(replaced) == out
