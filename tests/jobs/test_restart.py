"""The embedded mode (`serve` alone, SQLite): restarts, graceful or not, lose no queued job."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import httpx

from bananagate.store import KeyLimits, Store
from tests.conftest import start_gateway, stop_gateway
from tests.jobs.conftest import FLASH_PRICE, App, fast_env, job_body, wait_until


def test_a_crash_loses_no_job(tmp_path: Path) -> None:
    data = tmp_path / "gw"
    env = fast_env(BANANAGATE_JOBS_CONCURRENCY="1")  # one at a time: the rest stay queued
    gateway = start_gateway(data, env=env)
    store = Store.open(f"sqlite:///{data / 'bananagate.db'}")
    try:
        key, secret = store.keys.create_key("r", limits=KeyLimits(budget_nanos=10 * FLASH_PRICE))
        headers = {"x-goog-api-key": secret, "x-bananagate-emulate": "delay=0.7"}
        names = [
            httpx.post(f"{gateway.url}/v1beta/jobs", json=job_body(f"Job {i}"), headers=headers).json()[
                "name"
            ]
            for i in range(4)
        ]
        ids = [name.removeprefix("jobs/") for name in names]

        def states() -> list[str]:
            return [job.state for i in ids if (job := store.jobs.get(i)) is not None]

        wait_until(lambda: "RUNNING" in states())
        os.kill(gateway.process.pid, signal.SIGKILL)  # mid-job: its lease is simply abandoned
        gateway.process.wait()
        assert len(states()) == 4 and "PENDING" in states()

        gateway = start_gateway(data, env=env)
        wait_until(lambda: states() == ["SUCCEEDED"] * 4, timeout=40, interval=0.3)
        rows = list(store.ledger.rows(key_id=key.id))
        assert sorted(r.request_id for r in rows) == sorted(f"job-{i}" for i in ids)
        record = store.keys.get_key_by_id(key.id)
        assert record is not None and record.spent_nanos == 4 * FLASH_PRICE and record.reserved_nanos == 0
    finally:
        stop_gateway(gateway)
        store.close()


def test_a_graceful_stop_puts_running_jobs_back(make_app: Any) -> None:
    first: App = make_app(jobs_concurrency=1)
    _, secret = first.store.keys.create_key("g")
    headers = first.headers(secret, "delay=3")
    names = [
        first.client.post("/v1beta/jobs", json=job_body(f"J{i}"), headers=headers).json()["name"]
        for i in range(2)
    ]
    ids = [name.removeprefix("jobs/") for name in names]
    wait_until(lambda: any((j := first.store.jobs.get(i)) and j.state == "RUNNING" for i in ids))
    first.stop()  # the app's shutdown, as on SIGTERM
    jobs = [first.store.jobs.get(i) for i in ids]
    assert [(j.state, j.attempts) for j in jobs if j] == [("PENDING", 0), ("PENDING", 0)]  # not counted

    # The same database, a new process: both run.
    second: App = make_app(database_url=first.settings.resolved_database_url(), jobs_concurrency=2)
    for name in names:
        assert second.wait_job(name, secret, timeout=20)["state"] == "SUCCEEDED"
