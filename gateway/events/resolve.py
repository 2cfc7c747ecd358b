"""Which customers an event names, when the event does not say it by account number.

A support event names the ticket's requester e-mail; a register change names the party's tax id. The
sales system is the master of both: ``q`` (a substring of name, contact name or e-mail) finds the
candidates — by the e-mail, or by the contract's party name — and only exact matches are kept. Answers
are remembered for a few minutes (``TTL``), and forgotten for a customer whose account changed.
"""

from __future__ import annotations

from collections.abc import Callable

from cachetools import TTLCache

from connectors.models import Account
from connectors.sales import SalesConnector

TTL = 300.0  # seconds
SIZE = 10_000  # e-mails and tax ids remembered, each
PER_PAGE = 200  # the sales list's largest page
MAX_PAGES = 5  # a search matching more than 1,000 accounts is not an exact match worth following

__all__ = ["AccountResolver"]


class AccountResolver:
    def __init__(
        self,
        sales: Callable[[], SalesConnector],
        *,
        ttl: float = TTL,
        size: int = SIZE,
        aliases: Callable[[str], tuple[str, ...]] | None = None,
    ) -> None:
        self._sales = sales
        self._aliases = aliases  # accounts that have an e-mail as a previous or linked support identity
        self._by_email: TTLCache[str, tuple[str, ...]] = TTLCache(maxsize=size, ttl=ttl)
        self._by_tax_id: TTLCache[str, tuple[str, ...]] = TTLCache(maxsize=size, ttl=ttl)

    async def by_email(self, email: str) -> tuple[str, ...]:
        """Account numbers whose e-mail is ``email`` (case-insensitive); raises ``UpstreamError``."""
        key = email.strip().casefold()
        if not key:
            return ()
        known = self._by_email.get(key)
        if known is None:
            known = await self._search(key, lambda account: (account.email or "").casefold() == key)
            self._by_email[key] = known
        aliased = self._aliases(key) if self._aliases is not None else ()
        return tuple(sorted(set(known) | set(aliased))) if aliased else known

    async def by_tax_id(self, tax_id: str, party_name: str | None) -> tuple[str, ...]:
        """Account numbers with this tax id, among those named like the party; raises ``UpstreamError``."""
        key = tax_id.strip().upper()
        name = (party_name or "").strip()
        if not key or not name:
            return ()
        known = self._by_tax_id.get(key)
        if known is None:
            known = await self._search(name, lambda account: (account.tax_id or "").upper() == key)
            self._by_tax_id[key] = known
        return known

    def forget(self, account_no: str) -> None:
        """The account changed (its e-mail may have): answers naming it are asked again."""
        for index in (self._by_email, self._by_tax_id):
            for key in [key for key, found in index.items() if account_no in found]:
                index.pop(key, None)

    def clear(self) -> None:
        self._by_email.clear()
        self._by_tax_id.clear()

    async def _search(self, q: str, keep: Callable[[Account], bool]) -> tuple[str, ...]:
        sales = self._sales()
        found: list[str] = []
        for page in range(1, MAX_PAGES + 1):
            result = await sales.list_accounts(q=q, page=page, per_page=PER_PAGE)
            found.extend(account.account_no for account in result.accounts if keep(account))
            if page * result.per_page >= result.total or not result.accounts:
                break
        return tuple(sorted(set(found)))
