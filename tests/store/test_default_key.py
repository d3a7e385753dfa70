"""`ensure_default_key`: the first-start key and its 0600 file."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bananagate.store import DEFAULT_KEY_FILENAME, Store, ensure_default_key

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that would make new files world-readable and -writable."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_creates_default_key_file_0600(store: Store, tmp_path: Path, open_umask: None) -> None:
    data_dir = tmp_path / "fresh" / "dir"
    secret = ensure_default_key(store, data_dir)
    assert secret is not None
    path = data_dir / DEFAULT_KEY_FILENAME
    assert path.read_text() == secret + "\n"
    assert _mode(path) == 0o600
    record = store.keys.authenticate(path.read_text().strip())
    assert record is not None and record.name == "default"
    # No temporary files left behind.
    assert sorted(p.name for p in data_dir.iterdir()) == [DEFAULT_KEY_FILENAME]


def test_nothing_when_keys_exist(store: Store, tmp_path: Path) -> None:
    assert ensure_default_key(store, tmp_path) is not None
    assert ensure_default_key(store, tmp_path) is None
    assert store.keys.count_keys() == 1


def test_revoked_keys_count_as_keys(store: Store, tmp_path: Path) -> None:
    store.keys.create_key("old")
    store.keys.revoke_key("old")
    assert ensure_default_key(store, tmp_path) is None
    assert not (tmp_path / DEFAULT_KEY_FILENAME).exists()


def test_replaces_a_world_readable_file(store: Store, tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / DEFAULT_KEY_FILENAME
    path.write_text("stale\n")
    path.chmod(0o644)
    secret = ensure_default_key(store, tmp_path)
    assert secret is not None
    assert path.read_text() == secret + "\n"
    assert _mode(path) == 0o600


def test_failed_write_leaves_no_unusable_key(store: Store, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(OSError):
        ensure_default_key(store, blocker)
    assert store.keys.count_keys() == 0
    assert ensure_default_key(store, tmp_path) is not None
