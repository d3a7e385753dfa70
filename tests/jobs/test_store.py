"""The queue in the database, on SQLite and PostgreSQL: claims, leases, money, batches, sweeps."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bananagate.store import KeyLimits, LedgerRow, NewJob, Store, Submission
from tests.metering.conftest import drop_pg_schema, new_pg_schema

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
HOLD = 39_000_000


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        with Store.open(f"sqlite:///{tmp_path / 'jobs.db'}") as opened:
            yield opened
        return
    url, schema = new_pg_schema()
    try:
        with Store.open(url) as opened:
            yield opened
    finally:
        drop_pg_schema(schema)


def _sub(key_id: int, name: str = "k", **extra: object) -> Submission:
    values: dict[str, object] = {
        "key_id": key_id,
        "key_name": name,
        "model": "gemini-2.5-flash-image",
        "max_attempts": 3,
        "expires_in": 3600,
        "hold_margin": 3600,
        **extra,
    }
    return Submission(**values)  # type: ignore[arg-type]


def _jobs(n: int, hold: int = 0) -> list[NewJob]:
    return [NewJob(body=b'{"contents": []}', hold_nanos=hold) for _ in range(n)]


def test_claims_are_disjoint_and_ordered(store: Store) -> None:
    key, _ = store.keys.create_key("k")
    ids = []
    for i in range(30):
        ids += store.jobs.submit(_sub(key.id), _jobs(1), now=NOW + timedelta(seconds=i)) or []
    got: dict[str, list[str]] = {}

    def take(owner: str) -> None:
        mine: list[str] = []
        while batch := store.jobs.claim(owner, 3, 60, now=NOW + timedelta(minutes=1)):
            mine += [c.record.id for c in batch]
        got[owner] = mine

    threads = [threading.Thread(target=take, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [job_id for mine in got.values() for job_id in mine]
    assert sorted(claimed) == sorted(ids)  # every job once, none twice
    assert len(set(claimed)) == len(claimed)
    first = store.jobs.get(ids[0])
    assert first is not None and first.state == "RUNNING" and first.attempts == 1


def test_expired_lease_is_claimed_again_and_attempts_run_out(store: Store) -> None:
    key, _ = store.keys.create_key("k")
    (job_id,) = store.jobs.submit(_sub(key.id, max_attempts=2), _jobs(1), now=NOW) or []
    assert [c.record.id for c in store.jobs.claim("a", 5, 10, now=NOW)] == [job_id]
    assert store.jobs.claim("b", 5, 10, now=NOW + timedelta(seconds=5)) == []  # lease still live
    assert store.jobs.heartbeat("a", [job_id], 10, now=NOW + timedelta(seconds=8)) == set()
    assert store.jobs.claim("b", 5, 10, now=NOW + timedelta(seconds=15)) == []  # renewed at 8 s
    again = store.jobs.claim("b", 5, 10, now=NOW + timedelta(seconds=19))
    assert [c.record.attempts for c in again] == [2]
    # The dead owner can no longer touch it; the live one can.
    assert store.jobs.requeue("a", [job_id]) == 0
    # Out of attempts, a lost job is not claimed again: the sweep fails it.
    later = NOW + timedelta(seconds=40)
    assert store.jobs.claim("c", 5, 10, now=later) == []
    report = store.jobs.sweep(3600, now=later)
    assert report.lost == 1
    job = store.jobs.get(job_id)
    assert job is not None and job.state == "FAILED" and job.error and job.error["status"] == "INTERNAL"
    row = store.ledger.get(f"job-{job_id}")
    assert row is not None and row.outcome == "error" and row.cost_nanos == 0


def test_requeue_without_counting_and_deferral(store: Store) -> None:
    key, _ = store.keys.create_key("k")
    (job_id,) = store.jobs.submit(_sub(key.id), _jobs(1), now=NOW) or []
    store.jobs.claim("a", 1, 10, now=NOW)
    assert store.jobs.requeue("a", [job_id], delay=30, now=NOW) == 1
    assert store.jobs.claim("a", 1, 10, now=NOW + timedelta(seconds=10)) == []
    (claimed,) = store.jobs.claim("a", 1, 10, now=NOW + timedelta(seconds=31))
    assert claimed.record.attempts == 1  # the deferred run did not count
    assert store.jobs.requeue("b", None) == 0  # a stopping worker gives back only its own
    assert store.jobs.requeue("a", None) == 1


def test_per_key_concurrency_in_claims(store: Store) -> None:
    capped, _ = store.keys.create_key("capped", limits=KeyLimits(max_concurrent=2))
    free, _ = store.keys.create_key("free")
    store.jobs.submit(_sub(capped.id, "capped"), _jobs(5), now=NOW)
    store.jobs.submit(_sub(free.id, "free"), _jobs(2), now=NOW + timedelta(seconds=1))
    first = store.jobs.claim("a", 10, 60, now=NOW + timedelta(seconds=2))
    keys = [c.record.key_id for c in first]
    assert keys.count(capped.id) == 2 and keys.count(free.id) == 2
    assert store.jobs.claim("b", 10, 60, now=NOW + timedelta(seconds=3)) == []
    store.jobs.complete(first[0].record.id, b"{}", status=200, cost_nanos=0, now=NOW + timedelta(seconds=4))
    more = store.jobs.claim("b", 10, 60, now=NOW + timedelta(seconds=5))
    assert len(more) == (1 if first[0].record.key_id == capped.id else 0)


def test_hold_taken_at_submit_released_by_cancel_and_refused_past_budget(store: Store) -> None:
    key, _ = store.keys.create_key("b", limits=KeyLimits(budget_nanos=3 * HOLD))
    assert store.jobs.submit(_sub(key.id), _jobs(4, HOLD), now=NOW) is None  # all or nothing
    assert store.jobs.get_batch("0" * 32) is None
    ids = store.jobs.submit(_sub(key.id), _jobs(3, HOLD), now=NOW) or []
    record = store.keys.get_key_by_id(key.id)
    assert record is not None and record.reserved_nanos == 3 * HOLD
    assert store.jobs.submit(_sub(key.id), _jobs(1, HOLD), now=NOW) is None
    assert store.jobs.cancel(key.id, ids[0], now=NOW)
    record = store.keys.get_key_by_id(key.id)
    assert record is not None and record.reserved_nanos == 2 * HOLD and record.spent_nanos == 0
    row = store.ledger.get(f"job-{ids[0]}")
    assert row is not None and row.outcome == "cancelled" and row.status == 499
    assert not store.jobs.cancel(key.id, ids[0])  # already ended
    # A running job is only flagged; its worker sees the flag with its next heartbeat.
    (running,) = store.jobs.claim("w", 1, 60, now=NOW)
    assert store.jobs.cancel(key.id, running.record.id, now=NOW)
    assert store.jobs.heartbeat("w", [running.record.id], 60, now=NOW) == {running.record.id}


def test_a_charged_job_is_not_charged_again(store: Store) -> None:
    key, _ = store.keys.create_key("c", limits=KeyLimits(budget_nanos=5 * HOLD))
    (job_id,) = store.jobs.submit(_sub(key.id), _jobs(1, HOLD), now=NOW) or []
    store.jobs.claim("a", 1, 1, now=NOW)
    # Worker a settles (the pipeline's ledger write), then dies before storing the answer.
    from bananagate.store import Hold

    charged = LedgerRow(f"job-{job_id}", key.id, "c", "gemini-2.5-flash-image", 200, "ok", cost_nanos=HOLD)
    assert store.ledger.record(charged, Hold(job_id, key.id, HOLD))
    (again,) = store.jobs.claim("b", 1, 60, now=NOW + timedelta(seconds=5))
    assert again.record.attempts == 2
    assert not store.ledger.record(charged, Hold(job_id, key.id, HOLD))  # b's settle: a no-op
    assert store.jobs.complete(job_id, b'{"candidates": []}', status=200, cost_nanos=HOLD)
    record = store.keys.get_key_by_id(key.id)
    assert record is not None and record.spent_nanos == HOLD and record.reserved_nanos == 0
    assert len(list(store.ledger.rows(key_id=key.id))) == 1


def test_batch_finishes_once_with_its_webhook_and_results_in_order(store: Store) -> None:
    key, _ = store.keys.create_key("k")
    sub = _sub(key.id, webhook_url="http://hook.example/b", display_name="n")
    items = [NewJob(body=b"{}", metadata={"key": f"m{i}"}) for i in range(3)]
    ids = store.jobs.submit(sub, items, batch_id="b" * 32, now=NOW) or []
    claimed = store.jobs.claim("w", 3, 60, now=NOW)
    assert {c.record.batch_index for c in claimed} == {0, 1, 2}
    for i, job_id in enumerate(reversed(ids)):
        if i == 1:
            store.jobs.finish(job_id, "FAILED", status=400, error={"code": 400, "message": "x"}, now=NOW)
        else:
            store.jobs.complete(job_id, f'{{"n": {i}}}'.encode(), status=200, cost_nanos=10, now=NOW)
        batch = store.jobs.get_batch("b" * 32)
        assert batch is not None and batch.done == (i == 2)
    batch = store.jobs.get_batch("b" * 32)
    assert batch is not None and batch.counts == {"SUCCEEDED": 2, "FAILED": 1} and batch.cost_nanos == 20
    items_out = store.jobs.batch_items("b" * 32)
    assert [item.metadata for item, _ in items_out] == [{"key": "m0"}, {"key": "m1"}, {"key": "m2"}]
    assert [body for _, body in items_out] == [b'{"n": 2}', None, b'{"n": 0}']
    webhook = store.jobs.webhooks.of(f"batches/{'b' * 32}")
    assert (
        webhook is not None and webhook.event == "batch.succeeded" and webhook.url == "http://hook.example/b"
    )
    assert store.jobs.webhooks.of(f"jobs/{ids[0]}") is None  # items have no webhooks of their own


def test_sweep_expires_waiting_jobs_and_purges_old_results(store: Store) -> None:
    key, _ = store.keys.create_key("k", limits=KeyLimits(budget_nanos=HOLD))
    (waiting,) = store.jobs.submit(_sub(key.id, expires_in=60), _jobs(1, HOLD), now=NOW) or []
    report = store.jobs.sweep(3600, now=NOW + timedelta(seconds=61))
    assert report.expired == 1
    job = store.jobs.get(waiting)
    assert (
        job is not None and job.state == "FAILED" and job.error and job.error["status"] == "DEADLINE_EXCEEDED"
    )
    record = store.keys.get_key_by_id(key.id)
    assert record is not None and record.reserved_nanos == 0
    assert store.jobs.sweep(3600, now=NOW + timedelta(hours=2)).purged == 1
    assert store.jobs.get(waiting) is None
