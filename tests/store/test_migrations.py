"""Schema creation: at open time, idempotent, safe with concurrent processes, in step with models."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.pool import NullPool

from bananagate.store import NewImage, SchemaTooNew, Store, StoreUnavailable, db
from bananagate.store.db import SCHEMA_HEAD, alembic_config, head_revisions
from bananagate.store.schema import Base


def _revision(store: Store) -> set[str]:
    with store.engine.connect() as connection:
        return set(MigrationContext.configure(connection).get_current_heads())


def test_open_creates_schema_at_head(store: Store) -> None:
    assert _revision(store) == head_revisions()
    assert len(head_revisions()) == 1  # a single line of migrations
    # A store skips Alembic when the database is at SCHEMA_HEAD: it must be the real head.
    assert head_revisions() == {SCHEMA_HEAD}
    tables = set(inspect(store.engine).get_table_names())
    assert {"api_keys", "alembic_version"} <= tables


def test_reopening_is_idempotent_and_keeps_data(db_url: str) -> None:
    with Store.open(db_url) as first:
        _, secret = first.keys.create_key("ci")
    for _ in range(2):
        with Store.open(db_url) as again:
            assert again.keys.authenticate(secret) is not None
            assert _revision(again) == head_revisions()


def test_models_match_migrations(store: Store) -> None:
    with store.engine.connect() as connection:
        diff = compare_metadata(
            MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata
        )
    assert diff == []


def test_downgrade_and_upgrade_again(store: Store) -> None:
    with store.engine.begin() as connection:
        command.downgrade(alembic_config(connection), "base")
    assert "api_keys" not in inspect(store.engine).get_table_names()
    with Store.open(store.url.render_as_string(hide_password=False)) as reopened:
        assert reopened.keys.count_keys() == 0
        assert _revision(reopened) == head_revisions()


def test_database_from_a_newer_version_is_refused(store: Store, db_url: str) -> None:
    with store.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'ffff9999'"))
    with pytest.raises(SchemaTooNew, match="ffff9999"):
        Store.open(db_url)


def test_sqlite_connection_settings(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'nested' / 'dir' / 'x.db'}") as store:
        with store.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert (tmp_path / "nested" / "dir" / "x.db").exists()


@contextmanager
def write_lock_held_on_new_database(path: Path) -> Iterator[threading.Event]:
    """A brand-new database in rollback-journal mode whose write lock another connection holds
    (what a process sees while another one creates the same database) until the yielded event
    is set, or the block ends."""
    release, held = threading.Event(), threading.Event()

    def hold() -> None:
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            holder.execute("CREATE TABLE other_process (x)")
            held.set()
            release.wait(10)
            holder.execute("COMMIT")
        finally:
            holder.close()

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert held.wait(10)
        yield release
    finally:
        release.set()
        thread.join()


def test_switch_to_wal_waits_for_another_writer_on_a_new_database(tmp_path: Path) -> None:
    """SQLite fails the WAL switch at once ("database is locked", no busy handler) while another
    connection holds the write lock of a new database; opening waits for it instead."""
    path = tmp_path / "new.db"
    with write_lock_held_on_new_database(path) as release:
        threading.Timer(0.3, release.set).start()
        started = time.monotonic()
        with Store.open(f"sqlite:///{path}") as store:
            assert time.monotonic() - started >= 0.25
            with store.engine.connect() as connection:
                assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert "other_process" in inspect(store.engine).get_table_names()


def test_switch_to_wal_gives_up_after_the_busy_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 200)
    path = tmp_path / "new.db"
    with write_lock_held_on_new_database(path):
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="locked"):
            Store.open(f"sqlite:///{path}")
        assert 0.15 <= time.monotonic() - started < 5


def test_sqlite_in_memory_is_shared_across_threads() -> None:
    with Store.open("sqlite://") as store:
        _, secret = store.keys.create_key("ci")
        found: list[object] = []
        worker = threading.Thread(target=lambda: found.append(store.keys.authenticate(secret)))
        worker.start()
        worker.join()
        assert found[0] is not None


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://postgres@127.0.0.1:1/test?connect_timeout=2",
        "mysql+nosuchdriver://u@localhost/db",
        "not a url",
    ],
)
def test_unusable_database_raises_store_unavailable(url: str) -> None:
    with pytest.raises(StoreUnavailable):
        Store.open(url)


WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from bananagate.store import Store

    url, go, ready, name = sys.argv[1:5]
    Path(ready).touch()
    while not Path(go).exists():
        time.sleep(0.002)
    with Store.open(url) as store:
        store.keys.create_key(name)
    """
)


def test_concurrent_first_open_by_several_processes(db_url: str, data_dir: Path, tmp_path: Path) -> None:
    """Several processes open a brand-new database at the same moment: all of them succeed."""
    data_dir.mkdir(parents=True, exist_ok=True)
    go = tmp_path / "go"
    workers = 4
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, db_url, str(go), str(tmp_path / f"ready{i}"), f"p{i}"],
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(workers)
    ]
    try:
        deadline = time.monotonic() + 30
        while not all((tmp_path / f"ready{i}").exists() for i in range(workers)):
            assert time.monotonic() < deadline, "workers did not start"
            time.sleep(0.01)
        go.touch()
        results = [(p.wait(timeout=60), p.stderr.read() if p.stderr else "") for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [code for code, _ in results] == [0] * workers, results
    with Store.open(db_url) as store:
        assert sorted(r.name for r in store.keys.list_keys()) == [f"p{i}" for i in range(workers)]
        assert _revision(store) == head_revisions()


def test_sqlite_reader_and_writer_processes_at_once(tmp_path: Path) -> None:
    """A long-lived store (the server) keeps working while another process writes."""
    url = f"sqlite:///{tmp_path / 'bananagate.db'}"
    with Store.open(url) as server:
        _, secret = server.keys.create_key("server")
        # Hold a read transaction open, as a busy server might, while another process writes.
        engine = create_engine(url, poolclass=NullPool)
        with engine.connect() as reader:
            reader.exec_driver_sql("BEGIN")
            reader.exec_driver_sql("SELECT count(*) FROM api_keys").scalar()
            (tmp_path / "go").touch()
            worker = [sys.executable, "-c", WORKER, url, str(tmp_path / "go"), str(tmp_path / "r"), "cli"]
            code = subprocess.run(worker, timeout=60, check=False).returncode
            assert code == 0
            reader.exec_driver_sql("COMMIT")
        engine.dispose()
        assert server.keys.get_key("cli") is not None
        assert server.keys.authenticate(secret) is not None


def test_gallery_segments_migration_keeps_rows_of_files(store: Store, data_dir: Path) -> None:
    """0007 adds where a gallery image's bytes are: rows of the per-file layout keep working
    through a downgrade and an upgrade; rows of images in segments keep their metadata."""
    gallery = store.gallery
    gallery.configure(data_dir / "gallery", max_bytes=None)
    (segmented,) = gallery.add([NewImage(b"in a segment", "image/png", "new", 0, 1, "alice", "m", "p")])
    with store.engine.begin() as connection:
        command.downgrade(alembic_config(connection), "0006")
    columns = {c["name"] for c in inspect(store.engine).get_columns("gallery_images")}
    assert "segment" not in columns and "segment_offset" not in columns
    # A row as a gateway of that version writes it: its own file, named by file_name.
    with store.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO gallery_images (created_at, request_id, image_index, key_name, model,"
                " prompt, params, mime_type, file_name, size_bytes, cost_nanos, latency_ms)"
                " SELECT created_at, 'old', 0, key_name, model, prompt, params, mime_type,"
                " :name, 8, 0, 0 FROM gallery_images WHERE id = :id"
            ),
            {"name": "ab" * 16 + ".png", "id": segmented},
        )
    (data_dir / "gallery" / ("ab" * 16 + ".png")).write_bytes(b"per file")
    with Store.open(store.url.render_as_string(hide_password=False)) as reopened:
        assert _revision(reopened) == head_revisions()
        assert "ix_gallery_images_segment" in {
            i["name"] for i in inspect(reopened.engine).get_indexes("gallery_images")
        }
        reopened.gallery.configure(data_dir / "gallery", max_bytes=None)
        (old,) = reopened.gallery.by_request("old")
        assert old.segment is None and old.segment_offset is None
        assert reopened.gallery.read(old) == b"per file"
        (new,) = reopened.gallery.by_request("new")  # its place was lost with the columns
        assert new.segment is None and reopened.gallery.read(new) is None
        fresh = reopened.gallery.add([NewImage(b"again", "image/png", "again", 0, 1, "alice", "m", "p")])
        entry = reopened.gallery.get(fresh[0])
        assert entry is not None and entry.segment is not None and reopened.gallery.read(entry) == b"again"


def test_first_open_waits_out_a_long_migration_of_another_process(tmp_path: Path) -> None:
    """A process that finds another one migrating a new SQLite database waits for it, even past
    the store's 5 s busy timeout (a migration takes that long on a busy machine)."""
    import sqlite3

    from bananagate.store.db import SQLITE_BUSY_TIMEOUT_MS

    path = tmp_path / "bananagate.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("PRAGMA journal_mode = WAL")  # as the other process's first connection left it
    other.execute("BEGIN IMMEDIATE")  # ... and its migration lock, held past the busy timeout
    hold = SQLITE_BUSY_TIMEOUT_MS / 1000 + 1.0
    release = threading.Timer(hold, other.execute, args=("COMMIT",))
    release.start()
    started = time.monotonic()
    try:
        with Store.open(f"sqlite:///{path}") as store:
            assert _revision(store) == {SCHEMA_HEAD}
    finally:
        release.join()
        other.close()
    assert time.monotonic() - started >= hold - 0.5  # it did wait for the lock


IN_CHILD = textwrap.dedent(
    """
    import sys
    from bananagate.store.db import upgrade_schema_in_child

    print(upgrade_schema_in_child(sys.argv[1]), "alembic" in sys.modules, "mako" in sys.modules)
    """
)


def _in_child(url: str) -> str:
    done = subprocess.run([sys.executable, "-c", IN_CHILD, url], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_migrating_in_a_child_leaves_alembic_out_of_the_process(db_url: str, data_dir: Path) -> None:
    """`serve` migrates a new database in a forked child: the database is at the head after it,
    and the server's own process never imported Alembic or Mako (their ~8 MB of RSS)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    assert _in_child(db_url) == "True False False"
    with Store.open(db_url, migrate=False) as store:
        assert _revision(store) == {SCHEMA_HEAD}
        assert "api_keys" in inspect(store.engine).get_table_names()
    assert _in_child(db_url) == "False False False"  # already at the head: no child at all


def test_a_child_that_cannot_migrate_leaves_the_report_to_the_caller(tmp_path: Path) -> None:
    """An unreachable database is not reported by the child (nor raised): the in-process open
    that follows it reports it, as it always did."""
    url = "postgresql://nobody@127.0.0.1:1/none"
    assert _in_child(url) == "False False False"
    with pytest.raises(StoreUnavailable):
        Store.open(url)
