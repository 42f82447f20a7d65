"""Alembic environment for Companion's memory store.

open_store() passes its own connection in config.attributes["connection"];
the `alembic` CLI gets none and opens the database Companion would use
(COMPANION_DB / COMPANION_HOME, or `-x db=URL`).
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context

from memory_store.models import Base
from memory_store.search import include_name

config = context.config
target_metadata = Base.metadata

# Only the CLI configures logging; inside the app it would clobber the app's own.
if config.config_file_name is not None and config.attributes.get("connection") is None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _cli_url() -> str:
    from companion.app.settings import database_url

    override = context.get_x_argument(as_dictionary=True).get("db")
    return database_url(override)


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        # SQLite can't ALTER most things; batch mode rebuilds tables instead.
        render_as_batch=True,
        compare_type=True,
        # The search index (0005) is dialect-specific DDL, not in the models: not a difference.
        include_name=include_name,
        **kwargs,
    )


def run_migrations_offline() -> None:
    _configure(url=_cli_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return

    from memory_store.db import make_engine

    # make_engine, not create_engine: a CLI-created SQLite file must get the
    # same 0600 mode and pragmas as one created by the app.
    engine = make_engine(_cli_url())
    try:
        with engine.connect() as connection:
            _configure(connection=connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
