"""Two real `bananagate serve` processes sharing PostgreSQL and Redis behave as one gateway."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bananagate.store import KeyLimits, Store
from tests.conftest import Gateway, start_gateway, stop_gateway
from tests.metering.conftest import REDIS_URL, drop_pg_schema, new_pg_schema, redis_problem

FLASH = "/v1beta/models/gemini-2.5-flash-image:generateContent"
PRICE = 39_000_000
ADMIN = "ak-multiprocess-admin"


@dataclass
class Pair:
    gateways: list[Gateway]
    store: Store
    env: dict[str, str]
    root: Path


@contextmanager
def _pair(root: Path, **extra_env: str) -> Iterator[Pair]:
    problem = redis_problem()
    if problem:
        pytest.skip(problem)
    url, schema = new_pg_schema()
    prefix = f"bgtest:{os.urandom(5).hex()}:"
    env = {
        "BANANAGATE_DATABASE_URL": url,
        "BANANAGATE_REDIS_URL": REDIS_URL,
        "BANANAGATE_REDIS_PREFIX": prefix,
        "BANANAGATE_ADMIN_KEY": ADMIN,
        "BANANAGATE_LOG_LEVEL": "info",  # access lines too: they must never show a secret
        **extra_env,
    }
    gateways: list[Gateway] = []
    store = Store.open(url)
    try:
        gateways = [start_gateway(root / f"gw{i}", env=env) for i in range(2)]
        yield Pair(gateways, store, env, root)
    finally:
        for gw in gateways:
            if gw.process.poll() is None:
                stop_gateway(gw)
        store.close()
        drop_pg_schema(schema)
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    with _pair(tmp_path_factory.mktemp("pair")) as gateways:
        yield gateways


async def _burst(urls: list[str], secret: str, n: int, emulate: str | None = None) -> list[httpx.Response]:
    """`n` requests at once, alternating between the gateways."""
    headers = {"x-goog-api-key": secret}
    if emulate:
        headers["x-bananagate-emulate"] = emulate
    body = {"contents": [{"parts": [{"text": "A banana wearing sunglasses"}]}]}
    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        return await asyncio.gather(
            *(client.post(urls[i % len(urls)] + FLASH, json=body, headers=headers) for i in range(n))
        )


def _codes(responses: list[httpx.Response]) -> dict[int, int]:
    out: dict[int, int] = {}
    for r in responses:
        out[r.status_code] = out.get(r.status_code, 0) + 1
    return out


def test_budget_for_exactly_20_images(pair: Pair) -> None:
    record, secret = pair.store.keys.create_key("budget", limits=KeyLimits(budget_nanos=20 * PRICE))
    responses = asyncio.run(_burst([g.url for g in pair.gateways], secret, 80))
    assert _codes(responses) == {200: 20, 429: 60}
    served_by = {r.headers["x-request-id"] for r in responses if r.status_code == 200}
    rows = list(pair.store.ledger.rows(key_id=record.id))
    assert {r.request_id for r in rows} == served_by
    assert sum(r.cost_nanos for r in rows) == 20 * PRICE
    key = pair.store.keys.get_key("budget")
    assert key is not None and key.spent_nanos == 20 * PRICE and key.reserved_nanos == 0
    for gateway in pair.gateways:  # the access log names the key, never its secret
        assert secret not in gateway.log() and "key=budget" in gateway.log()


def test_rpm_limit_across_processes(pair: Pair) -> None:
    _, secret = pair.store.keys.create_key("rpm", limits=KeyLimits(rpm=20))
    responses = asyncio.run(_burst([g.url for g in pair.gateways], secret, 80))
    assert _codes(responses) == {200: 20, 429: 60}
    refused = next(r for r in responses if r.status_code == 429)
    assert "RetryInfo" in refused.text and "retry-after" in refused.headers


def test_concurrency_limit_across_processes(pair: Pair) -> None:
    _, secret = pair.store.keys.create_key("conc", limits=KeyLimits(max_concurrent=5))
    responses = asyncio.run(_burst([g.url for g in pair.gateways], secret, 80, emulate="delay=3"))
    assert _codes(responses) == {200: 5, 429: 75}


def test_kill_9_leaves_no_hold_and_no_unrecorded_answer(tmp_path: Path) -> None:
    ttl = 3.0
    env = {"BANANAGATE_RESERVATION_TTL_SECONDS": str(ttl), "BANANAGATE_SWEEP_INTERVAL_SECONDS": "1"}
    with _pair(tmp_path, **env) as pair:
        record, secret = pair.store.keys.create_key("crash", limits=KeyLimits(budget_nanos=100 * PRICE))
        victim, survivor = pair.gateways

        async def scenario(
            victim: Gateway, survivor: Gateway, secret: str
        ) -> list[httpx.Response | BaseException]:
            urls = [victim.url, survivor.url]
            headers = {"x-goog-api-key": secret, "x-bananagate-emulate": "delay=2"}
            body = {"contents": [{"parts": [{"text": "crash test"}]}]}
            async with httpx.AsyncClient(timeout=30) as client:
                calls = [
                    asyncio.ensure_future(client.post(urls[i % 2] + FLASH, json=body, headers=headers))
                    for i in range(20)
                ]
                await asyncio.sleep(1.0)  # all in flight, holds taken on both processes
                os.kill(victim.process.pid, signal.SIGKILL)
                return await asyncio.gather(*calls, return_exceptions=True)

        results = asyncio.run(scenario(victim, survivor, secret))
        victim.process.wait(timeout=10)
        ok = [r for r in results if isinstance(r, httpx.Response) and r.status_code == 200]
        assert len(ok) == 10  # the survivor's; the victim's clients saw their connection drop
        assert all(isinstance(r, BaseException) for r in results[0::2])
        restarted = start_gateway(tmp_path / "gw0-again", env=pair.env)
        pair.gateways.append(restarted)

        deadline = time.monotonic() + ttl + 10
        while pair.store.reservations.held() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert pair.store.reservations.held() == []
        key = pair.store.keys.get_key("crash")
        assert key is not None and key.reserved_nanos == 0
        rows = list(pair.store.ledger.rows(key_id=record.id))
        ids = [r.request_id for r in rows]
        assert len(ids) == len(set(ids))
        for response in ok:
            assert ids.count(response.headers["x-request-id"]) == 1
        assert key.spent_nanos == sum(r.cost_nanos for r in rows) == 10 * PRICE
        # The restarted process serves the same key and budget.
        again = httpx.post(
            restarted.url + FLASH,
            json={"contents": [{"parts": [{"text": "x"}]}]},
            headers={"x-goog-api-key": secret},
            timeout=30,
        )
        assert again.status_code == 200


def test_workers_share_one_sqlite_budget_and_metrics(tmp_path: Path) -> None:
    """`serve --workers 2` on the embedded defaults: the budget is exact across the workers
    (SQLite's conditional UPDATE), and /metrics adds up every worker's samples."""
    gateway = start_gateway(
        tmp_path / "workers", env={"BANANAGATE_LOG_LEVEL": "warning"}, args=("--workers", "2")
    )
    try:
        with Store.open(f"sqlite:///{tmp_path / 'workers' / 'bananagate.db'}") as store:
            record, secret = store.keys.create_key("w", limits=KeyLimits(budget_nanos=5 * PRICE))
            responses = asyncio.run(_burst([gateway.url], secret, 16))
            assert _codes(responses) == {200: 5, 429: 11}
            assert sum(r.cost_nanos for r in store.ledger.rows(key_id=record.id)) == 5 * PRICE
        metrics = httpx.get(gateway.url + "/metrics", timeout=10).text
        line = next(
            x
            for x in metrics.splitlines()
            if x.startswith("bananagate_requests_total{") and 'outcome="ok"' in x
        )
        assert line.endswith(" 5.0")
        assert (tmp_path / "workers" / "admin.key").stat().st_mode & 0o777 == 0o600
    finally:
        stop_gateway(gateway)
