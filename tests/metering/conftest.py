"""Fixtures for metering tests: a database on both backends, Redis, and PostgreSQL schemas.

Store-level tests run on SQLite and on PostgreSQL (a fresh schema per test, like tests/store).
Redis tests use a unique key prefix and delete their keys afterwards. Cases that need a server
that does not answer are skipped with the reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from bananagate.store import Store
from tests.store.conftest import postgres_base_url

REDIS_URL = os.environ.get("BANANAGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@cache
def redis_problem() -> str | None:
    """None when Redis answers at REDIS_URL, else why not."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:
        return f"Redis unreachable at {REDIS_URL} ({type(exc).__name__})"
    return None


def new_pg_schema() -> tuple[str, str]:
    """(URL with a fresh search_path schema, schema name); skips the test without PostgreSQL."""
    base = postgres_base_url()
    if isinstance(base, str):
        pytest.skip(base)
    schema = f"bg_meter_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, poolclass=NullPool)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    admin.dispose()
    url = base.update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False), schema


def drop_pg_schema(schema: str) -> None:
    base = postgres_base_url()
    assert not isinstance(base, str)
    admin = create_engine(base, poolclass=NullPool)
    with admin.begin() as connection:
        connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'bananagate.db'}"
        return
    url, schema = new_pg_schema()
    try:
        yield url
    finally:
        drop_pg_schema(schema)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    with Store.open(db_url) as opened:
        yield opened


@pytest.fixture
def pg_url() -> Iterator[str]:
    url, schema = new_pg_schema()
    try:
        yield url
    finally:
        drop_pg_schema(schema)


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A Redis key prefix of this test's own; its keys are deleted afterwards."""
    problem = redis_problem()
    if problem:
        pytest.skip(problem)
    import redis

    prefix = f"bgtest:{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()
