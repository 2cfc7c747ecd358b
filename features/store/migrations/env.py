"""Alembic environment: runs on the connection ``features.store.db.Database.migrate()`` hands over."""

from __future__ import annotations

from alembic import context

from features.store.models import metadata

config = context.config
connection = config.attributes.get("connection")

if context.is_offline_mode():
    # SQL script generation (``alembic upgrade --sql``); the URL must be given in the config.
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()
elif connection is None:
    raise RuntimeError("run migrations through features.store.Database.migrate() (no alembic.ini)")
else:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()
