"""Alembic migrations of the gateway's database, run in code: no ``alembic.ini`` needed.

``Database.migrate()`` calls ``upgrade()`` with a connection it already holds (inside a transaction).
To write a new revision by hand (development)::

    .venv/bin/python -c "from features.store.migrations import revision; revision('add x')"
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

MIGRATIONS_DIR = Path(__file__).resolve().parent


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(connection: Connection, revision: str = "head") -> None:
    """Upgrade to ``revision`` on this (sync) connection; the caller owns the transaction."""
    command.upgrade(alembic_config(connection), revision)


def downgrade(connection: Connection, revision: str) -> None:
    command.downgrade(alembic_config(connection), revision)


def head_revision() -> str:
    """The newest revision the package ships."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current(connection: Connection) -> str | None:
    """The revision the database is at (None: never migrated)."""
    return MigrationContext.configure(connection).get_current_revision()


def revision(message: str) -> None:
    """Create an empty revision file (fill in ``upgrade``/``downgrade`` by hand)."""
    command.revision(alembic_config(), message=message)
