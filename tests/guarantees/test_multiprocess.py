"""Two gateway processes sharing PostgreSQL, Redis and the kept-answers directory behave as one:
racing duplicates across them make one upstream call and one charge (acceptance 1), and a
conversation's affinity recorded by one is honoured by the other."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bananagate.store import KeyLimits, Store
from tests.channels.conftest import GOOGLE_KEY
from tests.conftest import Gateway, start_gateway, stop_gateway
from tests.guarantees.conftest import GENERATE, PRICE, body, burst, new_key, signing, two_channels
from tests.metering.conftest import REDIS_URL, drop_pg_schema, new_pg_schema, redis_problem
from tests.upstreams import FakeGoogle, Reply


@dataclass
class Pair:
    gateways: list[Gateway]
    store: Store
    a: FakeGoogle
    b: FakeGoogle


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    problem = redis_problem()
    if problem:
        pytest.skip(problem)
    url, schema = new_pg_schema()
    prefix = f"bgtest:{os.urandom(5).hex()}:"
    root: Path = tmp_path_factory.mktemp("pair")
    with (
        FakeGoogle(keys=[GOOGLE_KEY], name="a") as a,
        FakeGoogle(keys=[GOOGLE_KEY], name="b", colour=(10, 10, 240)) as b,
    ):
        config = root / "channels.toml"
        config.write_text(two_channels(a.url, b.url))
        env = {
            "BANANAGATE_DATABASE_URL": url,
            "BANANAGATE_REDIS_URL": REDIS_URL,
            "BANANAGATE_REDIS_PREFIX": prefix,
            "BANANAGATE_IDEMPOTENCY_DIR": str(root / "kept"),  # shared, as the README asks
            "BANANAGATE_CONSOLE": "false",
            "BANANAGATE_JOBS_WORKER": "false",
        }
        store = Store.open(url)
        gateways: list[Gateway] = []
        try:
            gateways = [
                start_gateway(root / f"gw{i}", env=env, args=("--config", str(config))) for i in range(2)
            ]
            yield Pair(gateways, store, a, b)  # type: ignore[arg-type]
        finally:
            for gateway in gateways:
                stop_gateway(gateway)
            store.close()
            drop_pg_schema(schema)
            import redis

            client = redis.Redis.from_url(REDIS_URL)
            keys = list(client.scan_iter(prefix + "*"))
            if keys:
                client.delete(*keys)
            client.close()


def test_duplicates_across_two_processes_make_one_call_and_one_charge(pair: Pair) -> None:
    record, secret = pair.store.keys.create_key("idem", limits=KeyLimits(budget_nanos=PRICE))
    for upstream in (pair.a, pair.b):
        upstream.reset()
        upstream.set_default(
            lambda request, up=upstream: Reply(200, up.normal_reply(request).body, delay=1.0)
        )  # type: ignore[misc]
    headers = {"x-goog-api-key": secret, "Idempotency-Key": new_key()}
    urls = [g.url for g in pair.gateways]
    responses = asyncio.run(burst(urls, headers, body(), 5))

    assert [r.status_code for r in responses] == [200] * 5, [r.text[:200] for r in responses]
    assert len({r.content for r in responses}) == 1
    assert len(pair.a.requests) + len(pair.b.requests) == 1
    rows = list(pair.store.ledger.rows(key_id=record.id))
    assert sorted(r.outcome for r in rows) == ["ok"] + ["replayed"] * 4
    assert sum(r.cost_nanos for r in rows) == PRICE
    key = pair.store.keys.get_key("idem")
    assert key is not None and key.spent_nanos == PRICE and key.reserved_nanos == 0
    for url in urls:  # a new key value on either process: the budget is gone
        refused = httpx.post(
            url + GENERATE, content=body(), headers={**headers, "Idempotency-Key": new_key()}
        )
        assert refused.status_code == 429 and refused.json()["error"]["status"] == "RESOURCE_EXHAUSTED"


def test_affinity_recorded_by_one_process_is_honoured_by_the_other(pair: Pair) -> None:
    _, secret = pair.store.keys.create_key("affine")
    for upstream in (pair.a, pair.b):
        upstream.reset()
        signing(upstream)
    first_url, second_url = (g.url + GENERATE for g in pair.gateways)
    headers = {"x-goog-api-key": secret}
    first = httpx.post(first_url, content=body("A red bicycle"), headers=headers, timeout=30)
    assert first.status_code == 200
    served_by = first.headers["x-bananagate-channel"]
    model_turn = first.json()["candidates"][0]["content"]
    turns = [{"role": "user", "parts": [{"text": "A red bicycle"}]}, model_turn]
    for _ in range(6):
        second = httpx.post(
            second_url,
            json={"contents": [*turns, {"role": "user", "parts": [{"text": "Make it blue"}]}]},
            headers=headers,
            timeout=30,
        )
        assert second.status_code == 200
        assert second.headers["x-bananagate-channel"] == served_by
        assert second.headers["x-bananagate-affinity"] == "kept"
