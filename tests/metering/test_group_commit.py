"""Group commit of the ledger (`LedgerWriter`, `LedgerRepository.record_many`) on SQLite and
PostgreSQL: concurrent settles share transactions, and the money stays exact with duplicates
and holds the sweeper already released."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event

import bananagate.store.ledger as ledger_module
from bananagate.server.metering import LedgerWriter
from bananagate.store import Hold, KeyLimits, LedgerRow, Store

PRICE = 39_000_000
MODEL = "gemini-2.5-flash-image"


@contextmanager
def counting_commits(store: Store) -> Iterator[list[int]]:
    """How many transactions were committed on the store's database meanwhile (in `[0]`), by
    any engine of it (the ledger writes an embedded SQLite through one of its own)."""
    commits = [0]

    def on_commit(connection: Any) -> None:
        if connection.engine.url == store.engine.url:
            commits[0] += 1

    event.listen(Engine, "commit", on_commit)
    try:
        yield commits
    finally:
        event.remove(Engine, "commit", on_commit)


def _row(request_id: str, key_id: int, cost: int) -> LedgerRow:
    return LedgerRow(request_id, key_id, "k", MODEL, 200, "ok" if cost else "error", cost_nanos=cost)


async def test_concurrent_settles_land_in_batches_with_exact_totals(store: Store) -> None:
    calls = 90
    alice, _ = store.keys.create_key("alice", limits=KeyLimits(budget_nanos=calls * PRICE))
    bob, _ = store.keys.create_key("bob", limits=KeyLimits(budget_nanos=calls * PRICE))
    past = datetime.now(UTC) - timedelta(minutes=5)
    settles: list[tuple[LedgerRow, Hold | None]] = []
    charged = {alice.id: 0, bob.id: 0}
    for i in range(calls):
        key_id = alice.id if i % 3 else bob.id
        # Every tenth call outlived its hold: the sweeper gives that money back before the settle.
        hold = store.reservations.reserve(key_id, PRICE, f"r{i}", 60, now=past if i % 10 == 0 else None)
        assert hold is not None
        cost = PRICE if i % 2 == 0 else PRICE // 3 if i % 5 == 0 else 0
        settles.append((_row(f"r{i}", key_id, cost), hold))
        charged[key_id] += cost
    assert store.reservations.sweep() == calls // 10
    # Repeats of some settles (a retried write, a second settle): after their first's batch, before
    # it, and in the same batch (50). Only one copy moves money, and a repeat does not fail the
    # other rows of its batch.
    repeats = [settles[i] for i in (1, 2, 3, 30, 50, 60, 89)]
    queue = settles[:45] + repeats + settles[45:]

    writer = LedgerWriter(lambda: store.ledger, max_batch=16)
    with counting_commits(store) as commits:
        outcomes = await asyncio.gather(*(writer.record(row, hold) for row, hold in queue))

    # The first of each request id is written, whichever batch each copy landed in.
    firsts = {row.request_id: n for n, (row, _) in reversed(list(enumerate(queue)))}
    assert outcomes == [firsts[row.request_id] == n for n, (row, _) in enumerate(queue)]
    assert outcomes.count(False) == len(repeats)
    # Batches of 16 rows: one transaction each, except those holding a repeat (redone row by row).
    assert commits[0] < len(queue)
    rows = list(store.ledger.rows())
    assert sorted(r.request_id for r in rows) == sorted(f"r{i}" for i in range(calls))
    for key in (alice, bob):
        record = store.keys.get_key_by_id(key.id)
        assert record is not None
        assert record.spent_nanos == charged[key.id] == sum(r.cost_nanos for r in rows if r.key_id == key.id)
        assert record.reserved_nanos == 0  # each hold given back exactly once, by settle or sweep
    assert store.reservations.held() == []


async def test_a_batch_without_duplicates_is_one_transaction(store: Store) -> None:
    key, _ = store.keys.create_key("alice", limits=KeyLimits(budget_nanos=100 * PRICE))
    holds = [store.reservations.reserve(key.id, PRICE, f"r{i}", 60) for i in range(64)]
    writer = LedgerWriter(lambda: store.ledger, max_batch=32)
    with counting_commits(store) as commits:
        outcomes = await asyncio.gather(
            *(writer.record(_row(f"r{i}", key.id, PRICE if i % 2 else 0), h) for i, h in enumerate(holds))
        )
    assert outcomes == [True] * 64
    assert commits[0] == 2  # all 64 queued before the first batch started: two batches of 32
    record = store.keys.get_key_by_id(key.id)
    assert record is not None and record.spent_nanos == 32 * PRICE and record.reserved_nanos == 0


async def test_one_settle_alone_is_written_at_once(store: Store) -> None:
    key, _ = store.keys.create_key("alice")
    writer = LedgerWriter(lambda: store.ledger)
    assert await writer.record(_row("only", key.id, PRICE), None)
    assert not await writer.record(_row("only", key.id, PRICE), None)
    record = store.keys.get_key_by_id(key.id)
    assert record is not None and record.spent_nanos == PRICE


def test_record_many_redoes_a_failed_batch_row_by_row(store: Store) -> None:
    key, _ = store.keys.create_key("alice", limits=KeyLimits(budget_nanos=10 * PRICE))
    hold = store.reservations.reserve(key.id, PRICE, "a", 60)
    assert store.ledger.record(_row("dup", key.id, PRICE))
    outcomes = store.ledger.record_many(
        [(_row("a", key.id, PRICE), hold), (_row("dup", key.id, PRICE), None), (_row("b", key.id, 0), None)]
    )
    assert outcomes == [True, False, True]
    record = store.keys.get_key_by_id(key.id)
    assert record is not None and record.spent_nanos == 2 * PRICE and record.reserved_nanos == 0
    assert store.ledger.record_many([]) == []


def test_a_row_the_database_refuses_fails_alone(store: Store) -> None:
    key, _ = store.keys.create_key("alice")
    odd = LedgerRow("odd", key.id, "alice", "m" * 150, 200, "ok", cost_nanos=PRICE)  # model: 100 chars
    outcomes = store.ledger.record_many([(_row("a", key.id, PRICE), None), (odd, None)])
    if store.engine.dialect.name == "postgresql":
        assert outcomes[0] is True and isinstance(outcomes[1], Exception)
        charged = PRICE
    else:  # SQLite does not enforce string lengths
        assert outcomes == [True, True]
        charged = 2 * PRICE
    record = store.keys.get_key_by_id(key.id)
    assert record is not None and record.spent_nanos == charged


# --- embedded SQLite: ledger rows written on the event loop when the database takes them at once


def _sqlite_file(store: Store) -> str:
    if store.engine.dialect.name != "sqlite":
        pytest.skip("rows are written on the event loop only on an embedded SQLite database")
    assert store.engine.url.database is not None
    return store.engine.url.database


def test_record_many_now_writes_at_once_on_sqlite_and_never_elsewhere(store: Store) -> None:
    key, _ = store.keys.create_key("alice", limits=KeyLimits(budget_nanos=10 * PRICE))
    hold = store.reservations.reserve(key.id, PRICE, "a", 60)
    outcome = store.ledger.record_many_now([(_row("a", key.id, PRICE), hold), (_row("b", key.id, 0), None)])
    if store.engine.dialect.name == "postgresql":
        assert outcome is None  # a network round trip stays off the event loop
        assert store.ledger.get("a") is None
        return
    assert outcome == [True, True]
    record = store.keys.get_key_by_id(key.id)
    assert record is not None and record.spent_nanos == PRICE and record.reserved_nanos == 0
    # A duplicate fails the whole transaction: nothing is written, the thread path sorts it out.
    assert (
        store.ledger.record_many_now([(_row("c", key.id, PRICE), None), (_row("a", key.id, PRICE), None)])
        is None
    )
    assert store.ledger.get("c") is None
    record = store.keys.get_key_by_id(key.id)
    assert record is not None and record.spent_nanos == PRICE


async def test_a_database_locked_by_another_process_does_not_hold_the_event_loop(store: Store) -> None:
    """Another process's write lock fails the write on the loop at once (not after SQLite's
    5 s busy timeout); the row then goes through a thread, which waits for the lock, and is
    written exactly once."""
    path = _sqlite_file(store)
    key, _ = store.keys.create_key("alice")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # the write lock, as another gateway process mid-commit
    try:
        started = time.monotonic()
        assert store.ledger.record_many_now([(_row("locked", key.id, PRICE), None)]) is None
        assert time.monotonic() - started < 1.0
        writer = LedgerWriter(lambda: store.ledger)
        settle = asyncio.ensure_future(writer.record(_row("locked", key.id, PRICE), None))
        await asyncio.sleep(0.3)
        assert not settle.done()  # waiting in its thread, while the loop goes on
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert await settle is True
    record = store.keys.get_key_by_id(key.id)
    assert record is not None and record.spent_nanos == PRICE
    assert store.ledger.get("locked") is not None


async def test_rows_written_on_the_loop_are_checkpointed_from_a_thread(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop's connections never checkpoint the WAL (a checkpoint syncs the database file);
    the writer has one run in a thread every `CHECKPOINT_EVERY` transactions instead."""
    _sqlite_file(store)
    monkeypatch.setattr(ledger_module, "CHECKPOINT_EVERY", 5)
    key, _ = store.keys.create_key("alice")
    checkpoints: list[str] = []

    def on_execute(connection: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "wal_checkpoint" in statement and connection.engine is store.engine:
            checkpoints.append(threading.current_thread().name)

    async def settle_one_at_a_time(first: int, count: int, checkpoints_then: int) -> None:
        for i in range(first, first + count):  # each its own transaction
            assert await writer.record(_row(f"r{i}", key.id, 0), None)
        for _ in range(200):  # the checkpoint runs in a thread, after the row is answered
            if len(checkpoints) >= checkpoints_then:
                break
            await asyncio.sleep(0.01)
        assert len(checkpoints) == checkpoints_then

    writer = LedgerWriter(lambda: store.ledger)
    event.listen(Engine, "before_cursor_execute", on_execute)
    try:
        await settle_one_at_a_time(0, 4, 0)
        await settle_one_at_a_time(4, 1, 1)  # the 5th
        await settle_one_at_a_time(5, 5, 2)  # the 10th
        await settle_one_at_a_time(10, 2, 2)
    finally:
        event.remove(Engine, "before_cursor_execute", on_execute)
    assert threading.main_thread().name not in checkpoints


def test_the_loop_keeps_one_connection_for_its_writes_and_close_closes_it(store: Store) -> None:
    """Checking a connection out of the pool and back for every batch cost as much as the write:
    the writing thread keeps its own."""
    _sqlite_file(store)
    key, _ = store.keys.create_key("alice")
    opened: list[Any] = []

    def on_connect(connection: Any) -> None:
        if connection.engine.url == store.engine.url:
            opened.append(connection)

    event.listen(Engine, "engine_connect", on_connect)
    try:
        for i in range(20):
            assert store.ledger.record_many_now([(_row(f"k{i}", key.id, 0), None)]) == [True]
    finally:
        event.remove(Engine, "engine_connect", on_connect)
    assert len(opened) == 1 and not opened[0].closed
    assert [store.ledger.get(f"k{i}") is not None for i in range(20)] == [True] * 20
    store.ledger.close()
    assert opened[0].closed
