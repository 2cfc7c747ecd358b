"""The matcher's rules as the issue states them: company forms, widths, spaces, brackets; evidence only
from what a caller sees; a tax-id conflict outweighs a shared name."""

from __future__ import annotations

import dataclasses

import pytest

from features.identity.match import PROBABLE, Profile, Reason, company_name, compare, find_pairs
from tests.factories import make_account


@pytest.mark.parametrize(
    "typed",
    [
        "上海澄川科技有限公司",
        "上海澄川科技股份有限公司",
        "上海澄川科技（集团）有限公司",
        "澄川科技（上海）有限公司",
        "澄川科技(上海)有限公司",
        "上海 澄川 科技有限公司",
        "上海澄川科技有限责任公司",
    ],
)
def test_company_forms_widths_and_spaces_normalise_away(typed: str) -> None:
    assert company_name(typed) == "上海澄川科技"


def test_a_different_place_is_a_different_name() -> None:
    assert company_name("杭州澄川科技有限公司") != company_name("上海澄川科技有限公司")


def _pair() -> tuple[Profile, Profile]:
    a = make_account("A-1")
    b = dataclasses.replace(a, account_no="A-2", tax_id=None, contact_name="Li", phone=None)
    return Profile.of(a), Profile.of(b)


def test_evidence_only_from_fields_seen_in_clear() -> None:
    a, b = _pair()
    everything = compare(a, b)
    assert everything is not None and everything.reasons[0] is Reason.SAME_EMAIL
    masked_email = compare(a, b, lambda field: field != "email")
    assert masked_email is not None and Reason.SAME_EMAIL not in masked_email.reasons
    assert masked_email.score < everything.score
    # the score without e-mail evidence does not depend on the e-mails at all
    other = dataclasses.replace(b, email="someone@else.cn")
    assert compare(a, other, lambda field: field != "email") == masked_email


def test_two_tax_ids_outweigh_a_shared_name() -> None:
    a = Profile.of(make_account("A-1"))
    b = dataclasses.replace(
        a, account_no="A-2", tax_id="91310115MA1K4Q2X4M", email="", phone="", contact="li"
    )
    match = compare(a, b)
    assert match is not None and match.score < PROBABLE
    found, _ = find_pairs([a, b])
    assert all(m.score < PROBABLE for m in found.values())


def test_persons_of_one_name_are_not_duplicates_without_more() -> None:
    a = Profile("P-1", "person", "east", "王芳", "", "a@163.com", "+8613900000001", "")
    b = dataclasses.replace(a, account_no="P-2", email="b@163.com", phone="+8613900000002")
    match = compare(a, b)
    assert match is not None and match.score < 0.5
    same_phone = dataclasses.replace(b, phone=a.phone)
    probable = compare(a, same_phone)
    assert probable is not None and probable.score >= PROBABLE
