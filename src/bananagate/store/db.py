"""Engines and schema migrations.

`create_store_engine` builds an engine for a SQLAlchemy URL; `upgrade_schema` brings its database
to the newest Alembic revision, safely when several processes start at once:

* SQLite: pragmas on every connection (WAL, `busy_timeout`, foreign keys); the upgrade runs
  inside `BEGIN IMMEDIATE`, so a second process waits for the first one's write lock (up to the
  busy timeout) and then finds the schema already current.
* PostgreSQL: the upgrade runs in one transaction (PostgreSQL DDL is transactional) that first
  takes a transaction-scoped advisory lock, so concurrent upgrades queue up behind each other.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlalchemy.pool import NullPool, StaticPool

from bananagate.store.errors import SchemaTooNew, StoreUnavailable

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "alembic_version"
# The newest migration's revision. Alembic (and Mako, ~10 MB of RSS together) is imported only
# when a database is not at this revision; tests/store/test_migrations.py checks it is the head.
SCHEMA_HEAD = "0007"

# How long a SQLite connection waits for another writer's lock before failing, in milliseconds.
SQLITE_BUSY_TIMEOUT_MS = 5000
# How long a process waits for another one's migration of a SQLite database (PostgreSQL's
# advisory lock waits without a limit).
MIGRATION_LOCK_TIMEOUT_MS = 120_000

# Key of the PostgreSQL advisory lock held while migrating (b"bananagt" as a signed 64-bit int).
PG_MIGRATION_LOCK_KEY = int.from_bytes(b"bananagt", "big", signed=True)


def normalize_url(url: str | URL) -> URL:
    """Parse `url`; a bare `postgresql://` URL is given the psycopg (v3) driver we ship with."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreUnavailable(f"invalid database URL: {exc}") from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def is_sqlite_memory(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any, *, wait: bool = True) -> None:
    """Every connection's settings; `wait=False` for `no_wait_engine`'s: no waiting for other
    processes' locks, no checkpoints (the journal mode is the database's, set by the first)."""
    cursor = dbapi_connection.cursor()
    try:
        # busy_timeout first, so that switching the journal mode waits for other processes' locks.
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS if wait else 0}")
        cursor.execute("PRAGMA foreign_keys = ON")
        if wait:
            _switch_to_wal(cursor)
        else:
            cursor.execute("PRAGMA wal_autocheckpoint = 0")
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def _switch_to_wal(cursor: Any) -> None:
    """`PRAGMA journal_mode = WAL`, retried while the database is busy, up to the busy timeout.

    On a brand-new database (still in rollback-journal mode) the switch needs an exclusive lock;
    when another process holds its write lock, SQLite answers "database is locked" at once
    without calling the busy handler (waiting could deadlock), so several processes opening a
    new database together would fail now and then. Retrying drops this connection's own lock
    between tries, which lets the other process finish. On a database already in WAL mode the
    first try succeeds."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    pause = 0.001
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def _new_engine(url: URL, **kwargs: Any) -> Engine:
    try:
        return create_engine(url, **kwargs)
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        hint = ""
        if url.get_backend_name() == "postgresql":
            hint = " (install PostgreSQL support with `pip install 'bananagate[postgres]'`)"
        raise StoreUnavailable(f"no database driver for {url.drivername!r}{hint}: {exc}") from exc


# libpq connection settings for a PostgreSQL that stops answering (host gone, network cut): a
# new connection gives up after `connect_timeout` s instead of the OS's ~2 minutes, and one in
# use is dropped once sent data goes unacknowledged for `tcp_user_timeout` ms or keepalives
# fail. Requests then get a 503 promptly rather than piling up on blocked threads. Settings
# given in the URL's query win.
PG_CONNECT_ARGS: dict[str, int] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}


def create_store_engine(url: str | URL) -> Engine:
    """An engine for `url`, with the per-dialect settings the store relies on.

    An in-memory SQLite URL (`sqlite://`) gets one shared connection, so every session sees
    the same database; that is meant for tests. For a SQLite file, the parent directory is
    created if needed.
    """
    parsed = normalize_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if is_sqlite_memory(parsed):
            engine = _new_engine(parsed, poolclass=StaticPool, connect_args={"check_same_thread": False})
        else:
            assert parsed.database is not None
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            engine = _new_engine(parsed)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if backend == "postgresql":
        connect_args = {k: v for k, v in PG_CONNECT_ARGS.items() if k not in parsed.query}
        return _new_engine(parsed, pool_pre_ping=True, connect_args=connect_args)
    return _new_engine(parsed)


def no_wait_engine(engine: Engine) -> Engine | None:
    """For an embedded SQLite file: a second engine on the same database whose connections never
    wait (another process's write lock fails their write at once instead of after up to
    `SQLITE_BUSY_TIMEOUT_MS`) and never checkpoint the WAL (which syncs the database file).
    Short writes can then run on the event loop itself, falling back to a thread when the
    database is busy; whoever uses it checkpoints from a thread now and then (`checkpoint`).
    None for other databases (a network round trip does not belong on the event loop) and for
    an in-memory SQLite (its one connection is shared with the threads)."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or is_sqlite_memory(url):
        return None
    quick = _new_engine(url)
    event.listen(quick, "connect", functools.partial(_sqlite_pragmas, wait=False))
    return quick


def checkpoint(engine: Engine) -> None:
    """Copy the WAL's committed pages into the database file (PASSIVE: never waits for readers
    or writers; what they hold is left for the next time)."""
    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at the packaged migrations; no alembic.ini is read."""
    from alembic.config import Config

    config = Config()
    # Config values go through ConfigParser interpolation, so `%` must be doubled.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


def current_revisions(connection: Connection) -> set[str]:
    """The revisions the database is at (empty before the first migration)."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return set()
    return set(connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())


def _check_known(current: set[str]) -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    known = {revision.revision for revision in script.walk_revisions()}
    unknown = current - known
    if unknown:
        raise SchemaTooNew(
            f"the database schema is at revision {', '.join(sorted(unknown))}, which this version "
            "of bananagate does not know; upgrade bananagate"
        )


def _sqlite_migration_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy, not the sqlite3 module, decide where transactions start (see the "begin"
    # listener below), so that DDL runs inside them.
    dbapi_connection.isolation_level = None
    # Batch migrations copy and drop tables; with foreign keys enforced, dropping a referenced
    # table would cascade. (The pragma only takes effect outside a transaction, hence here.)
    dbapi_connection.execute("PRAGMA foreign_keys = OFF")
    # Waiting for this lock is waiting for another process's migration, which takes seconds on a
    # busy machine: the store's 5 s busy timeout made a concurrent first open fail now and then.
    dbapi_connection.execute(f"PRAGMA busy_timeout = {MIGRATION_LOCK_TIMEOUT_MS}")


def _emit_begin_immediate(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


@contextmanager
def _locked_migration_connection(engine: Engine) -> Iterator[Connection]:
    """A connection inside a transaction that holds the database-wide migration lock."""
    backend = engine.dialect.name
    if backend == "sqlite" and not is_sqlite_memory(engine.url):
        lock_engine = create_engine(engine.url, poolclass=NullPool)
        event.listen(lock_engine, "connect", _sqlite_pragmas)
        event.listen(lock_engine, "connect", _sqlite_migration_connect)
        event.listen(lock_engine, "begin", _emit_begin_immediate)
        try:
            with lock_engine.begin() as connection:
                yield connection
        finally:
            lock_engine.dispose()
        return
    with engine.begin() as connection:
        if backend == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK_KEY})
        yield connection


def upgrade_schema(engine: Engine) -> None:
    """Migrate the database behind `engine` to the newest revision, if it is not there yet."""
    try:
        with engine.connect() as connection:
            current = current_revisions(connection)
    except OperationalError as exc:
        raise StoreUnavailable(f"cannot use the database at {engine.url!r}: {exc.orig}") from exc
    if current != {SCHEMA_HEAD}:
        _migrate(engine, current)


def upgrade_schema_in_child(url: str | URL) -> bool:
    """Migrate the database at `url` in a forked child process, if it is not at the newest
    revision: Alembic and Mako then never load into this process (~7 MB of RSS a long-running
    gateway would otherwise carry for good after its first start). True when the child brought
    the schema up to date; False when nothing was done (already current, an in-memory database,
    no `fork` here) or the child failed, which leaves the migration, and the reporting of
    whatever went wrong, to the caller's own `upgrade_schema`.

    Call it before this process starts any thread: a forked child has only the forking thread.
    """
    parsed = normalize_url(url)
    if not hasattr(os, "fork") or is_sqlite_memory(parsed):
        return False
    engine = create_store_engine(parsed)
    try:
        with engine.connect() as connection:
            if current_revisions(connection) == {SCHEMA_HEAD}:
                return False
    except OperationalError:
        return False  # the caller's open reports it
    finally:
        engine.dispose()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        code = 1
        try:
            child = create_store_engine(parsed)
            try:
                upgrade_schema(child)
            finally:
                child.dispose()
            code = 0
        finally:
            os._exit(code)  # no atexit handlers, no flushing of the parent's buffers
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def _migrate(engine: Engine, current: set[str]) -> None:
    from alembic import command
    from alembic.util.exc import CommandError

    try:
        _check_known(current)
        with _locked_migration_connection(engine) as connection:
            _check_known(current_revisions(connection))
            command.upgrade(alembic_config(connection), "head")
    except OperationalError as exc:
        raise StoreUnavailable(f"cannot use the database at {engine.url!r}: {exc.orig}") from exc
    except CommandError as exc:  # pragma: no cover - only with a broken migrations directory
        raise StoreUnavailable(f"cannot migrate the database: {exc}") from exc
