"""Separate `bananagate worker` processes sharing PostgreSQL and Redis with a `serve` that only
queues: every job runs exactly once, and a worker killed mid-job costs nothing extra."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import select

from bananagate.store import KeyLimits, Store
from bananagate.store.jobs_schema import JobRow
from tests.conftest import Gateway, start_gateway, stop_gateway
from tests.jobs.conftest import (
    SMALL,
    SMALL_PRICE,
    Worker,
    fast_env,
    job_body,
    ready,
    spawn_worker,
    stop_worker,
    wait_until,
)
from tests.metering.conftest import REDIS_URL, drop_pg_schema, new_pg_schema, redis_problem


@dataclass
class Cluster:
    gateway: Gateway
    workers: list[Worker]
    store: Store


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    problem = redis_problem()
    if problem:
        pytest.skip(problem)
    url, schema = new_pg_schema()
    root = tmp_path_factory.mktemp("cluster")
    env = fast_env(
        BANANAGATE_DATABASE_URL=url,
        BANANAGATE_REDIS_URL=REDIS_URL,
        BANANAGATE_REDIS_PREFIX=f"bgjobs:{os.urandom(4).hex()}:",
        BANANAGATE_JOBS_CONCURRENCY="8",
    )
    store = Store.open(url)
    gateway: Gateway | None = None
    workers: list[Worker] = []
    try:
        # This gateway only queues; the two workers run everything. All three start at once.
        workers = [spawn_worker(root / f"worker{i}", env) for i in range(2)]
        gateway = start_gateway(root / "serve", env={**env, "BANANAGATE_JOBS_WORKER": "false"})
        for worker in workers:
            ready(worker)
        yield Cluster(gateway, workers, store)
    finally:
        for worker in workers:
            stop_worker(worker)
        if gateway is not None:
            stop_gateway(gateway)
        store.close()
        drop_pg_schema(schema)


def _job_rows(store: Store, key_id: int) -> list[JobRow]:
    with store.jobs._session() as session:
        return list(session.scalars(select(JobRow).where(JobRow.key_id == key_id)))


async def _submit(url: str, secret: str, n: int) -> list[str]:
    async with httpx.AsyncClient(base_url=url, headers={"x-goog-api-key": secret}, timeout=60) as client:
        sem = asyncio.Semaphore(16)

        async def one(i: int) -> str:
            async with sem:
                response = await client.post("/v1beta/jobs", json=job_body(f"Banana number {i}", model=SMALL))
                response.raise_for_status()
                return str(response.json()["name"])

        return await asyncio.gather(*(one(i) for i in range(n)))


def _runs(workers: list[Worker]) -> Counter[str]:
    """How many times the workers' logs say each job was started."""
    found: Counter[str] = Counter()
    for worker in workers:
        found.update(re.findall(r"job ([0-9a-f]{32}): attempt", worker.log()))
    return found


def test_200_jobs_across_two_workers_run_once_each(cluster: Cluster) -> None:
    key, secret = cluster.store.keys.create_key("bulk", limits=KeyLimits(budget_nanos=1000 * SMALL_PRICE))
    names = asyncio.run(_submit(cluster.gateway.url, secret, 200))
    ids = {name.removeprefix("jobs/") for name in names}
    assert len(ids) == 200

    def all_done() -> bool:
        return all(row.state == "SUCCEEDED" for row in _job_rows(cluster.store, key.id))

    wait_until(all_done, timeout=90, interval=0.5)
    rows = _job_rows(cluster.store, key.id)
    assert {row.id for row in rows} == ids and all(row.attempts == 1 for row in rows)
    runs = _runs(cluster.workers)
    assert {job_id: runs[job_id] for job_id in ids} == dict.fromkeys(ids, 1)  # exactly once
    per_worker = [len(ids & set(_runs([w]))) for w in cluster.workers]
    assert all(n > 0 for n in per_worker), per_worker  # both took part
    ledger = list(cluster.store.ledger.rows(key_id=key.id))
    assert sorted(r.request_id for r in ledger) == sorted(f"job-{i}" for i in ids)
    assert all(r.outcome == "ok" and r.cost_nanos == SMALL_PRICE for r in ledger)
    record = cluster.store.keys.get_key_by_id(key.id)
    assert record is not None and record.spent_nanos == 200 * SMALL_PRICE and record.reserved_nanos == 0


def test_kill_9_mid_job_is_retried_elsewhere_and_charged_once(cluster: Cluster) -> None:
    key, secret = cluster.store.keys.create_key("crash", limits=KeyLimits(budget_nanos=10 * SMALL_PRICE))
    headers = {"x-goog-api-key": secret, "x-bananagate-emulate": "delay=4"}
    response = httpx.post(
        f"{cluster.gateway.url}/v1beta/jobs", json=job_body("A fragile banana", model=SMALL), headers=headers
    )
    job_id = response.json()["name"].removeprefix("jobs/")

    def running_owner() -> str | None:
        job = cluster.store.jobs.get(job_id)
        return job.lease_owner if job is not None and job.state == "RUNNING" else None

    owner = wait_until(running_owner, timeout=20)
    pid = int(owner.split(":")[1])
    (victim,) = [w for w in cluster.workers if w.process.pid == pid]
    (survivor,) = [w for w in cluster.workers if w is not victim]
    os.kill(pid, signal.SIGKILL)  # mid-call: nothing settled, the lease simply stops being renewed
    victim.process.wait()

    def finished() -> bool:
        job = cluster.store.jobs.get(job_id)
        return job is not None and job.done

    wait_until(finished, timeout=30, interval=0.2)
    job = cluster.store.jobs.get(job_id)
    assert job is not None and job.state == "SUCCEEDED" and job.attempts == 2
    assert f"job {job_id}: attempt 2" in survivor.log()
    (row,) = cluster.store.ledger.rows(key_id=key.id)
    assert row.request_id == f"job-{job_id}" and row.cost_nanos == SMALL_PRICE
    record = cluster.store.keys.get_key_by_id(key.id)
    assert record is not None and record.spent_nanos == SMALL_PRICE and record.reserved_nanos == 0
