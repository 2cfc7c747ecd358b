"""The data keys that seal personal data in the gateway database (features/store/sealed.py), from settings.

In order: ``data_keys`` (``CG_DATA_KEYS``: Fernet keys, newest first, separated by commas), else
``data_keys_file`` (``CG_DATA_KEYS_FILE``: a file of keys, one a line, newest first — a Kubernetes secret
mount). Without either, production refuses to start; development makes a key once, in ``data.key`` beside
the SQLite database file (``var/data.key`` by default; mode 0600), says so in the log and reuses it.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from features.store.db import STORE_ERRORS, Database, normalise_url, sqlite_file
from features.store.sealed import DataKeyError, Keyring, SealedValueError, generate_key, parse_keys

from .settings import Settings, SettingsError

log = logging.getLogger(__name__)

DEV_KEY_FILE = "data.key"
_NO_KEY = (
    "data_keys: the production gateway needs the data keys that seal personal data: set CG_DATA_KEYS or "
    "CG_DATA_KEYS_FILE (a new key: 'customer-graph db keygen')"
)


def dev_key_path(database_url: str | None) -> Path:
    """Where development keeps its generated key: beside the SQLite file, else ``var/data.key``."""
    try:
        path = sqlite_file(normalise_url(database_url))
    except ValueError:
        path = None
    return (Path(path).parent if path else Path("var")) / DEV_KEY_FILE


def keyring_for(settings: Settings, database_url: str | None = None) -> Keyring:
    """The configured data keys (see the module's docstring); ``SettingsError`` when there are none in
    production or they cannot be used. Messages never contain a key."""
    url = database_url if database_url is not None else (settings.database_url or None)
    try:
        if settings.data_keys.strip():
            return Keyring(parse_keys(settings.data_keys))
        if settings.data_keys_file:
            return Keyring(parse_keys(_read(Path(settings.data_keys_file), "data_keys_file")))
    except DataKeyError as exc:
        raise SettingsError(f"data keys: {exc}") from None
    if settings.production:
        raise SettingsError(_NO_KEY)
    return _development_key(dev_key_path(url))


def open_database(settings: Settings, database_url: str | None = None) -> Database:
    """The gateway database (``database_url``, else the configured one) with the configured data keys."""
    url = database_url or settings.database_url or None
    return Database(url, keyring=keyring_for(settings, url))


async def check_database(settings: Settings) -> str | None:
    """Before serving: migrate the gateway database and open its blind-index key with the configured data
    keys (what each gateway does at start), so that wrong keys or an unreachable database are one clear line,
    not a failed startup's traceback. The problem, or None."""
    database = open_database(settings)
    try:
        await database.migrate()
    except SealedValueError as exc:  # names a column and key ids, never a value or a key
        return f"the data keys cannot open the gateway database: {exc}"
    except STORE_ERRORS as exc:  # the class only: driver messages may carry connection details
        return f"the gateway database ({database.safe_url}) cannot be migrated ({type(exc).__name__})"
    finally:
        await database.aclose()
    return None


def _read(path: Path, name: str) -> str:
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise SettingsError(f"{name}: {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not a key file"
        raise SettingsError(f"{name}: cannot read {path} ({reason})") from None
    if not parse_keys(text):
        raise SettingsError(f"{name}: {path} holds no key")
    return text


def _development_key(path: Path) -> Keyring:
    """The development key in ``path``, made (0600) the first time; several processes starting at once
    end up with the same one (the file appears whole, or not at all)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=".data.key.", dir=path.parent)  # mode 0600
        try:
            with os.fdopen(handle, "w", encoding="ascii") as out:
                out.write(
                    "# customer-graph development data key (features/store/sealed.py); production: "
                    "CG_DATA_KEYS\n" + generate_key() + "\n"
                )
            os.link(temporary, path)  # fails when another process made it first: theirs is used
            log.warning(
                "data keys: made a development data key in %s (development only; production needs "
                "CG_DATA_KEYS or CG_DATA_KEYS_FILE)",
                path,
            )
        except FileExistsError:
            pass
        finally:
            os.unlink(temporary)
    else:
        log.info("data keys: using the development data key in %s", path)
    try:
        return Keyring(parse_keys(_read(path, "development data key")))
    except DataKeyError as exc:
        raise SettingsError(f"development data key {path}: {exc}") from None
