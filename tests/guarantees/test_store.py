"""The idempotency and affinity tables on SQLite and PostgreSQL: claims race safely, leases run out,
kept answers expire."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bananagate.store import AnswerFiles, Claim, KeptAnswer, Store

H = "a" * 64
F1, F2 = "1" * 64, "2" * 64


def test_one_claim_wins_a_race(store: Store) -> None:
    results: list[Claim | KeptAnswer] = []

    def claim() -> None:
        results.append(store.idempotency.claim(1, H, F1, "rid", 30))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(isinstance(r, Claim) for r in results) == 1
    assert all(
        isinstance(r, KeptAnswer) and r.state == "running" for r in results if not isinstance(r, Claim)
    )
    # Another API key has its own namespace.
    assert isinstance(store.idempotency.claim(2, H, F2, "rid", 30), Claim)


def test_complete_replays_release_frees(store: Store) -> None:
    claim = store.idempotency.claim(1, H, F1, "rid-1", 30)
    assert isinstance(claim, Claim)
    headers = {"content-type": "application/json"}
    assert store.idempotency.complete(
        claim, status=200, headers=headers, body=b"{}", body_file=None, body_size=2, retention_seconds=60
    )
    kept = store.idempotency.claim(1, H, F2, "rid-2", 30)
    assert isinstance(kept, KeptAnswer) and kept.state == "done" and kept.fingerprint == F1
    assert kept.body == b"{}" and kept.headers == headers and kept.status == 200

    other = store.idempotency.claim(1, "b" * 64, F1, "rid-3", 30)
    assert isinstance(other, Claim) and store.idempotency.release(other)
    assert isinstance(store.idempotency.claim(1, "b" * 64, F1, "rid-4", 30), Claim)


def test_a_dead_processs_claim_is_taken_over_after_its_lease(store: Store) -> None:
    now = datetime.now(UTC)
    dead = store.idempotency.claim(1, H, F1, "rid-1", 30, now=now - timedelta(seconds=60))
    assert isinstance(dead, Claim)
    assert store.idempotency.renew([dead], 30, now=now - timedelta(seconds=50)) == 1
    taken = store.idempotency.claim(1, H, F1, "rid-2", 30, now=now)
    assert isinstance(taken, Claim) and taken.id == dead.id and taken.owner != dead.owner
    # The dead owner can neither complete nor release what is no longer its claim.
    assert not store.idempotency.complete(
        dead, status=200, headers={}, body=b"", body_file=None, body_size=0, retention_seconds=60
    )
    assert not store.idempotency.release(dead)
    # A different request never takes a key over.
    other = store.idempotency.claim(1, H, F2, "rid-3", 30, now=now + timedelta(seconds=120))
    assert isinstance(other, KeptAnswer)


def test_kept_answers_expire_and_are_swept(store: Store, tmp_path: Path) -> None:
    files = AnswerFiles(tmp_path / "kept")
    claim = store.idempotency.claim(1, H, F1, "rid", 30)
    assert isinstance(claim, Claim)
    name = files.write(b"x" * 100)
    store.idempotency.complete(
        claim, status=200, headers={}, body=None, body_file=name, body_size=100, retention_seconds=10
    )
    assert files.read(name, 100) == b"x" * 100 and files.read(name, 99) is None
    later = datetime.now(UTC) + timedelta(seconds=11)
    assert store.idempotency.sweep(now=later) == [name]
    assert isinstance(store.idempotency.claim(1, H, F2, "rid", 30, now=later), Claim)


def test_affinity_keeps_the_newest_channel_until_expiry(store: Store) -> None:
    store.affinity.remember(["d1", "d2", "d1"], "a", 60)
    store.affinity.remember(["d2"], "b", 60)
    assert store.affinity.lookup(["zz", "d2", "d1"]) == "b"
    assert store.affinity.lookup(["d1"]) == "a"
    assert store.affinity.lookup(["zz"]) is None
    later = datetime.now(UTC) + timedelta(seconds=61)
    assert store.affinity.lookup(["d1"], now=later) is None
    assert store.affinity.sweep(now=later) == 2
