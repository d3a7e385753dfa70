"""The SDK sends an `Idempotency-Key` on every call and the same one on each retry of that call;
against a real gateway, a retry after a lost answer is then a replay, not a second charge."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from bananagate.client import AsyncClient, Client, RetryPolicy
from bananagate.client import sync as sync_module
from tests.client.test_request import OK_BODY
from tests.guarantees.conftest import PRICE, Rig

NO_WAIT = RetryPolicy(max_attempts=3, initial_delay=0.0, jitter=0.0)


def test_sync_client_reuses_one_key_across_its_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sync_module.time, "sleep", lambda seconds: None)
    seen: list[httpx.Request] = []
    statuses = [503, 503, 200, 200]

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status = statuses[len(seen) - 1]
        return httpx.Response(status, json=OK_BODY if status == 200 else {"error": {"code": status}})

    with Client(
        "sk-test", base_url="http://gw.test", retry=NO_WAIT, transport=httpx.MockTransport(handler)
    ) as client:
        client.generate("A kite")
        client.generate("A kite", headers={"Idempotency-Key": "mine"})
    keys = [r.headers["idempotency-key"] for r in seen]
    assert len(keys) == 4 and keys[0] == keys[1] == keys[2] and keys[3] == "mine" and keys[0] != "mine"


def test_async_client_reuses_one_key_across_its_retries() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) == 1:
            raise httpx.ReadTimeout("lost", request=request)
        return httpx.Response(200, json=OK_BODY)

    async def run() -> None:
        transport = httpx.MockTransport(handler)
        async with AsyncClient(
            "sk-test", base_url="http://gw.test", retry=NO_WAIT, transport=transport
        ) as client:
            await client.generate("A kite")
            await client.generate("A kite")

    asyncio.run(run())
    keys = [r.headers["idempotency-key"] for r in seen]
    assert keys[0] == keys[1] != keys[2]


def test_a_retry_after_a_lost_answer_is_a_replay(fresh: Rig) -> None:
    key_id, secret = fresh.key(budget_nanos=2 * PRICE)
    real = httpx.HTTPTransport()
    lost = [False]

    class LosesFirstAnswer(httpx.BaseTransport):
        """Delivers the request, then drops the gateway's answer on the floor once."""

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            response = real.handle_request(request)
            if not lost[0]:
                lost[0] = True
                response.read()
                raise httpx.ReadError("connection reset", request=request)
            return response

    policy = RetryPolicy(max_attempts=3, initial_delay=0.05, jitter=0.0)
    with Client(
        secret, base_url=fresh.gateway.url, auth="goog", retry=policy, transport=LosesFirstAnswer()
    ) as client:
        result = client.generate("A kite")
    assert result.attempts == 2
    assert fresh.upstream_calls() == 1
    rows = list(fresh.store.ledger.rows(key_id=key_id))
    assert sorted(r.outcome for r in rows) == ["ok", "replayed"]
    assert sum(r.cost_nanos for r in rows) == PRICE
