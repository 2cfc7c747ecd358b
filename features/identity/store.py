"""The identity tables in the gateway's database (``features/store/models.py``, migration 0005_identity).

E-mails, notes and reasons are sealed (migration 0009_sealed): a lookup by e-mail compares the blind index
(``email_idx == email`` binds the e-mail's keyed digest); inserted rows get theirs from the column default.

Every method raises ``StoreUnavailable`` when the database fails. Values are as the matcher normalised
them; blocking keys are digests (``match.hashed``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import IntFlag
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from features.cursors import decode_cursor, encode_cursor
from features.store.db import STORE_ERRORS, Database, StoreUnavailable
from features.store.models import (
    identity_accounts,
    identity_distinct,
    identity_emails,
    identity_forgotten,
    identity_keys,
    identity_pairs,
    identity_requesters,
)

from .match import Match, Profile, Reason, hashed, pair

log = logging.getLogger(__name__)
T = TypeVar("T")

_CHUNK = 2000  # rows per INSERT … VALUES batch (and ids per IN (...))
MAX_PAGE = 100


class Missing(IntFlag):
    """Contact fields an account lacks (``identity_accounts.missing``)."""

    EMAIL = 1
    PHONE = 2
    TAX_ID = 4  # companies only: a person has no tax id
    ADDRESS = 8


def missing_of(account: Any) -> Missing:
    flags = Missing(0)
    if not account.email:
        flags |= Missing.EMAIL
    if not account.phone:
        flags |= Missing.PHONE
    if account.kind == "company" and not account.tax_id:
        flags |= Missing.TAX_ID
    if not account.address:
        flags |= Missing.ADDRESS
    return flags


@dataclass(frozen=True, slots=True)
class SupportEmail:
    """A support identity besides the account's current e-mail."""

    id: int
    account_no: str
    email: str
    origin: str  # previous | linked
    source: str  # gateway | event | scan | steward
    actor: str
    note: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class StoredPair:
    a: str
    b: str
    score: float
    reasons: tuple[Reason, ...]
    found_at: datetime


@dataclass(frozen=True, slots=True)
class Seen:
    """What an observation of accounts changed: accounts whose e-mail changed (old e-mail kept)."""

    previous: list[tuple[str, str]]  # (account_no, old e-mail)


def _email_row(row: Mapping[Any, Any]) -> SupportEmail:
    return SupportEmail(
        id=int(row["id"]),
        account_no=row["account_no"],
        email=row["email"],
        origin=row["origin"],
        source=row["source"],
        actor=row["actor"],
        note=row["note"],
        created_at=row["created_at"],
    )


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(frozen=True, slots=True)
class Forgotten:
    support_emails: int  # previous and linked e-mails removed
    requesters: int  # requester records removed
    pairs: int  # duplicate pairs and "not duplicate" marks removed


def forgotten_digest(email: str, key: bytes) -> str:
    """What the gateway keeps of an erased e-mail: a keyed digest (no guess can be tested without the key)."""
    return hmac.new(key, b"forgotten\n" + email.strip().casefold().encode(), hashlib.sha256).hexdigest()


def _forgotten(conn: Connection, emails: Iterable[str], key: bytes) -> set[str]:
    """Which of ``emails`` were erased."""
    by_digest = {forgotten_digest(e, key): e for e in emails}
    if not by_digest:
        return set()
    rows = conn.execute(
        sa.select(identity_forgotten.c.digest).where(identity_forgotten.c.digest.in_(sorted(by_digest)))
    )
    return {by_digest[d] for (d,) in rows}


class IdentityStore:
    """``key``: the key of the digests of erased e-mails (``forget``)."""

    def __init__(self, database: Database, key: bytes = b"") -> None:
        self.db = database
        self.key = key

    async def _guard(self, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        except STORE_ERRORS as exc:
            log.warning("identity store unavailable: %s", type(exc).__name__)
            raise StoreUnavailable("the gateway's database is unavailable") from None

    # --- support identities ---------------------------------------------------------------------

    async def extra_emails(self) -> dict[str, tuple[tuple[str, str], ...]]:
        """Every account's active support identities besides its current e-mail: (e-mail, origin)."""

        async def run() -> dict[str, tuple[tuple[str, str], ...]]:
            found: dict[str, dict[str, str]] = {}
            async with self.db.read() as conn:
                rows = await conn.execute(
                    sa.select(identity_emails.c.account_no, identity_emails.c.email, identity_emails.c.origin)
                    .where(identity_emails.c.removed_at.is_(None))
                    .order_by(identity_emails.c.id)
                )
                for account_no, email, origin in rows:
                    found.setdefault(account_no, {}).setdefault(email, origin)
            return {k: tuple(v.items()) for k, v in found.items()}

        return await self._guard(run)

    async def support_emails(self, account_no: str) -> list[SupportEmail]:
        async def run() -> list[SupportEmail]:
            async with self.db.read() as conn:
                rows = await conn.execute(
                    sa.select(identity_emails)
                    .where(identity_emails.c.account_no == account_no, identity_emails.c.removed_at.is_(None))
                    .order_by(identity_emails.c.id)
                )
                return [_email_row(r) for r in rows.mappings()]

        return await self._guard(run)

    async def add_email(
        self,
        account_no: str,
        email: str,
        *,
        origin: str,
        source: str,
        actor: str,
        at: datetime,
        note: str | None = None,
    ) -> bool:
        """Add a support identity; False when the account already has it (active)."""

        def run(conn: Connection) -> bool:
            return _add_email(conn, account_no, email, origin, source, actor, at, note)

        return await self._guard(lambda: self.db.run_write(run))

    async def remove_email(
        self, account_no: str, email: str, *, actor: str, reason: str, at: datetime
    ) -> bool:
        """Unlink a support identity; False when the account has no such active identity."""

        def run(conn: Connection) -> bool:
            result = conn.execute(
                identity_emails.update()
                .where(
                    identity_emails.c.account_no == account_no,
                    identity_emails.c.email_idx == email,  # the blind index: e-mails are sealed
                    identity_emails.c.removed_at.is_(None),
                )
                .values(removed_at=at, removed_by=actor, removed_reason=reason)
            )
            return bool(result.rowcount)

        return await self._guard(lambda: self.db.run_write(run))

    async def forget(self, account_no: str, emails: Sequence[str], at: datetime) -> Forgotten:
        """An erasure: the account's e-mail, keys, support identities and pairs, and the requester records
        of ``emails``, removed; ``emails`` kept as keyed digests, so that no change event or import links
        or lists them again (a steward still may, on purpose)."""

        def run(conn: Connection) -> Forgotten:
            digests = {forgotten_digest(e, self.key) for e in emails}
            known = {
                d
                for (d,) in conn.execute(
                    sa.select(identity_forgotten.c.digest).where(
                        identity_forgotten.c.digest.in_(sorted(digests))
                    )
                )
            }
            if digests - known:
                conn.execute(
                    identity_forgotten.insert(), [{"digest": d, "at": at} for d in sorted(digests - known)]
                )
            conn.execute(
                identity_accounts.update()
                .where(identity_accounts.c.account_no == account_no)
                .values(email=None, email_idx=None)
            )
            conn.execute(identity_keys.delete().where(identity_keys.c.account_no == account_no))
            e, r = identity_emails, identity_requesters
            written = sorted({*emails, *(x.strip().lower() for x in emails)})  # as typed, as normalised
            removed = conn.execute(
                e.delete().where(sa.or_(e.c.account_no == account_no, e.c.email_idx.in_(written)))
            )
            requesters = conn.execute(r.delete().where(r.c.email_idx.in_(written)))
            pairs = 0
            for table in (identity_pairs, identity_distinct):
                pairs += conn.execute(
                    table.delete().where(sa.or_(table.c.a == account_no, table.c.b == account_no))
                ).rowcount
            return Forgotten(max(removed.rowcount, 0), max(requesters.rowcount, 0), max(pairs, 0))

        return await self._guard(lambda: self.db.run_write(run))

    # --- blocking keys and observed accounts ------------------------------------------------------

    async def sharing_keys(self, keys: Sequence[str]) -> dict[str, set[str]]:
        """Account numbers by the (hashed) blocking key they share with ``keys``."""
        if not keys:
            return {}

        async def run() -> dict[str, set[str]]:
            found: dict[str, set[str]] = {}
            async with self.db.read() as conn:
                rows = await conn.execute(
                    sa.select(identity_keys.c.key, identity_keys.c.account_no).where(
                        identity_keys.c.key.in_(list(keys))
                    )
                )
                for key, account_no in rows:
                    found.setdefault(key, set()).add(account_no)
            return found

        return await self._guard(run)

    async def observe(self, profiles: Sequence[Profile], accounts: Sequence[Any], at: datetime) -> Seen:
        """Record what these accounts look like now (keys, e-mail, missing fields); an e-mail that changed
        is kept as a ``previous`` support identity (source ``event``)."""

        def run(conn: Connection) -> Seen:
            return _observe(
                conn, profiles, accounts, at, source="event", actor="system:identity", forget_key=self.key
            )

        return await self._guard(lambda: self.db.run_write(run))

    async def replace_index(
        self,
        profiles: Sequence[Profile],
        accounts: Sequence[Any],
        pairs: Mapping[tuple[str, str], Match],
        regions: Mapping[str, str],
        at: datetime,
    ) -> Seen:
        """A full scan's result: every account's keys, e-mail and missing fields, and every pair."""

        def run(conn: Connection) -> Seen:
            seen = _observe(
                conn, profiles, accounts, at, source="scan", actor="system:identity-scan", forget_key=self.key
            )
            conn.execute(identity_pairs.delete())
            for chunk in _chunks(_pair_rows(pairs, regions, at)):
                conn.execute(identity_pairs.insert(), list(chunk))
            return seen

        return await self._guard(lambda: self.db.run_write(run))

    async def replace_pairs_of(
        self,
        account_no: str,
        pairs: Mapping[tuple[str, str], Match],
        regions: Mapping[str, str],
        at: datetime,
    ) -> None:
        def run(conn: Connection) -> None:
            conn.execute(
                identity_pairs.delete().where(
                    sa.or_(identity_pairs.c.a == account_no, identity_pairs.c.b == account_no)
                )
            )
            if pairs:
                conn.execute(identity_pairs.insert(), _pair_rows(pairs, regions, at))

        await self._guard(lambda: self.db.run_write(run))

    # --- not duplicates -------------------------------------------------------------------------

    async def mark_distinct(self, a: str, b: str, *, actor: str, reason: str, at: datetime) -> bool:
        first, second = pair(a, b)

        def run(conn: Connection) -> bool:
            exists = conn.execute(
                sa.select(identity_distinct.c.a).where(
                    identity_distinct.c.a == first, identity_distinct.c.b == second
                )
            ).first()
            if exists is not None:
                return False
            conn.execute(
                identity_distinct.insert().values(
                    a=first, b=second, actor=actor, reason=reason, created_at=at
                )
            )
            return True

        return await self._guard(lambda: self.db.run_write(run))

    async def distinct_from(self, account_nos: Sequence[str]) -> set[tuple[str, str]]:
        """The not-duplicate marks touching any of ``account_nos``, as (a, b) pairs."""
        if not account_nos:
            return set()

        async def run() -> set[tuple[str, str]]:
            async with self.db.read() as conn:
                rows = await conn.execute(
                    sa.select(identity_distinct.c.a, identity_distinct.c.b).where(
                        sa.or_(
                            identity_distinct.c.a.in_(list(account_nos)),
                            identity_distinct.c.b.in_(list(account_nos)),
                        )
                    )
                )
                return {(a, b) for a, b in rows}

        return await self._guard(run)

    # --- steward lists --------------------------------------------------------------------------

    async def pairs_page(
        self, *, min_score: float, region: str | None, reason: Reason | None, after: str | None, first: int
    ) -> tuple[list[StoredPair], str | None, bool]:
        """Stored pairs, strongest first, without those marked not duplicates: (page, end cursor, more)."""

        async def run() -> tuple[list[StoredPair], str | None, bool]:
            p, d = identity_pairs, identity_distinct
            query = (
                sa.select(p)
                .where(p.c.score >= min_score)
                .where(~sa.exists().where(d.c.a == p.c.a, d.c.b == p.c.b))
                .order_by(p.c.score.desc(), p.c.a, p.c.b)
            )
            if region is not None:
                query = query.where(p.c.region == region)
            if after is not None:
                score_text, a, b = decode_cursor("pairs", after, 3)
                score = float(score_text)
                query = query.where(
                    sa.or_(
                        p.c.score < score,
                        sa.and_(p.c.score == score, sa.or_(p.c.a > a, sa.and_(p.c.a == a, p.c.b > b))),
                    )
                )
            found: list[StoredPair] = []
            more = False
            async with self.db.read() as conn:
                rows = await conn.stream(query.execution_options(yield_per=200))
                async for row in rows.mappings():
                    reasons = tuple(Reason(r) for r in row["reasons"])
                    if reason is not None and reason not in reasons:
                        continue
                    if len(found) == first:
                        more = True
                        break
                    found.append(
                        StoredPair(row["a"], row["b"], float(row["score"]), reasons, row["found_at"])
                    )
                await rows.close()
            end = encode_cursor("pairs", repr(found[-1].score), found[-1].a, found[-1].b) if found else None
            return found, end, more

        return await self._guard(run)

    async def incomplete_page(
        self, *, mask: int, after: str | None, first: int
    ) -> tuple[list[tuple[str, int]], str | None, bool]:
        """Accounts lacking every field of ``mask``, by number: ([(account_no, missing)], end, more)."""

        async def run() -> tuple[list[tuple[str, int]], str | None, bool]:
            a = identity_accounts
            query = sa.select(a.c.account_no, a.c.missing).where(a.c.missing.op("&")(mask) == mask)
            if after is not None:
                (last,) = decode_cursor("incomplete", after, 1)
                query = query.where(a.c.account_no > last)
            query = query.order_by(a.c.account_no).limit(first + 1)
            async with self.db.read() as conn:
                rows = [(r[0], int(r[1])) for r in await conn.execute(query)]
            more = len(rows) > first
            rows = rows[:first]
            return rows, (encode_cursor("incomplete", rows[-1][0]) if rows else None), more

        return await self._guard(run)

    async def heard_requesters(self, emails: Sequence[str], at: datetime) -> None:
        """Helpdesk requesters named by change events (the helpdesk cannot list them)."""
        unique = sorted(set(emails))
        if not unique:
            return

        def run(conn: Connection) -> None:
            r = identity_requesters  # keyed by the e-mail's blind index (the e-mail is sealed)
            erased = _forgotten(conn, unique, self.key)
            heard = [e for e in unique if e not in erased]
            if not heard:
                return
            known: set[str] = set()
            for chunk in _chunks(heard):
                known.update(
                    row[0] for row in conn.execute(sa.select(r.c.email).where(r.c.email_idx.in_(chunk)))
                )
            for chunk in _chunks(sorted(known)):
                conn.execute(r.update().where(r.c.email_idx.in_(chunk)).values(last_seen=at))
            new = [{"email": e, "first_seen": at, "last_seen": at} for e in heard if e not in known]
            if new:
                conn.execute(r.insert(), new)

        await self._guard(lambda: self.db.run_write(run))

    async def unmatched_requesters(
        self, *, after: str | None, first: int
    ) -> tuple[list[str], str | None, bool]:
        """Requesters heard of whose e-mail is no account's current e-mail nor an active support identity,
        in the order of their blind index (sealed e-mails cannot be sorted in SQL; the order is stable)."""

        async def run() -> tuple[list[str], str | None, bool]:
            r, acc, em = identity_requesters, identity_accounts, identity_emails
            digest = sa.type_coerce(r.c.email_idx, sa.String)  # compared as stored (the cursor's digest)
            query = (
                sa.select(r.c.email, digest)
                .where(~sa.exists().where(acc.c.email_idx == r.c.email_idx))
                .where(~sa.exists().where(em.c.email_idx == r.c.email_idx, em.c.removed_at.is_(None)))
                .order_by(digest)
                .limit(first + 1)
            )
            if after is not None:
                (last,) = decode_cursor("requesters", after, 1)
                query = query.where(digest > last)
            async with self.db.read() as conn:
                rows = [(row[0], row[1]) for row in await conn.execute(query)]
            more = len(rows) > first
            rows = rows[:first]
            end = encode_cursor("requesters", rows[-1][1]) if rows else None
            return [email for email, _ in rows], end, more

        return await self._guard(run)


def _pair_rows(
    pairs: Mapping[tuple[str, str], Match], regions: Mapping[str, str], at: datetime
) -> list[dict[str, Any]]:
    return [
        {
            "a": a,
            "b": b,
            "score": m.score,
            "reasons": [r.value for r in m.reasons],
            "region": regions.get(a, ""),
            "found_at": at,
        }
        for (a, b), m in pairs.items()
    ]


def _add_email(
    conn: Connection,
    account_no: str,
    email: str,
    origin: str,
    source: str,
    actor: str,
    at: datetime,
    note: str | None,
) -> bool:
    e = identity_emails
    exists = conn.execute(
        sa.select(e.c.id).where(
            e.c.account_no == account_no, e.c.email_idx == email, e.c.removed_at.is_(None)
        )
    ).first()
    if exists is not None:
        return False
    conn.execute(
        e.insert().values(
            account_no=account_no,
            email=email,
            origin=origin,
            source=source,
            actor=actor,
            note=note,
            created_at=at,
        )
    )
    return True


def _observe(
    conn: Connection,
    profiles: Sequence[Profile],
    accounts: Sequence[Any],
    at: datetime,
    *,
    source: str,
    actor: str,
    forget_key: bytes,
) -> Seen:
    """Replace the keys and account rows of these accounts; keep changed e-mails as previous ones (but
    never an erased one)."""
    numbers = [p.account_no for p in profiles]
    old: dict[str, str | None] = {}
    for chunk in _chunks(numbers):
        rows = conn.execute(
            sa.select(identity_accounts.c.account_no, identity_accounts.c.email).where(
                identity_accounts.c.account_no.in_(list(chunk))
            )
        )
        old.update({no: email for no, email in rows})
        conn.execute(identity_keys.delete().where(identity_keys.c.account_no.in_(list(chunk))))
        conn.execute(identity_accounts.delete().where(identity_accounts.c.account_no.in_(list(chunk))))
    previous: list[tuple[str, str]] = []
    key_rows: list[dict[str, str]] = []
    account_rows: list[dict[str, Any]] = []
    for profile, account in zip(profiles, accounts, strict=True):
        for key in {hashed(k) for k in profile.blocking_keys()}:
            key_rows.append({"key": key, "account_no": profile.account_no})
        email = account.email or None
        account_rows.append(
            {
                "account_no": profile.account_no,
                "email": email,
                "kind": account.kind,
                "region": account.region,
                "missing": int(missing_of(account)),
                "seen_at": at,
            }
        )
        before = old.get(profile.account_no)
        if before and before != email:
            previous.append((profile.account_no, before))
    for key_chunk in _chunks(key_rows):
        conn.execute(identity_keys.insert(), list(key_chunk))
    for account_chunk in _chunks(account_rows):
        conn.execute(identity_accounts.insert(), list(account_chunk))
    erased = _forgotten(conn, (email for _, email in previous), forget_key)
    previous = [(account_no, email) for account_no, email in previous if email not in erased]
    for account_no, email in previous:
        _add_email(conn, account_no, email, "previous", source, actor, at, None)
    return Seen(previous)
