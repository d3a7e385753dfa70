"""Alembic environment for bananagate's store.

The store runs migrations itself (`bananagate.store.db.upgrade_schema`), passing an open
connection in `config.attributes["connection"]`. For developers, the `alembic` command also
works with `-c src/bananagate/store/alembic.ini` and a URL in `BANANAGATE_DATABASE_URL` (or
`sqlalchemy.url`), e.g. to autogenerate a new revision.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection, create_engine
from sqlalchemy.pool import NullPool

from bananagate.store.db import normalize_url
from bananagate.store.schema import Base

config = context.config
target_metadata = Base.metadata


def _configure_and_run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    url = os.environ.get("BANANAGATE_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set BANANAGATE_DATABASE_URL (or sqlalchemy.url) to run alembic directly")
    return url


def run_migrations_offline() -> None:
    context.configure(
        url=normalize_url(_url()),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure_and_run(connection)
        return
    engine = create_engine(normalize_url(_url()), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            _configure_and_run(connection)
            connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
