"""Who is who: normalised identity keys of a sales account, blocking keys, and the pair score.

Two accounts are compared only when they share a *blocking key* (same tax id, same normalised e-mail,
same E.164 phone, same normalised company name, same normalised contact in the same region): never all
pairs. Each kind of evidence maps to exactly one blocking key and one policy field, so a caller's view of
a pair can be scored on the evidence it sees in clear alone (``compare(..., sees=...)``): a reason or a
score never depends on a value the caller sees masked or not at all.

Normalising: Unicode NFKC (full-width → half-width), case folded, white space removed; company names
without their legal form (有限公司, 股份有限公司, 有限责任公司, (集团)) and with a bracketed place name
moved to the front (``澄川科技（上海）有限公司`` = ``上海澄川科技有限公司``).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from rapidfuzz import fuzz


class Reason(StrEnum):
    """Why two accounts are probably the same customer (strongest first)."""

    SAME_TAX_ID = "same_tax_id"
    SAME_EMAIL = "same_email"
    SAME_PHONE = "same_phone"
    SAME_NAME = "same_name"
    SIMILAR_CONTACT = "similar_contact"


# How strong each piece of evidence is on its own (combined as independent evidence: 1 - Π(1 - w)).
WEIGHTS: dict[Reason, float] = {
    Reason.SAME_TAX_ID: 0.99,
    Reason.SAME_EMAIL: 0.95,
    Reason.SAME_PHONE: 0.75,  # families and offices share phones: with the same name it is probable
    Reason.SAME_NAME: 0.85,  # companies in one region; a person's name alone is weak (PERSON_NAME)
    Reason.SIMILAR_CONTACT: 0.85,  # the same contact in one region, at a company of a similar name
}
PERSON_NAME = 0.30  # many people share a name: supporting evidence only
NAME_OTHER_REGION = 0.60  # the same company name in another region: a branch as often as a duplicate
NAME_AMBIGUOUS = 0.50  # a company name that several legal entities (tax ids) bear identifies none
TAX_CONFLICT = 0.15  # both have a tax id and they differ: two legal entities, whatever else matches
SIMILAR_NAME = 90  # rapidfuzz partial ratio (0..100) of the core names for SIMILAR_CONTACT

PROBABLE = 0.80  # a duplicate for stewards and the truth check (precision/recall)
POSSIBLE = 0.50  # shown as a possible duplicate on a customer

# Company names: the legal form is not part of the name; a bracketed place name is a prefix.
_FORMS = re.compile(r"(股份有限公司|有限责任公司|有限公司|股份公司|集团公司|公司)$")
_GROUP = re.compile(r"\(集团\)|集团$")
_BRACKET = re.compile(r"\(([^()]*)\)")
_SPACE = re.compile(r"\s+")


class AccountLike(Protocol):
    @property
    def account_no(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def contact_name(self) -> str | None: ...
    @property
    def email(self) -> str | None: ...
    @property
    def phone(self) -> str | None: ...
    @property
    def tax_id(self) -> str | None: ...
    @property
    def region(self) -> str: ...
    @property
    def address(self) -> str | None: ...


def text(value: str | None) -> str:
    """NFKC, case folded, without white space ('' for None)."""
    if not value:
        return ""
    return _SPACE.sub("", unicodedata.normalize("NFKC", value)).casefold()


def company_name(value: str) -> str:
    """The name without its legal form and group marker, a bracketed place moved to the front."""
    name = text(value)
    name = _GROUP.sub("", name)
    match = _BRACKET.search(name)
    if match is not None:
        place = match.group(1)
        name = name[: match.start()] + name[match.end() :]
        if place and not name.startswith(place):
            name = place + name
    previous = None
    while previous != name:
        previous = name
        name = _FORMS.sub("", _GROUP.sub("", name))
    return name


def email(value: str | None) -> str:
    return text(value)


def phone(value: str | None) -> str:
    """An E.164 number (the connectors normalise phones); text that is not one gives no key."""
    normal = text(value)
    return normal if normal.startswith("+") and normal[1:].isdigit() and len(normal) >= 9 else ""


def tax_id(value: str | None) -> str:
    normal = text(value).upper()
    return normal if len(normal) == 18 else ""


@dataclass(frozen=True, slots=True)
class Profile:
    """What matching reads of one account, normalised once."""

    account_no: str
    kind: str
    region: str
    name: str  # company: core name; person: normalised full name
    contact: str
    email: str
    phone: str
    tax_id: str

    @classmethod
    def of(cls, account: AccountLike) -> Profile:
        company = account.kind == "company"
        return cls(
            account_no=account.account_no,
            kind=account.kind,
            region=account.region,
            name=company_name(account.name) if company else text(account.name),
            contact=text(account.contact_name) if company else "",
            email=email(account.email),
            phone=phone(account.phone),
            tax_id=tax_id(account.tax_id),
        )

    def blocking_keys(self) -> list[str]:
        """Blocking keys, one per kind of evidence (as stored: see ``hashed``)."""
        found: list[str] = []
        if self.tax_id:
            found.append(f"tax:{self.tax_id}")
        if self.email:
            found.append(f"email:{self.email}")
        if self.phone:
            found.append(f"phone:{self.phone}")
        if self.kind == "company" and self.name:
            found.append(f"name:{self.name}")
        if self.contact:
            found.append(f"contact:{self.region}:{self.contact}")
        return found


def hashed(key: str) -> str:
    """A blocking key as the gateway database keeps it: a digest, never the value itself."""
    return hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class Match:
    score: float
    reasons: tuple[Reason, ...]


def _everything(field: str) -> bool:
    return True


def compare(
    a: Profile, b: Profile, sees: Callable[[str], bool] = _everything, *, ambiguous_name: bool = False
) -> Match | None:
    """The evidence that ``a`` and ``b`` are one customer, counting only fields ``sees`` (a policy field
    name → seen in clear on both accounts) admits. ``ambiguous_name``: accounts of this name carry two
    or more different tax ids (decide it only from tax ids the caller sees in clear everywhere).
    None when there is no evidence."""
    if a.account_no == b.account_no or a.kind != b.kind:
        return None
    weights: list[tuple[Reason, float]] = []
    conflict = False
    if a.tax_id and b.tax_id and sees("taxId"):
        if a.tax_id == b.tax_id:
            weights.append((Reason.SAME_TAX_ID, WEIGHTS[Reason.SAME_TAX_ID]))
        else:
            conflict = True
    if a.email and a.email == b.email and sees("email"):
        weights.append((Reason.SAME_EMAIL, WEIGHTS[Reason.SAME_EMAIL]))
    if a.phone and a.phone == b.phone and sees("phone"):
        weights.append((Reason.SAME_PHONE, WEIGHTS[Reason.SAME_PHONE]))
    if a.name and a.name == b.name:
        if a.kind == "person":
            weight = PERSON_NAME
        elif ambiguous_name:
            weight = NAME_AMBIGUOUS
        else:
            weight = WEIGHTS[Reason.SAME_NAME] if a.region == b.region else NAME_OTHER_REGION
        weights.append((Reason.SAME_NAME, weight))
    if (
        a.contact
        and a.contact == b.contact
        and a.region == b.region
        and sees("contactName")
        and a.name != b.name
        and fuzz.partial_ratio(a.name, b.name) >= SIMILAR_NAME
    ):
        weights.append((Reason.SIMILAR_CONTACT, WEIGHTS[Reason.SIMILAR_CONTACT]))
    if not weights:
        return None
    miss = 1.0
    for _, weight in weights:
        miss *= 1.0 - weight
    score = 1.0 - miss
    if conflict:
        score *= TAX_CONFLICT
    ordered = tuple(reason for reason, _ in sorted(weights, key=lambda rw: -rw[1]))
    return Match(round(score, 4), ordered)


def pair(a: str, b: str) -> tuple[str, str]:
    """An unordered pair of account numbers, as stored (smaller first)."""
    return (a, b) if a < b else (b, a)


MAX_BLOCK = 200  # a blocking key shared by more accounts is not evidence (a switchboard, a generic name)


def find_pairs(
    profiles: Iterable[Profile], *, threshold: float = POSSIBLE, max_block: int = MAX_BLOCK
) -> tuple[dict[tuple[str, str], Match], int]:
    """Every pair sharing a blocking key, scored on all evidence; those at ``threshold`` or above, and
    how many blocks were skipped as too large. Cost: the sum of the squared block sizes, never n²."""
    by_no: dict[str, Profile] = {}
    blocks: dict[str, list[str]] = {}
    for profile in profiles:
        by_no[profile.account_no] = profile
        for key in profile.blocking_keys():
            blocks.setdefault(key, []).append(profile.account_no)
    found: dict[tuple[str, str], Match] = {}
    seen: set[tuple[str, str]] = set()
    ambiguous = {
        key[5:]
        for key, members in blocks.items()
        if key.startswith("name:") and len(members) > 1 and ambiguous_by_tax(by_no[m] for m in members)
    }
    skipped = 0
    for members in blocks.values():
        if len(members) < 2:
            continue
        if len(members) > max_block:
            skipped += 1
            continue
        for i, a in enumerate(members):
            for b in members[i + 1 :]:
                both = pair(a, b)
                if both in seen:
                    continue
                seen.add(both)
                pa, pb = by_no[a], by_no[b]
                match = compare(pa, pb, ambiguous_name=pa.name in ambiguous)
                if match is not None and match.score >= threshold:
                    found[both] = match
    return found, skipped


def ambiguous_by_tax(profiles: Iterable[Profile]) -> bool:
    """Do these accounts (of one company name) carry two or more different tax ids?"""
    taxes = {p.tax_id for p in profiles if p.tax_id}
    return len(taxes) > 1
