"""Key limits, reservations and the ledger on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from bananagate.store import KeyLimits, LedgerRow, Store
from bananagate.store.schema import Base

PRICE = 39_000_000


def test_schema_matches_models(store: Store) -> None:
    with store.engine.connect() as connection:
        diff = compare_metadata(
            MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata
        )
    assert diff == []


def test_limits_round_trip_update_and_rotate(store: Store) -> None:
    expires = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    limits = KeyLimits(
        models=("gemini-2.5-flash-image",),
        budget_nanos=5 * 10**9,
        rpm=10,
        images_per_day=100,
        max_concurrent=3,
        expires_at=expires,
        allow_cidrs=("10.0.0.0/8", "::1"),
    )
    record, secret = store.keys.create_key("alice", limits=limits, label="team A")
    assert record.label == "team A"
    assert record.limits == KeyLimits(
        models=("gemini-2.5-flash-image",),
        budget_nanos=5 * 10**9,
        rpm=10,
        images_per_day=100,
        max_concurrent=3,
        expires_at=expires,
        allow_cidrs=("10.0.0.0/8", "::1/128"),
    )
    assert store.keys.authenticate(secret) == record

    updated = store.keys.update_key("alice", {"rpm": None, "budget_nanos": 7, "models": None})
    assert updated is not None
    assert updated.limits.rpm is None and updated.limits.budget_nanos == 7 and updated.limits.models == ()
    assert updated.limits.max_concurrent == 3  # untouched
    assert store.keys.update_key("nobody", {"rpm": 1}) is None
    with pytest.raises(ValueError):
        store.keys.update_key("alice", {"secret_hash": "x"})
    with pytest.raises(ValueError):
        store.keys.update_key("alice", {"allow_cidrs": ["not-a-network"]})
    with pytest.raises(ValueError):
        store.keys.create_key("bob", limits=KeyLimits(rpm=-1))

    rotated = store.keys.rotate_key("alice")
    assert rotated is not None
    new_record, new_secret = rotated
    assert new_secret != secret and new_record.prefix == new_secret[:10]
    assert store.keys.authenticate(secret) is None
    assert store.keys.authenticate(new_secret) is not None
    store.keys.revoke_key("alice")
    assert store.keys.rotate_key("alice") is None


def test_no_secret_is_stored(store: Store) -> None:
    _, secret = store.keys.create_key("alice", limits=KeyLimits(budget_nanos=1))
    rotated = store.keys.rotate_key("alice")
    assert rotated is not None
    with store.engine.connect() as connection:
        dump = repr(connection.execute(text("SELECT * FROM api_keys")).all())
    assert secret not in dump and rotated[1] not in dump
    assert secret[10:20] not in dump and rotated[1][10:20] not in dump


def test_reservations_never_overspend_under_racing_threads(store: Store) -> None:
    record, _ = store.keys.create_key("alice", limits=KeyLimits(budget_nanos=20 * PRICE))
    holds = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(5):
            hold = store.reservations.reserve(record.id, PRICE, f"r{n}-{i}", 60)
            if hold is not None:
                with lock:
                    holds.append(hold)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(holds) == 20
    key = store.keys.get_key("alice")
    assert key is not None and key.reserved_nanos == 20 * PRICE and key.remaining_nanos == 0
    # Settle half at the full price and release the rest: money moves exactly once each.
    for i, hold in enumerate(holds):
        cost = PRICE if i % 2 == 0 else 0
        row = LedgerRow(f"req-{i}", record.id, "alice", "gemini-2.5-flash-image", 200, "ok", cost_nanos=cost)
        assert store.ledger.record(row, hold)
        assert not store.ledger.record(row, hold)  # a second settle changes nothing
    key = store.keys.get_key("alice")
    assert key is not None and key.spent_nanos == 10 * PRICE and key.reserved_nanos == 0
    assert store.reservations.held() == []
    assert store.reservations.reserve(record.id, 10 * PRICE, "more", 60) is not None
    assert store.reservations.reserve(record.id, 1, "over", 60) is None


def test_keys_without_budget_are_not_reserved(store: Store) -> None:
    record, _ = store.keys.create_key("free")
    assert store.reservations.reserve(record.id, 1, "r", 60) is None
    row = LedgerRow("r", record.id, "free", "m", 200, "ok", cost_nanos=5)
    assert store.ledger.record(row)
    key = store.keys.get_key("free")
    assert key is not None and key.spent_nanos == 5  # spending is tracked without a budget too


def test_sweeper_releases_only_expired_holds(store: Store) -> None:
    record, _ = store.keys.create_key("alice", limits=KeyLimits(budget_nanos=3 * PRICE))
    past = datetime.now(UTC) - timedelta(minutes=5)
    dead = store.reservations.reserve(record.id, PRICE, "dead", 60, now=past)
    live = store.reservations.reserve(record.id, PRICE, "live", 60)
    renewed = store.reservations.reserve(record.id, PRICE, "renewed", 60, now=past)
    assert dead and live and renewed
    assert store.reservations.extend([renewed.id], 60) == 1
    assert store.reservations.expired_count() == 1
    assert store.reservations.sweep() == 1
    assert store.reservations.sweep() == 0
    key = store.keys.get_key("alice")
    assert key is not None and key.reserved_nanos == 2 * PRICE
    # The dead call's late settle does not give its hold back a second time.
    assert store.ledger.record(LedgerRow("dead", record.id, "alice", "m", 200, "ok", cost_nanos=PRICE), dead)
    key = store.keys.get_key("alice")
    assert key is not None and key.reserved_nanos == 2 * PRICE and key.spent_nanos == PRICE


def test_ledger_summaries(store: Store) -> None:
    day1 = datetime(2026, 3, 1, 23, 59, tzinfo=UTC)
    day2 = datetime(2026, 3, 2, 0, 1, tzinfo=UTC)
    rows = [
        LedgerRow("a", 1, "alice", "gemini-2.5-flash-image", 200, "ok", day1, images=1, cost_nanos=PRICE),
        LedgerRow(
            "b", 1, "alice", "gemini-3-pro-image-preview", 200, "ok", day2, images=1, cost_nanos=134_000_000
        ),
        LedgerRow("c", 2, "bob", "gemini-2.5-flash-image", 503, "error", day2, attempts=3),
    ]
    for row in rows:
        assert store.ledger.record(row)
    total = store.ledger.summary()[0]
    assert (total.requests, total.succeeded, total.images, total.cost_nanos) == (3, 2, 2, PRICE + 134_000_000)
    by_day = {s.group: s.requests for s in store.ledger.summary(by="day")}
    assert by_day == {"2026-03-01": 1, "2026-03-02": 2}
    by_key = {s.group: s.cost_nanos for s in store.ledger.summary(by="key")}
    assert by_key == {"alice": PRICE + 134_000_000, "bob": 0}
    by_model = {s.group: s.requests for s in store.ledger.summary(by="model", since=day2)}
    assert by_model == {"gemini-2.5-flash-image": 1, "gemini-3-pro-image-preview": 1}
    assert [r.request_id for r in store.ledger.rows(key_name="alice")] == ["a", "b"]
    got = store.ledger.get("c")
    assert got is not None and got.attempts == 3 and got.created_at == day2


def test_ledger_rows_are_stored_as_the_orm_stores_them(store: Store) -> None:
    # The ledger writes with the driver's own SQL (the hot path); what lands in the table must be
    # what SQLAlchemy's ORM writes for the same values, byte for byte, or reads and filters
    # (created_at ranges on SQLite's text timestamps, above all) would see two formats.
    from datetime import timezone

    from sqlalchemy.orm import Session

    from bananagate.store.schema import LedgerEntry

    # No microseconds: sqlite3's own adapter would then write no fraction, SQLAlchemy ".000000".
    when = datetime(2026, 3, 1, 23, 59, 58, tzinfo=timezone(timedelta(hours=2)))
    fields = dict(
        key_id=7,
        key_name="alice",
        model="gemini-2.5-flash-image",
        status=200,
        outcome="ok",
        created_at=when,
        channel="google",
        streamed=True,
        finish_reason="STOP",
        attempts=2,
        images=1,
        prompt_tokens=12,
        output_tokens=1290,
        image_tokens=1290,
        thoughts_tokens=3,
        cost_nanos=PRICE,
        latency_ms=4321,
        client_ip="10.1.2.3",
    )
    assert store.ledger.record(LedgerRow("by-driver", **fields))
    with Session(store.engine) as session, session.begin():
        session.add(LedgerEntry(request_id="by-orm", **fields))
    columns = ", ".join(name for name in fields)
    with store.engine.connect() as connection:
        raw = {
            row[0]: tuple(row[1:])
            for row in connection.execute(text(f"SELECT request_id, {columns} FROM usage_ledger"))
        }
    assert raw["by-driver"] == raw["by-orm"]
    got = store.ledger.get("by-driver")
    assert got == LedgerRow("by-driver", **{**fields, "created_at": when.astimezone(UTC)})
