"""``customers`` paging over the sales list API (``page``/``per_page``), by absolute offsets.

The caller's rows and filter become one or more *streams*: upstream list queries, each in
account-number order (a sales rep's rows are two: its own customers and the pool). A page merges the
streams by account number; its cursor holds one offset per stream. A stream's window
``[offset, offset+first)`` is read with one call when some page size up to the system's maximum
(200) holds it, else two. A stream with a condition the sales API cannot express (``inPool: false``,
a search the caller may only partly see) is scanned forward in full pages, a bounded number of
pages per request. A condition that needs other data per account (``dormant``: activities, tickets,
contracts) is a ``select``: an async batch predicate, asked per chunk of up to 100 scanned accounts
(the sales batch limit), so a page costs a few batched calls rather than one per account.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from connectors.models import Account, AccountPage, System
from features.cursors import InvalidCursor
from features.cursors import decode_cursor as decode_parts
from features.cursors import encode_cursor as encode_parts

from .errors import BadUserInput
from .loaders import Loaders

_OFFSETS = re.compile(r"[0-9]{1,9}(,[0-9]{1,9})*")
MAX_PER_PAGE = 200
MAX_SCAN_PAGES = 10
SELECT_CHUNK = 100  # accounts per ``select`` call

Predicate = Callable[[Account], bool]
BatchPredicate = Callable[[Sequence[Account]], Awaitable[Sequence[bool]]]


@dataclass(frozen=True, slots=True)
class Stream:
    """One upstream list query; ``keep`` and ``select`` are conditions applied here while scanning."""

    region: str | None = None
    status: str | None = None
    owner_id: str | None = None
    unowned: bool | None = None
    q: str | None = None
    keep: Predicate | None = None
    select: BatchPredicate | None = None


@dataclass(frozen=True, slots=True)
class Window:
    accounts: list[tuple[int, Account]]  # (upstream offset, account)
    next_offset: int  # upstream offset where the stream's next window starts
    exhausted: bool  # nothing after next_offset
    total: int | None  # accounts in the stream (None when filtered here)


@dataclass(frozen=True, slots=True)
class Page:
    accounts: list[Account]
    cursors: list[str]  # one per account: resume after it
    has_next: bool
    end_cursor: str
    total: int | None


def encode_cursor(offsets: list[int]) -> str:
    """The streams' offsets, in the one cursor codec (``features/cursors.py``, kind ``o``)."""
    return encode_parts("o", ",".join(map(str, offsets)))


def decode_cursor(cursor: str, streams: int) -> list[int]:
    try:
        (body,) = decode_parts("o", cursor, 1)
    except InvalidCursor:
        raise BadUserInput("'after' is not a cursor from this connection.") from None
    if not _OFFSETS.fullmatch(body):
        raise BadUserInput("'after' is not a cursor from this connection.")
    offsets = [int(part) for part in body.split(",")]
    if len(offsets) != streams:
        raise BadUserInput("'after' is not a cursor from this connection with this filter.")
    return offsets


def _page_size_for(offset: int, first: int) -> int | None:
    """A page size whose single page holds the whole window, or None."""
    for size in range(max(first, 1), MAX_PER_PAGE + 1):
        if offset // size == (offset + first - 1) // size:
            return size
    return None


async def _page(loaders: Loaders, stream: Stream, page: int, per_page: int) -> AccountPage:
    call = loaders.upstreams.sales.list_accounts(
        page=page,
        per_page=per_page,
        region=stream.region,
        status=stream.status,
        owner_id=stream.owner_id,
        unowned=stream.unowned,
        q=stream.q,
    )
    return await loaders.sources.track(System.SALES, call)


async def _window(loaders: Loaders, stream: Stream, offset: int, first: int) -> Window:
    if stream.keep is not None or stream.select is not None:
        return await _scan(loaders, stream, offset, first)
    size = _page_size_for(offset, first)
    if size is not None:
        starts = [(offset // size) * size]
        pages = [await _page(loaders, stream, offset // size + 1, size)]
    else:
        size = max(first, 1)
        number = offset // size + 1
        starts = [(number - 1) * size, number * size]
        pages = list(
            await asyncio.gather(
                _page(loaders, stream, number, size), _page(loaders, stream, number + 1, size)
            )
        )
    accounts = [
        (index, account)
        for start, page in zip(starts, pages, strict=True)
        for index, account in enumerate(page.accounts, start)
        if offset <= index < offset + first
    ]
    total = pages[0].total
    end = offset + len(accounts)
    return Window(accounts=accounts, next_offset=end, exhausted=end >= total, total=total)


async def _scan(loaders: Loaders, stream: Stream, offset: int, first: int) -> Window:
    keep, select = stream.keep, stream.select
    accounts: list[tuple[int, Account]] = []
    position = offset
    total = offset + 1
    for _ in range(MAX_SCAN_PAGES):
        if len(accounts) >= first or position >= total:
            break
        page = await _page(loaders, stream, position // MAX_PER_PAGE + 1, MAX_PER_PAGE)
        total = page.total
        if not page.accounts:
            position = total
            break
        start = (page.page - 1) * MAX_PER_PAGE
        rest = [(i, a) for i, a in enumerate(page.accounts, start) if i >= position]
        step = SELECT_CHUNK if select is not None else max(len(rest), 1)
        for low in range(0, len(rest), step):
            chunk = rest[low : low + step]
            wanted = [keep is None or keep(account) for _, account in chunk]
            if select is not None:
                asked = [account for (_, account), ok in zip(chunk, wanted, strict=True) if ok]
                answers = iter(await select(asked) if asked else ())
                wanted = [ok and next(answers) for ok in wanted]
            for (index, account), ok in zip(chunk, wanted, strict=True):
                position = index + 1
                if ok:
                    accounts.append((index, account))
                    if len(accounts) >= first:
                        break
            if len(accounts) >= first:
                break
    return Window(accounts=accounts, next_offset=position, exhausted=position >= total, total=None)


async def fetch_page(
    loaders: Loaders, streams: list[Stream], offsets: list[int], first: int, *, disjoint: bool = False
) -> Page:
    """Up to ``first`` accounts after ``offsets``, merged across the streams by account number.

    ``disjoint``: no account is in two streams, so the streams' totals add up."""
    if not streams:
        return Page(accounts=[], cursors=[], has_next=False, end_cursor=encode_cursor([]), total=0)
    windows = list(
        await asyncio.gather(*(_window(loaders, s, o, first) for s, o in zip(streams, offsets, strict=True)))
    )
    if len(windows) == 1:
        window = windows[0]
        return Page(
            accounts=[account for _, account in window.accounts],
            cursors=[encode_cursor([index + 1]) for index, _ in window.accounts],
            has_next=not window.exhausted,
            end_cursor=encode_cursor([window.next_offset]),
            total=window.total,
        )
    page = _merge(windows, offsets, first)
    if not disjoint:
        return Page(page.accounts, page.cursors, page.has_next, page.end_cursor, None)
    return page


def _merge(windows: list[Window], offsets: list[int], first: int) -> Page:
    heads = [0] * len(windows)
    positions = list(offsets)
    accounts: list[Account] = []
    cursors: list[str] = []
    while len(accounts) < first:
        candidates = [
            w.accounts[h][1].account_no for w, h in zip(windows, heads, strict=True) if h < len(w.accounts)
        ]
        if not candidates:
            break
        smallest = min(candidates)
        taken: Account | None = None
        for i, window in enumerate(windows):
            h = heads[i]
            if h < len(window.accounts) and window.accounts[h][1].account_no == smallest:
                index, taken = window.accounts[h]
                heads[i] += 1
                positions[i] = index + 1
        assert taken is not None
        accounts.append(taken)
        cursors.append(encode_cursor(positions))
        # A stream whose fetched window ran out but has more upstream bounds what is safe to merge.
        if any(heads[i] >= len(w.accounts) and not w.exhausted for i, w in enumerate(windows)):
            break
    more = any(heads[i] < len(w.accounts) or not w.exhausted for i, w in enumerate(windows))
    totals = [w.total for w in windows]
    return Page(
        accounts=accounts,
        cursors=cursors,
        has_next=more,
        end_cursor=cursors[-1] if cursors else encode_cursor([w.next_offset for w in windows]),
        total=None if None in totals else sum(t for t in totals if t is not None),
    )
