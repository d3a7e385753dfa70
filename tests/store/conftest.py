"""Fixtures: every store test runs against SQLite (a file in tmp_path) and PostgreSQL.

PostgreSQL tests use a fresh schema (via `search_path`) in the `test` database and drop it
afterwards. Set BANANAGATE_TEST_POSTGRES_URL to use another server; the PostgreSQL cases are
skipped, with the reason, when no server answers.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from bananagate.store import Store

PG_CANDIDATES = (
    "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "postgresql+psycopg://root@127.0.0.1:5432/test",
)


@cache
def postgres_base_url() -> URL | str:
    """A working PostgreSQL URL, or the reason why there is none."""
    configured = os.environ.get("BANANAGATE_TEST_POSTGRES_URL")
    candidates = (configured,) if configured else PG_CANDIDATES
    errors = []
    for candidate in candidates:
        url = make_url(candidate)
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        engine = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 3})
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return url
        except Exception as exc:
            errors.append(f"{url.render_as_string(hide_password=True)}: {type(exc).__name__}")
        finally:
            engine.dispose()
    return "PostgreSQL unreachable (" + "; ".join(errors) + ")"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(backend: str, data_dir: Path) -> Iterator[str]:
    """A URL for an empty database; on SQLite the one `bananagate` uses in `data_dir`."""
    if backend == "sqlite":
        yield f"sqlite:///{data_dir / 'bananagate.db'}"
        return
    base = postgres_base_url()
    if isinstance(base, str):
        pytest.skip(base)
    schema = f"bg_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, poolclass=NullPool)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        url = base.update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    with Store.open(db_url) as opened:
        yield opened


@pytest.fixture
def cli_env(backend: str, db_url: str, data_dir: Path) -> dict[str, str | None]:
    """Environment for `bananagate keys` using the same database as `db_url`."""
    return {
        "BANANAGATE_DATA_DIR": str(data_dir),
        "BANANAGATE_DATABASE_URL": db_url if backend == "postgresql" else None,
    }
