"""Stored channels: encryption at rest, the change signature, wrong secrets, migrations."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bananagate.store import ChannelNameTaken, KeyCipher, SecretKeyMismatch, SecretKeyMissing, Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store.open(f"sqlite:///{tmp_path / 'bananagate.db'}") as opened:
        yield opened  # type: ignore[misc]


def test_keys_are_sealed_and_the_signature_moves(store: Store, tmp_path: Path) -> None:
    cipher = KeyCipher("a secret of the operator's")
    empty = store.channels.signature()
    record = store.channels.add(
        name="g",
        kind="gemini",
        keys=["AIza-plain-1", "AIza-plain-2"],
        cipher=cipher,
        models=["m"],
        priority=3,
        options={"model_map": {"a": "b"}, "read_timeout": 60.0},
    )
    assert record.key_count == 2 and "AIza-plain" not in record.sealed_keys
    assert store.channels.open_keys(record, cipher) == ["AIza-plain-1", "AIza-plain-2"]
    assert record.fields() == {
        "name": "g",
        "kind": "gemini",
        "models": ["m"],
        "priority": 3,
        "weight": 1,
        "model_map": {"a": "b"},
        "read_timeout": 60.0,
    }
    added = store.channels.signature()
    assert added != empty
    with pytest.raises(ChannelNameTaken):
        store.channels.add(name="g", kind="gemini", keys=["k"], cipher=cipher)
    assert store.channels.signature() == added
    store.channels.add(name="h", kind="gemini", keys=["k"], cipher=cipher)
    assert store.channels.signature() != added
    assert store.channels.remove("h") and not store.channels.remove("h")
    assert store.channels.signature() == added  # the same rows as before: nothing to reload
    store.channels.add(name="h", kind="gemini", keys=["other"], cipher=cipher)  # same name, new keys
    assert store.channels.signature() != added
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("bananagate.db*"))
    assert b"AIza-plain" not in raw
    with pytest.raises(SecretKeyMismatch):
        store.channels.open_keys(record, KeyCipher("another secret"))


def test_the_key_file_is_created_once_0600_and_shared(tmp_path: Path) -> None:
    with pytest.raises(SecretKeyMissing):
        KeyCipher.load(None, tmp_path, create=False)
    first = KeyCipher.load(None, tmp_path)
    path = tmp_path / "secret.key"
    assert path.stat().st_mode & 0o777 == 0o600
    content = path.read_bytes()
    second = KeyCipher.load(None, tmp_path)
    assert path.read_bytes() == content
    assert second.open(first.seal(["x"])) == ["x"]
    # An explicit secret wins over the file.
    env = KeyCipher.load("from-the-environment", tmp_path)
    with pytest.raises(SecretKeyMismatch):
        env.open(first.seal(["x"]))
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
