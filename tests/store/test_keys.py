"""API keys on both databases: create, authenticate, touch, list, revoke, and no stored secrets."""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, table, text

from bananagate.store import (
    ApiKeyRecord,
    InvalidKeyName,
    KeyNameTaken,
    Store,
    StoreError,
    hash_secret,
)

SECRET_RE = re.compile(r"sk-[A-Za-z0-9_-]{48}")


def test_create_returns_record_and_secret_once(store: Store) -> None:
    before = datetime.now(UTC)
    record, secret = store.keys.create_key("ci")
    assert SECRET_RE.fullmatch(secret)
    assert isinstance(record, ApiKeyRecord)
    assert record.name == "ci"
    assert record.prefix == secret[:10]
    assert record.id > 0
    assert record.created_at.tzinfo is not None
    assert before - timedelta(seconds=1) <= record.created_at <= datetime.now(UTC)
    assert record.last_used_at is None and record.revoked_at is None
    assert record.active and record.status == "active"
    assert store.keys.get_key("ci") == record


def test_secrets_are_unique(store: Store) -> None:
    secrets = {store.keys.create_key(f"k{i}")[1] for i in range(20)}
    assert len(secrets) == 20


def test_authenticate(store: Store) -> None:
    record, secret = store.keys.create_key("ci")
    other, other_secret = store.keys.create_key("other")
    assert store.keys.authenticate(secret) == record
    assert store.keys.authenticate(other_secret) == other
    flipped = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    for wrong in (
        flipped,
        secret + "x",
        secret[:-1],
        "",
        "sk-",
        record.prefix,
        hash_secret(secret),
        "x" * 10_000,
    ):
        assert store.keys.authenticate(wrong) is None


def test_record_is_a_frozen_value(store: Store) -> None:
    record, _ = store.keys.create_key("ci")
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.name = "other"  # type: ignore[misc]


def test_duplicate_name(store: Store) -> None:
    store.keys.create_key("ci")
    with pytest.raises(KeyNameTaken) as caught:
        store.keys.create_key("ci")
    assert isinstance(caught.value, StoreError)
    assert caught.value.name == "ci"
    assert "ci" in str(caught.value)
    assert store.keys.revoke_key("ci")
    with pytest.raises(KeyNameTaken):
        store.keys.create_key("ci")
    assert store.keys.count_keys() == 1


@pytest.mark.parametrize("name", ["", " ", "a b", " ci", "ci\n", "-ci", ".ci", "x" * 65, "é", "a/b"])
def test_invalid_names(store: Store, name: str) -> None:
    with pytest.raises(InvalidKeyName):
        store.keys.create_key(name)
    assert store.keys.count_keys() == 0


def test_valid_names(store: Store) -> None:
    for name in ("ci", "Alice.laptop", "svc:render-2", "bob@example.com", "a" * 64, "0", "x+y_z"):
        assert store.keys.create_key(name)[0].name == name
    assert store.keys.get_key("CI") is None


def test_revoke(store: Store) -> None:
    _, secret = store.keys.create_key("ci")
    keep, keep_secret = store.keys.create_key("keep")
    assert store.keys.revoke_key("ci") is True
    assert store.keys.authenticate(secret) is None
    assert store.keys.authenticate(keep_secret) == keep
    revoked = store.keys.get_key("ci")
    assert revoked is not None and revoked.revoked_at is not None
    assert revoked.status == "revoked" and not revoked.active
    # A second revocation reports False and keeps the first time.
    assert store.keys.revoke_key("ci") is False
    assert store.keys.get_key("ci") == revoked
    assert store.keys.revoke_key("nope") is False


def test_list_and_count(store: Store) -> None:
    assert store.keys.list_keys() == []
    assert store.keys.count_keys() == 0
    start = datetime(2030, 1, 1, tzinfo=UTC)
    for i, name in enumerate(["b", "a", "c"]):
        store.keys.create_key(name, now=start + timedelta(minutes=i))
    store.keys.revoke_key("a")
    assert [r.name for r in store.keys.list_keys()] == ["b", "c"]
    assert [r.name for r in store.keys.list_keys(include_revoked=True)] == ["b", "a", "c"]
    assert [r.status for r in store.keys.list_keys(include_revoked=True)] == ["active", "revoked", "active"]
    assert store.keys.count_keys() == 3
    assert store.keys.count_keys(include_revoked=False) == 2


def test_timestamps_round_trip_as_utc(store: Store) -> None:
    plus_two = datetime(2030, 6, 1, 16, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    record, _ = store.keys.create_key("ci", now=plus_two)
    stored = store.keys.get_key("ci")
    assert stored is not None
    assert stored.created_at == plus_two == record.created_at
    assert stored.created_at.utcoffset() == timedelta(0)


def test_touch(store: Store) -> None:
    record, secret = store.keys.create_key("ci")
    t1 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    store.keys.touch(record.id, t1)
    assert store.keys.get_key("ci").last_used_at == t1  # type: ignore[union-attr]
    # Never moves backwards.
    store.keys.touch(record.id, t1 - timedelta(hours=1))
    assert store.keys.get_key("ci").last_used_at == t1  # type: ignore[union-attr]
    # Naive datetimes are taken as UTC.
    store.keys.touch(record.id, datetime(2030, 1, 2, 8, 0))
    assert store.keys.get_key("ci").last_used_at == datetime(2030, 1, 2, 8, 0, tzinfo=UTC)  # type: ignore[union-attr]
    authed = store.keys.authenticate(secret)
    assert authed is not None and authed.last_used_at == datetime(2030, 1, 2, 8, 0, tzinfo=UTC)
    # Unknown ids are ignored.
    store.keys.touch(record.id + 1000, t1)


def test_touch_defaults_to_now(store: Store) -> None:
    record, _ = store.keys.create_key("ci")
    store.keys.touch(record.id)
    last = store.keys.get_key("ci").last_used_at  # type: ignore[union-attr]
    assert last is not None and abs(datetime.now(UTC) - last) < timedelta(minutes=1)


def test_store_shorthands(store: Store) -> None:
    record, secret = store.create_key("ci")
    assert store.authenticate(secret) == record
    store.touch(record.id, datetime(2030, 1, 1, tzinfo=UTC))
    assert store.get_key("ci").last_used_at == datetime(2030, 1, 1, tzinfo=UTC)  # type: ignore[union-attr]
    assert [r.name for r in store.list_keys()] == ["ci"]
    assert store.count_keys() == 1
    assert store.revoke_key("ci")
    assert store.list_keys() == [] and store.authenticate(secret) is None
    assert len(store.list_keys(include_revoked=True)) == 1


def test_delete_key(store: Store) -> None:
    store.keys.create_key("ci")
    assert store.keys.delete_key("ci") is True
    assert store.keys.delete_key("ci") is False
    assert store.keys.create_key("ci")[0].name == "ci"


def test_threads_share_one_store(store: Store) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def work(worker: int) -> None:
        try:
            barrier.wait()
            for i in range(5):
                record, secret = store.keys.create_key(f"w{worker}-{i}")
                assert store.keys.authenticate(secret) == record
                store.keys.touch(record.id, datetime.now(UTC))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.keys.count_keys() == 30
    assert all(r.last_used_at is not None for r in store.keys.list_keys())


def test_secrets_are_never_stored(store: Store, backend: str, db_url: str) -> None:
    created = [store.keys.create_key(f"k{i}") for i in range(3)]
    for record, _ in created:
        store.keys.touch(record.id, datetime.now(UTC))
    store.keys.revoke_key("k0")
    # Every value of every row of every table, as text.
    dumped: list[str] = []
    with store.engine.connect() as connection:
        for name in inspect(connection).get_table_names():
            for row in connection.execute(select(text("*")).select_from(table(name))):
                dumped.extend(str(value) for value in row)
    blob = "\n".join(dumped)
    for record, secret in created:
        assert secret not in blob
        assert secret[10:] not in blob  # not even the part after the display prefix
        assert hash_secret(secret) in blob
        assert record.prefix in blob
    if backend == "sqlite":
        # The raw database file, its WAL and shared-memory files.
        path = Path(db_url.removeprefix("sqlite:///"))
        raw = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
        assert hash_secret(created[0][1]).encode() in raw  # the scan does see stored data
        for _, secret in created:
            assert secret.encode() not in raw
            assert secret[10:].encode() not in raw


def test_key_cache_remembers_found_keys_only(store: Store) -> None:
    record, secret = store.keys.create_key("ci")
    assert store.keys.cached(secret) is None
    assert store.keys.authenticate(secret) == record
    assert store.keys.cached(secret) is None  # remembered only when asked to
    assert store.keys.authenticate(secret, cache_seconds=60) == record
    assert store.keys.cached(secret) == record
    # Misses are never remembered: unknown secrets go to the database every time.
    wrong = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    for miss in (wrong, "", "x" * 10_000):
        assert store.keys.authenticate(miss, cache_seconds=60) is None
        assert store.keys.cached(miss) is None
    # An entry goes stale after its time.
    assert store.keys.authenticate(secret, cache_seconds=0.01) == record
    time.sleep(0.02)
    assert store.keys.cached(secret) is None


def test_key_cache_forgets_at_once_what_this_process_changes(store: Store) -> None:
    _, secret = store.keys.create_key("ci")
    _, other_secret = store.keys.create_key("other")

    def remember() -> None:
        for s in (secret, other_secret):
            assert store.keys.authenticate(s, cache_seconds=60) is not None
        assert store.keys.cached(secret) is not None

    remember()
    updated = store.keys.update_key("ci", {"rpm": 5})
    assert store.keys.cached(secret) is None and store.keys.cached(other_secret) is None
    assert store.keys.authenticate(secret, cache_seconds=60) == updated
    remember()
    rotated = store.keys.rotate_key("ci")
    assert rotated is not None and store.keys.cached(secret) is None
    secret = rotated[1]
    remember()
    assert store.keys.revoke_key("ci")
    assert store.keys.cached(secret) is None and store.keys.authenticate(secret, cache_seconds=60) is None
    assert store.keys.cached(secret) is None  # a revoked key is a miss: not remembered
    assert store.keys.authenticate(other_secret, cache_seconds=60) is not None
    assert store.keys.delete_key("other")
    assert store.keys.cached(other_secret) is None


def test_key_cache_sees_another_processs_change_once_stale(store: Store, db_url: str) -> None:
    record, secret = store.keys.create_key("ci")
    assert store.keys.authenticate(secret, cache_seconds=60) == record
    with Store.open(db_url) as other:  # as the CLI or another gateway would
        assert other.keys.revoke_key("ci")
    # The documented bound: this process may serve its memory of the key until it is stale...
    assert store.keys.cached(secret) == record
    # ...while the database already says no.
    assert store.keys.authenticate(secret) is None
