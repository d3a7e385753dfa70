"""Group commit of the ledger (`LedgerWriter`, `LedgerRepository.record_many`) on SQLite and
PostgreSQL: concurrent settles share transactions, and the money stays exact with duplicates
and holds the sweeper already released."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event

from bananagate.server.metering import LedgerWriter
from bananagate.store import Hold, KeyLimits, LedgerRow, Store

PRICE = 39_000_000
MODEL = "gemini-2.5-flash-image"


@contextmanager
def counting_commits(store: Store) -> Iterator[list[int]]:
    """How many transactions were committed on the store's engine meanwhile (in `[0]`)."""
    commits = [0]

    def on_commit(connection: Any) -> None:
        commits[0] += 1

    event.listen(store.engine, "commit", on_commit)
    try:
        yield commits
    finally:
        event.remove(store.engine, "commit", on_commit)


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
