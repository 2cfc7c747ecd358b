"""Identity as the gateway runs it: support identities, incremental matching, the full scan.

``Identity`` is made once per process. Its ``directory`` (account → support e-mails besides the current
one) is read on the hot path synchronously; it is reloaded from the database after every change this
process makes and every ``refresh_seconds`` (changes made by other instances), so a link or unlink is in
effect at once here and within that time everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from connectors.models import Account

from .match import PROBABLE, Match, Profile, ambiguous_by_tax, compare, find_pairs, hashed, pair
from .store import IdentityStore, Seen

log = logging.getLogger(__name__)

FetchAccounts = Callable[[list[str]], Awaitable[Mapping[str, Account]]]


@dataclass(frozen=True, slots=True)
class ScanResult:
    accounts: int
    pairs: int
    probable: int
    skipped_blocks: int
    previous_emails: int
    seconds: float


class Identity:
    def __init__(
        self,
        store: IdentityStore,
        fetch_accounts: FetchAccounts,
        *,
        refresh_seconds: float = 2.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.fetch_accounts = fetch_accounts
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self._extra: dict[str, tuple[str, ...]] = {}
        self._origins: dict[str, tuple[tuple[str, str], ...]] = {}
        self._by_email: dict[str, tuple[str, ...]] = {}
        self._loaded_at = 0.0
        self._task: asyncio.Task[None] | None = None

    # --- the directory (hot path: synchronous) ----------------------------------------------------

    def extra_emails(self, account_no: str) -> tuple[str, ...]:
        """Support identities of the account besides its current e-mail (previous, linked)."""
        return self._extra.get(account_no, ())

    def extra_origins(self, account_no: str) -> tuple[tuple[str, str], ...]:
        """(e-mail, origin: previous | linked) of the account's support identities besides its current one."""
        return self._origins.get(account_no, ())

    def accounts_of_email(self, email: str) -> tuple[str, ...]:
        """Accounts that have ``email`` as a previous or linked support identity."""
        return self._by_email.get(email, ())

    async def refresh(self) -> None:
        origins = await self.store.extra_emails()
        extra = {no: tuple(email for email, _ in pairs) for no, pairs in origins.items()}
        by_email: dict[str, list[str]] = {}
        for account_no, emails in extra.items():
            for email in emails:
                by_email.setdefault(email, []).append(account_no)
        self._origins = origins
        self._extra = extra
        self._by_email = {e: tuple(sorted(a)) for e, a in by_email.items()}
        self._loaded_at = time.monotonic()

    async def start(self) -> None:
        await self.refresh()
        if self.refresh_seconds > 0 and self._task is None:
            self._task = asyncio.create_task(self._refresh_loop(), name="identity-refresh")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_seconds)
            try:
                await self.refresh()
            except Exception as exc:  # the database is down: keep the last directory, try again
                log.warning("identity directory not refreshed: %s", type(exc).__name__)

    # --- changes --------------------------------------------------------------------------------

    async def link(self, account_no: str, email: str, *, actor: str, note: str | None) -> bool:
        added = await self.store.add_email(
            account_no, email, origin="linked", source="steward", actor=actor, at=self.clock(), note=note
        )
        await self.refresh()
        return added

    async def unlink(self, account_no: str, email: str, *, actor: str, reason: str) -> bool:
        removed = await self.store.remove_email(
            account_no, email, actor=actor, reason=reason, at=self.clock()
        )
        await self.refresh()
        return removed

    async def previous_email(self, account_no: str, email: str, *, actor: str) -> None:
        """The gateway changed the account's e-mail: the old one stays a support identity."""
        await self.store.add_email(
            account_no, email, origin="previous", source="gateway", actor=actor, at=self.clock()
        )
        await self.refresh()

    async def mark_distinct(self, a: str, b: str, *, actor: str, reason: str) -> bool:
        return await self.store.mark_distinct(a, b, actor=actor, reason=reason, at=self.clock())

    # --- matching -------------------------------------------------------------------------------

    async def candidates(self, profile: Profile) -> list[str]:
        """Accounts sharing a blocking key with ``profile`` and not marked as a different customer."""
        keys = [hashed(k) for k in profile.blocking_keys()]
        shared = await self.store.sharing_keys(keys)
        others = {no for members in shared.values() for no in members} - {profile.account_no}
        if not others:
            return []
        distinct = await self.store.distinct_from([profile.account_no])
        return sorted(no for no in others if pair(profile.account_no, no) not in distinct)

    async def observe(self, accounts: Sequence[Account]) -> Seen:
        """Accounts as they are now (a change event, a write): keys and e-mail recorded, a changed
        e-mail kept as a previous support identity, and each account's pairs found again."""
        if not accounts:
            return Seen([])
        now = self.clock()
        profiles = [Profile.of(a) for a in accounts]
        seen = await self.store.observe(profiles, accounts, now)
        for profile in profiles:
            others = await self.candidates(profile)
            found = await self.fetch_accounts(others) if others else {}
            block = [profile, *(Profile.of(a) for a in found.values())]
            same_name = [p for p in block if p.name == profile.name]
            ambiguous = ambiguous_by_tax(same_name)
            pairs: dict[tuple[str, str], Match] = {}
            regions: dict[str, str] = {}
            for other in block[1:]:
                match = compare(profile, other, ambiguous_name=ambiguous)
                if match is not None:
                    key = pair(profile.account_no, other.account_no)
                    pairs[key] = match
                    regions[key[0]] = profile.region if key[0] == profile.account_no else other.region
            await self.store.replace_pairs_of(profile.account_no, pairs, regions, now)
        if seen.previous:
            await self.refresh()
        return seen

    async def scan(
        self, pages: AsyncIterator[Sequence[Account]], progress: Callable[[int], object] | None = None
    ) -> ScanResult:
        """Every account, matched by blocking keys (never all pairs), stored as the new index."""
        started = time.perf_counter()
        profiles: list[Profile] = []
        rows: list[Account] = []
        async for page in pages:
            for account in page:
                profiles.append(Profile.of(account))
                rows.append(account)
            if progress is not None:
                progress(len(page))
        pairs, skipped = find_pairs(profiles)
        regions = {p.account_no: p.region for p in profiles}
        seen = await self.store.replace_index(profiles, rows, pairs, regions, self.clock())
        await self.refresh()
        probable = sum(1 for m in pairs.values() if m.score >= PROBABLE)
        return ScanResult(
            accounts=len(profiles),
            pairs=len(pairs),
            probable=probable,
            skipped_blocks=skipped,
            previous_emails=len(seen.previous),
            seconds=time.perf_counter() - started,
        )
