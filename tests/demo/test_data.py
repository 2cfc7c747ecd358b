"""The generator: deterministic, reused when it matches, and as messy as real data."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from demo.data import (
    TRUTH_FILE,
    DemoData,
    anchor_epoch,
    dormant_accounts,
    find_examples,
    generate,
    is_valid_uscc,
    iso,
)

from .conftest import ANCHOR, CUSTOMERS, SEED

PHONE_FORMATS = {
    "+86 138 1234 5678": r"^\+86 1\d{2} \d{4} \d{4}$",
    "13812345678": r"^1\d{10}$",
    "138-1234-5678": r"^1\d{2}-\d{4}-\d{4}$",
    "021-5888 1234": r"^0\d{2,3}-\d{4} \d{4}$",
    "(021)58881234": r"^\(0\d{2,3}\)\d{8}$",
    "0086 13812345678": r"^0086 1\d{10}$",
}


def dump(data: DemoData) -> list[str]:
    lines: list[str] = []
    for path in data.paths.values():
        with sqlite3.connect(path) as conn:
            lines += conn.iterdump()
    return lines


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> DemoData:
    """A data set no test writes to."""
    return generate(tmp_path_factory.mktemp("pristine"), customers=CUSTOMERS, seed=SEED, anchor=ANCHOR)


@pytest.fixture(scope="module")
def db(pristine: DemoData) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(pristine.sales_db)
    conn.execute("ATTACH DATABASE ? AS support", (str(pristine.support_db),))
    conn.execute("ATTACH DATABASE ? AS contracts", (str(pristine.contracts_db),))
    yield conn
    conn.close()


def test_same_seed_same_data(tmp_path: Path) -> None:
    first = generate(tmp_path / "a", customers=50, seed=3, anchor=ANCHOR)
    second = generate(tmp_path / "b", customers=50, seed=3, anchor=ANCHOR)
    other = generate(tmp_path / "c", customers=50, seed=4, anchor=ANCHOR)
    assert first.generated and second.generated
    assert dump(first) == dump(second)
    assert dump(first) != dump(other)


def test_existing_data_is_reused_only_when_it_matches(tmp_path: Path) -> None:
    made = generate(tmp_path, customers=50, seed=3, anchor=ANCHOR)
    stamp, before = made.sales_db.stat().st_mtime_ns, dump(made)
    again = generate(tmp_path, customers=50, seed=3, anchor=ANCHOR)
    assert not again.generated and again == made and made.sales_db.stat().st_mtime_ns == stamp
    newer = generate(tmp_path, customers=50, seed=3, anchor=date(2025, 7, 1))
    assert newer.generated and newer.anchor == date(2025, 7, 1) and dump(newer) != before
    with pytest.raises(ValueError):
        generate(tmp_path, customers=5)


def test_small_data_sets_still_have_every_kind(tmp_path: Path) -> None:
    examples = find_examples(generate(tmp_path, customers=20, seed=1, anchor=ANCHOR))
    assert examples.paged_tickets in examples.heavy_tickets and len(examples.heavy_tickets) == 3


def test_everything_lies_before_the_anchor(db: sqlite3.Connection) -> None:
    start = anchor_epoch(ANCHOR)
    stamp = iso(start)
    for table, column in [
        ("accounts", "updated_at"),
        ("orders", "ordered_at"),
        ("activities", "occurred_at"),
    ]:
        assert db.execute(f"SELECT max({column}) FROM {table}").fetchone()[0] < stamp
    assert db.execute("SELECT max(updated_at) FROM support.tickets").fetchone()[0] < start
    assert db.execute("SELECT max(updated_on) FROM contracts.contracts").fetchone()[0] < ANCHOR.isoformat()


def test_emails_are_messy_in_sales_and_lower_case_in_support(db: sqlite3.Connection) -> None:
    mixed = db.execute("SELECT count(*) FROM accounts WHERE email <> lower(email)").fetchone()[0]
    assert mixed >= CUSTOMERS * 0.1
    assert db.execute("SELECT count(*) FROM accounts WHERE email IS NULL").fetchone()[0] >= 1
    assert (
        db.execute("SELECT count(*) FROM support.requesters WHERE email <> lower(email)").fetchone()[0] == 0
    )
    sales_emails = {r[0] for r in db.execute("SELECT lower(email) FROM accounts WHERE email IS NOT NULL")}
    ticket_emails = {r[0] for r in db.execute("SELECT DISTINCT requester_email FROM support.tickets")}
    requesters = {r[0] for r in db.execute("SELECT email FROM support.requesters")}
    assert ticket_emails == requesters
    assert len(ticket_emails & sales_emails) >= CUSTOMERS * 0.4
    assert ticket_emails - sales_emails  # some people write to support without a sales account


def test_phones_come_in_many_formats(db: sqlite3.Connection) -> None:
    phones = [r[0] for r in db.execute("SELECT phone FROM accounts WHERE phone IS NOT NULL")]
    seen = {name for name, pattern in PHONE_FORMATS.items() if any(re.match(pattern, p) for p in phones)}
    assert seen == set(PHONE_FORMATS)
    assert db.execute("SELECT count(*) FROM accounts WHERE phone IS NULL").fetchone()[0] >= 1


def _planted(data: DemoData) -> set[str]:
    """Accounts the generator planted as duplicates and look-alikes (identity-truth.json)."""
    truth = json.loads((data.data_dir / TRUTH_FILE).read_text())
    return {row[1] for row in truth["duplicates"] + truth["lookalikes"]} | {
        row[0] for row in truth["previous_emails"]
    }


def test_person_and_company_customers(db: sqlite3.Connection, pristine: DemoData) -> None:
    persons = db.execute("SELECT contact_name, tax_id FROM accounts WHERE kind = 'person'").fetchall()
    assert len(persons) >= CUSTOMERS * 0.2 and all(row == (None, None) for row in persons)
    planted = _planted(pristine)
    tax_ids = [
        tax_id
        for account_no, tax_id in db.execute("SELECT account_no, tax_id FROM accounts WHERE kind = 'company'")
        if account_no not in planted
    ]
    assert all(is_valid_uscc(t) for t in tax_ids) and len(set(tax_ids)) == len(tax_ids)
    # planted companies: a tax id is either none (a lead entered without it) or a valid one
    for account_no, tax_id in db.execute("SELECT account_no, tax_id FROM accounts WHERE kind = 'company'"):
        if account_no in planted:
            assert tax_id is None or is_valid_uscc(tax_id)


def test_planted_duplicates_and_their_truth(pristine: DemoData, db: sqlite3.Connection) -> None:
    """Every kind of duplicate and look-alike is planted, after the generated customers, and the truth
    names accounts that exist."""
    truth = json.loads((pristine.data_dir / TRUTH_FILE).read_text())
    assert {k for _, _, k in truth["duplicates"]} == {"tax_id", "email", "phone", "name", "contact"}
    assert {k for _, _, k in truth["lookalikes"]} == {
        "same_name_other_tax_id",
        "same_person_name",
        "same_contact_other_company",
    }
    accounts = {r[0] for r in db.execute("SELECT account_no FROM accounts")}
    for a, b, _ in truth["duplicates"] + truth["lookalikes"]:
        assert a in accounts and b in accounts and a < b
    for account_no, old in truth["previous_emails"]:
        email = db.execute("SELECT email FROM accounts WHERE account_no = ?", (account_no,)).fetchone()[0]
        assert email and email.lower() != old
    parties = db.execute(
        "SELECT count(*) FROM contracts.contracts c LEFT JOIN accounts a"
        " ON a.tax_id = c.party_tax_id AND a.name = c.party_name WHERE a.account_no IS NULL"
    ).fetchone()[0]
    assert parties == 0  # contracts use the sales tax id and company name


def test_pool_and_owners(db: sqlite3.Connection, pristine: DemoData) -> None:
    planted = _planted(pristine)  # entered by any rep, or left in the pool: not part of these shares
    rows = db.execute("SELECT account_no, owner_since, pool_since FROM accounts WHERE owner_id IS NULL")
    pool = [(o, p) for no, o, p in rows if no not in planted]
    assert len(pool) == CUSTOMERS * 0.2 and all(o is None and p is not None for o, p in pool)
    owned = [
        same
        for no, same in db.execute(
            "SELECT a.account_no, a.region = u.region FROM accounts a JOIN users u ON u.user_id = a.owner_id"
            " WHERE a.pool_since IS NULL AND a.owner_since IS NOT NULL AND u.role = 'rep'"
        )
        if no not in planted
    ]
    assert len(owned) == CUSTOMERS * 0.8
    assert sum(owned) >= len(owned) * 0.75  # reps own mostly in their region
    assert {r[0] for r in db.execute("SELECT role FROM users")} == {"rep", "manager"}


def test_dormant_customers(pristine: DemoData) -> None:
    planted = _planted(pristine)  # planted leads were never contacted: dormant as well
    dormant = [a for a in dormant_accounts(pristine) if a not in planted]
    assert len(dormant) == CUSTOMERS * 0.1
    assert find_examples(pristine).dormant in dormant


def test_some_customers_have_hundreds_of_tickets(db: sqlite3.Connection) -> None:
    counts = [
        r[0]
        for r in db.execute(
            "SELECT count(*) FROM support.tickets GROUP BY requester_email HAVING count(*) >= 300 ORDER BY 1"
        )
    ]
    assert len(counts) == 3 and counts[-1] > 500 and counts[-1] <= 800
    public = {r[0] for r in db.execute("SELECT DISTINCT public FROM support.comments")}
    assert public == {0, 1}
    assert db.execute("SELECT count(*) FROM support.tickets WHERE sat_score IS NOT NULL").fetchone()[0] > 0


def test_contracts_are_varied(db: sqlite3.Connection) -> None:
    total, confidential = db.execute("SELECT count(*), sum(confidential) FROM contracts.contracts").fetchone()
    assert 0.05 <= confidential / total <= 0.16
    ndas = db.execute("SELECT value FROM contracts.contracts WHERE type = 'nda'").fetchall()
    assert ndas and all(v is None for (v,) in ndas)
    drafts = db.execute("SELECT signed_on FROM contracts.contracts WHERE status = 'draft'").fetchall()
    assert drafts and all(s is None for (s,) in drafts)
    ids = [r[0] for r in db.execute("SELECT contract_id FROM contracts.contracts")]
    assert all(re.match(r"^HT-\d{4}-\d{5}$", i) for i in ids)


def test_examples_match_their_description(pristine: DemoData, db: sqlite3.Connection) -> None:
    ex = find_examples(pristine)

    def account(no: str) -> tuple[str, str | None, str | None, str | None]:
        row: tuple[str, str | None, str | None, str | None] = db.execute(
            "SELECT kind, email, tax_id, owner_id FROM accounts WHERE account_no = ?", (no,)
        ).fetchone()
        return row

    assert account(ex.person)[0] == "person" and account(ex.person)[2] is None
    assert account(ex.company)[0] == "company" and account(ex.company)[2]
    assert account(ex.pool)[3] is None and account(ex.owned)[3] == ex.rep
    assert account(ex.no_email)[1] is None
    email = account(ex.mixed_case_email)[1]
    assert email is not None and email != email.lower()
    assert db.execute("SELECT 1 FROM accounts WHERE account_no = ?", (ex.unknown_account,)).fetchone() is None
