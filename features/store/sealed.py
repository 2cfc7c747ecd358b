"""Personal data sealed at rest: column types that encrypt on the way into the database and decrypt on the
way out, so store code keeps reading and writing plain values.

    Sealed("pool_history.note")        text, stored as a Fernet token (AES-128-CBC and HMAC-SHA256:
                                       authenticated, a fresh IV per value, so equal values look different)
    SealedJSON("event_inbox.detail")   a JSON value (dict, list, …), serialised, then sealed like text
    BlindIndex("event_inbox.email")    a keyed digest (HMAC-SHA256) of a value: what a lookup by value
                                       compares (``t.c.email_idx == email`` binds the digest of ``email``)

**Data keys** (``Keyring``): Fernet keys, newest first (``CG_DATA_KEYS``). A value is sealed with the newest
and opened with any of them (``MultiFernet``), so a new key is added first (every gateway can then read what
any other writes), ``customer-graph db rotate-keys`` re-seals every value with it, and the old key is then
removed. A value no configured key opens raises ``SealedValueError`` naming the column, never the value.

**The blind-index key** is not a data key: it must never change (a changed key is a rebuilt index), while data
keys rotate. It is 32 random bytes made once per database (migration 0009_sealed) and kept in the table
``sealed_keys``, itself sealed with the data keys: whoever holds the data keys can search, the database alone
gives neither values nor the index key, rotation re-seals it like any value, and a backup carries it.

A ``Database`` has one ``Sealer`` (its keyring and, once loaded, the database's index key); the types find it
on the SQLAlchemy dialect of the connection (``attach``), so two databases in one process can use different
keys. A sealed column refuses comparisons other than ``IS [NOT] NULL`` when a statement is built: compare
its blind index instead.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import operators

INDEX_KEY_NAME = "blind_index"  # sealed_keys.name of the blind-index key
INDEX_HEX = 32  # hex digits of a blind index (128 bits)
OPENED_CACHE = 32_768  # opened values remembered per Database (see Sealer)
OPENED_MAX_BYTES = 512  # … no larger than this each
_DIALECT_ATTRIBUTE = "cg_sealer"


class DataKeyError(ValueError):
    """The data keys cannot be used (missing, malformed, repeated). Never contains a key."""


class SealedValueError(Exception):
    """A stored value cannot be opened with any configured data key (or a sealed column is used without
    keys). Names the column, never the value."""


def generate_key() -> str:
    """A new data key (Fernet: 32 random bytes, url-safe base64)."""
    return Fernet.generate_key().decode("ascii")


def key_id(key: str) -> str:
    """A short, non-secret name of a key for logs and reports (a digest; says nothing about the key)."""
    return hashlib.sha256(b"customer-graph data key:" + key.encode("ascii")).hexdigest()[:8]


def parse_keys(text: str) -> list[str]:
    """Keys separated by commas, spaces or lines (a file or an environment variable); '#' starts a comment
    line in a file."""
    keys: list[str] = []
    for line in text.splitlines():
        if line.strip().startswith("#"):
            continue
        keys.extend(part for part in line.replace(",", " ").split() if part)
    return keys


class Keyring:
    """Data keys, newest first: seal with the newest, open with any."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise DataKeyError("no data key given")
        fernets: list[Fernet] = []
        for n, key in enumerate(keys, start=1):
            try:
                fernets.append(Fernet(key.strip().encode("ascii")))
            except (ValueError, UnicodeEncodeError):
                raise DataKeyError(
                    f"data key {n} of {len(keys)} is not a Fernet key (32 url-safe base64-encoded bytes; "
                    "'customer-graph db keygen' makes one)"
                ) from None
        stripped = [k.strip() for k in keys]
        if len(set(stripped)) != len(stripped):
            raise DataKeyError("a data key is listed twice")
        self.ids = tuple(key_id(k) for k in stripped)
        self._newest = fernets[0]
        self._all = MultiFernet(fernets)

    @classmethod
    def parse(cls, text: str) -> Keyring:
        return cls(parse_keys(text))

    @property
    def newest_id(self) -> str:
        return self.ids[0]

    def seal(self, plaintext: bytes) -> str:
        return self._all.encrypt(plaintext).decode("ascii")

    def open(self, token: str, column: str) -> bytes:
        try:
            return self._all.decrypt(token.encode("ascii"))
        except (InvalidToken, UnicodeEncodeError, TypeError, AttributeError):
            raise SealedValueError(
                f"{column}: a stored value cannot be opened with any configured data key "
                f"(keys {', '.join(self.ids)}; was it sealed with a key no longer listed in CG_DATA_KEYS?)"
            ) from None

    def is_current(self, token: str) -> bool:
        """Sealed with the newest key already? (What ``rotate`` would leave alone.)"""
        try:
            self._newest.decrypt(token.encode("ascii"))
        except (InvalidToken, UnicodeEncodeError):
            return False
        return True

    def rotate(self, token: str, column: str) -> str:
        """The value re-sealed with the newest key (``SealedValueError`` if no key opens it)."""
        try:
            return self._all.rotate(token.encode("ascii")).decode("ascii")
        except (InvalidToken, UnicodeEncodeError):
            raise SealedValueError(
                f"{column}: a stored value cannot be opened with any configured data key "
                f"(keys {', '.join(self.ids)})"
            ) from None

    def __repr__(self) -> str:  # never the keys
        return f"Keyring({', '.join(self.ids)})"


class Sealer:
    """What one ``Database``'s sealed columns use: its keyring and its blind-index key.

    Opened values are remembered by their token (at most ``OPENED_CACHE`` small ones; the whole memo is
    dropped when it is full): what is read again and again — the support identities every instance reloads
    every ``identity_refresh`` seconds — is not opened again (a token is never reused for another value,
    and a re-sealed value has a new token). It holds nothing the process could not open anyway."""

    def __init__(self, keyring: Keyring | None = None) -> None:
        self.keyring = keyring
        self.index_key: bytes | None = None
        self._opened: dict[str, bytes] = {}

    def _ring(self, column: str) -> Keyring:
        if self.keyring is None:
            raise SealedValueError(
                f"{column} is sealed and no data key is configured (CG_DATA_KEYS or CG_DATA_KEYS_FILE)"
            )
        return self.keyring

    def seal(self, column: str, plaintext: bytes) -> str:
        return self._ring(column).seal(plaintext)

    def open(self, column: str, token: str) -> bytes:
        value = self._opened.get(token)
        if value is None:
            value = self._ring(column).open(token, column)
            if len(value) <= OPENED_MAX_BYTES:
                if len(self._opened) >= OPENED_CACHE:
                    self._opened = {}  # (a swap: another thread may be reading the old one)
                self._opened[token] = value
        return value

    def index(self, column: str, value: str) -> str:
        if self.index_key is None:
            raise SealedValueError(
                f"{column}: the blind-index key is not loaded (Database.migrate() or a transaction of the "
                "Database loads it; the data keys must be configured)"
            )
        return hmac.new(self.index_key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:INDEX_HEX]


def new_index_key() -> str:
    """A new blind-index key, as ``sealed_keys`` keeps it (before sealing)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii")


def decode_index_key(text: str) -> bytes:
    return base64.urlsafe_b64decode(text.encode("ascii"))


def attach(dialect: Dialect, sealer: Sealer) -> None:
    setattr(dialect, _DIALECT_ATTRIBUTE, sealer)


def sealer_of(dialect: Dialect) -> Sealer:
    sealer = getattr(dialect, _DIALECT_ATTRIBUTE, None)
    if not isinstance(sealer, Sealer):  # an engine not made by Database (a script, a test)
        return _NO_KEYS
    return sealer


_NO_KEYS = Sealer(None)

# What a sealed column may still be compared with in SQL: whether it holds a value at all.
_ALLOWED = frozenset({operators.is_, operators.is_not})


class _SealedComparator(sa.TypeDecorator.Comparator[Any]):
    def operate(self, op: Any, *other: Any, **kwargs: Any) -> Any:
        if op not in _ALLOWED:
            column = getattr(self.type, "column", "a sealed column")
            raise SealedValueError(
                f"{column} is sealed: SQL cannot compare it (only IS [NOT] NULL); use its blind index"
            )
        return super().operate(op, *other, **kwargs)

    def reverse_operate(self, op: Any, other: Any, **kwargs: Any) -> Any:
        return self.operate(op, other, **kwargs)


class Sealed(sa.TypeDecorator[str]):
    """Text sealed with the data keys (see the module's docstring); ``column``: "table.column", for errors."""

    impl = sa.Text
    cache_ok = True
    comparator_factory = _SealedComparator  # type: ignore[assignment]

    def __init__(self, column: str) -> None:
        super().__init__()
        self.column = column

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return sealer_of(dialect).seal(self.column, str(value).encode("utf-8"))

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return sealer_of(dialect).open(self.column, str(value)).decode("utf-8")

    def copy(self, **kw: Any) -> Sealed:
        return type(self)(self.column)


class SealedJSON(sa.TypeDecorator[Any]):
    """A JSON value sealed with the data keys; Python ``None`` is SQL NULL."""

    impl = sa.Text
    cache_ok = True
    comparator_factory = _SealedComparator  # type: ignore[assignment]

    def __init__(self, column: str) -> None:
        super().__init__()
        self.column = column

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return sealer_of(dialect).seal(self.column, orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS))

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        return orjson.loads(sealer_of(dialect).open(self.column, str(value)))

    def copy(self, **kw: Any) -> SealedJSON:
        return type(self)(self.column)


class BlindIndex(sa.TypeDecorator[str]):
    """The keyed digest of a value: bound values are digested (``== value`` and ``in_(values)`` compare
    digests), results are the stored digests. To compare with a digest itself (a cursor), coerce the
    column: ``sa.type_coerce(t.c.email_idx, sa.String) > digest``."""

    impl = sa.String(INDEX_HEX)
    cache_ok = True

    def __init__(self, column: str) -> None:
        super().__init__()
        self.column = column

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return sealer_of(dialect).index(self.column, str(value))

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else str(value)

    def copy(self, **kw: Any) -> BlindIndex:
        return type(self)(self.column)


def index_of(source: str) -> Any:
    """A column default: the blind index of the row's ``source`` column (inserted rows get their index
    without the caller writing it; an UPDATE that changes ``source`` sets the index itself)."""

    def default(context: Any) -> Any:
        return context.get_current_parameters().get(source)

    return default


SEALED_TYPES = (Sealed, SealedJSON)


def is_sealed(column: sa.Column[Any]) -> bool:
    return isinstance(column.type, SEALED_TYPES)


def sealed_columns(table: sa.Table) -> list[sa.Column[Any]]:
    return [c for c in table.columns if is_sealed(c)]


def storage_type(column: sa.Column[Any], sealed: bool = True) -> sa.types.TypeEngine[Any]:
    """What a column holds in the database: ciphertext (Text) for a sealed column, the digest for a blind
    index, the column's own type otherwise. ``sealed`` False: a database before migration 0009 (plain text,
    JSON)."""
    if not sealed and isinstance(column.type, SealedJSON):
        return sa.JSON(none_as_null=True)
    if isinstance(column.type, SEALED_TYPES):
        return sa.Text()
    if isinstance(column.type, BlindIndex):
        return sa.String(INDEX_HEX)
    return column.type


def raw_table(table: sa.Table, columns: Iterable[str] | None = None, *, sealed: bool = True) -> sa.Table:
    """``table`` as stored: sealed columns read and written as their ciphertext, blind indexes as their
    digests, no defaults (backup, restore, rotation, tests that look at what an attacker would see);
    ``columns``: only these."""
    wanted = set(columns) if columns is not None else None
    return sa.Table(
        table.name,
        sa.MetaData(),
        *[
            sa.Column(
                c.name, storage_type(c, sealed), primary_key=c.primary_key, autoincrement=c.autoincrement
            )
            for c in table.columns
            if wanted is None or c.name in wanted
        ],
    )
