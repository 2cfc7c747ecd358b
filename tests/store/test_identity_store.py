"""The identity store on SQLite and PostgreSQL: a scan's index, incremental observation keeping a changed
e-mail, steward links seen by a second gateway instance within its refresh, not-duplicate marks, and the
steward lists' paging."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Mapping, Sequence

import pytest

from connectors.models import Account
from features.identity.match import Reason
from features.identity.service import Identity
from features.identity.store import IdentityStore, Missing
from features.store import Database
from tests.factories import make_account

from .conftest import Backend


def _accounts() -> list[Account]:
    base = make_account("A-1", owner="u-1")
    return [
        base,
        # the same company entered again: same tax id, the name typed with another legal form
        dataclasses.replace(base, account_no="A-2", name="Chengchuan Trading 股份有限公司", email=None),
        # a namesake with another tax id and nothing else in common
        dataclasses.replace(
            base,
            account_no="A-3",
            tax_id="91310115MA1K4Q2X4M",
            email="x@other.cn",
            phone=None,
            contact_name="Li",
        ),
        dataclasses.replace(
            base,
            account_no="A-4",
            kind="person",
            name="王芳",
            contact_name=None,
            tax_id=None,
            email="wf@163.com",
            phone="+8613900000000",
            address=None,
        ),
    ]


async def _pages(accounts: Sequence[Account]) -> AsyncIterator[Sequence[Account]]:
    yield accounts[:2]
    yield accounts[2:]


@pytest.fixture
async def databases(backend: Backend) -> AsyncIterator[tuple[Database, Database]]:
    first, second = backend.open(), backend.open()
    try:
        yield first, second
    finally:
        await first.aclose()
        await second.aclose()


def _fetcher(accounts: Sequence[Account]):  # type: ignore[no-untyped-def]
    by_no = {a.account_no: a for a in accounts}

    async def fetch(numbers: list[str]) -> Mapping[str, Account]:
        return {n: by_no[n] for n in numbers if n in by_no}

    return fetch


async def test_scan_stores_pairs_keys_and_gaps(databases: tuple[Database, Database]) -> None:
    accounts = _accounts()
    identity = Identity(IdentityStore(databases[0]), _fetcher(accounts), refresh_seconds=0)
    result = await identity.scan(_pages(accounts))
    assert (result.accounts, result.probable) == (4, 1)
    pairs, _, more = await identity.store.pairs_page(
        min_score=0.8, region=None, reason=None, after=None, first=10
    )
    assert [(p.a, p.b) for p in pairs] == [("A-1", "A-2")] and not more
    assert Reason.SAME_TAX_ID in pairs[0].reasons
    # the namesake with another tax id shares the name key but is not a probable duplicate
    assert await identity.candidates(identity_profile(accounts[0])) == ["A-2", "A-3"]
    rows, _, _ = await identity.store.incomplete_page(mask=int(Missing.EMAIL), after=None, first=10)
    assert [no for no, _ in rows] == ["A-2"]
    rows, _, _ = await identity.store.incomplete_page(mask=int(Missing.TAX_ID), after=None, first=10)
    assert rows == []  # a person has no tax id to miss


def identity_profile(account: Account):  # type: ignore[no-untyped-def]
    from features.identity.match import Profile

    return Profile.of(account)


async def test_a_changed_email_is_kept_and_a_link_reaches_another_instance(
    databases: tuple[Database, Database],
) -> None:
    accounts = _accounts()
    here = Identity(IdentityStore(databases[0]), _fetcher(accounts), refresh_seconds=0.05)
    there = Identity(IdentityStore(databases[1]), _fetcher(accounts), refresh_seconds=0.05)
    await here.scan(_pages(accounts))
    await here.start()
    await there.start()
    try:
        moved = dataclasses.replace(accounts[3], email="new@163.com")
        seen = await here.observe([moved])
        assert seen.previous == [("A-4", "wf@163.com")]
        assert here.extra_emails("A-4") == ("wf@163.com",)
        assert await here.store.support_emails("A-4")  # stored, as origin previous
        assert (await here.store.support_emails("A-4"))[0].origin == "previous"
        await here.link("A-1", "boss@chengchuan.cn", actor="u-steward", note=None)
        for _ in range(100):  # the other instance reloads every 50 ms
            if there.extra_emails("A-1"):
                break
            await asyncio.sleep(0.02)
        assert there.extra_emails("A-1") == ("boss@chengchuan.cn",)
        assert there.accounts_of_email("boss@chengchuan.cn") == ("A-1",)
        assert await here.unlink("A-1", "boss@chengchuan.cn", actor="u-steward", reason="wrong")
        assert not await here.unlink("A-1", "boss@chengchuan.cn", actor="u-steward", reason="again")
        for _ in range(100):
            if not there.extra_emails("A-1"):
                break
            await asyncio.sleep(0.02)
        assert there.extra_emails("A-1") == ()
    finally:
        await here.stop()
        await there.stop()


async def test_not_duplicates_and_requesters(databases: tuple[Database, Database]) -> None:
    accounts = _accounts()
    identity = Identity(IdentityStore(databases[0]), _fetcher(accounts), refresh_seconds=0)
    await identity.scan(_pages(accounts))
    assert await identity.mark_distinct("A-2", "A-1", actor="u-steward", reason="two shops")
    assert not await identity.mark_distinct("A-1", "A-2", actor="u-steward", reason="again")
    pairs, _, _ = await identity.store.pairs_page(
        min_score=0.5, region=None, reason=None, after=None, first=10
    )
    assert ("A-1", "A-2") not in [(p.a, p.b) for p in pairs]
    assert "A-2" not in await identity.candidates(identity_profile(accounts[0]))
    now = identity.clock()
    await identity.store.heard_requesters(["wang.fang@chengchuan.cn", "stranger@qq.com", "b@x.cn"], now)
    await identity.store.heard_requesters(["stranger@qq.com"], now)
    first, end, more = await identity.store.unmatched_requesters(after=None, first=1)
    assert len(first) == 1 and more  # (in the order of the sealed e-mails' blind indexes)
    rest, _, more = await identity.store.unmatched_requesters(after=end, first=10)
    assert len(rest) == 1 and not more
    assert {*first, *rest} == {"b@x.cn", "stranger@qq.com"}  # wang.fang is A-1's current e-mail


async def test_an_erased_email_is_never_linked_or_listed_again(databases: tuple[Database, Database]) -> None:
    """After ``forget`` (an erasure), a late change event that still carries the old e-mail's change, or a
    requester import naming it, does not bring it back; a steward still may link it on purpose."""
    accounts = _accounts()
    store = IdentityStore(databases[0], b"k" * 32)
    identity = Identity(store, _fetcher(accounts), refresh_seconds=0)
    await identity.scan(_pages(accounts))
    moved = dataclasses.replace(accounts[0], email="new@chengchuan.cn")
    await identity.observe([moved])  # the old e-mail kept as a previous one
    assert {e.email for e in await store.support_emails("A-1")} == {accounts[0].email}
    await store.heard_requesters([str(accounts[0].email), "new@chengchuan.cn"], moved.created_at)

    forgotten = await store.forget("A-1", [str(accounts[0].email), "new@chengchuan.cn"], moved.created_at)
    assert forgotten.support_emails == 1 and forgotten.requesters == 2 and forgotten.pairs >= 1
    assert await store.support_emails("A-1") == []

    # the sales system's own change event for the blanking arrives late: old e-mail known again? No.
    await identity.observe([moved])
    await identity.observe([dataclasses.replace(moved, email=None)])
    assert await store.support_emails("A-1") == []
    await store.heard_requesters([str(accounts[0].email).upper()], moved.created_at)
    assert (await store.unmatched_requesters(after=None, first=10))[0] == []
    # another instance (same key) knows it too
    other = IdentityStore(databases[1], b"k" * 32)
    await other.heard_requesters(["new@chengchuan.cn"], moved.created_at)
    assert (await other.unmatched_requesters(after=None, first=10))[0] == []
    assert await store.add_email("A-1", "new@chengchuan.cn", origin="linked", source="steward", actor="u-s",
                                 at=moved.created_at)  # fmt: skip
