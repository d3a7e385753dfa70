"""Upstream faults: the client gets a correct answer or a clear error in the right envelope,
retries never charge twice, and nothing hangs.

Two sources of faults: the emulator's `x-bananagate-emulate` directives (what an application
developer would use), and `RawUpstream`, a Gemini-like server on raw sockets that resets
connections mid-body, sends truncated JSON or lying Content-Lengths, stalls and trickles.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
import pytest

from tests.conftest import Gateway
from tests.reliability.conftest import (
    BODY,
    GENERATE,
    PRICE_NANOS,
    STREAM,
    Behaviour,
    RawUpstream,
    assert_books_balance,
    assert_google_envelope,
    gateway_healthy,
    new_key,
    wait_for_ledger,
)

BUDGET = 100 * PRICE_NANOS


def _post(
    gateway: Gateway, secret: str, *, path: str = GENERATE, emulate: str | None = None, body: bytes = BODY
) -> httpx.Response:
    headers = {"x-goog-api-key": secret, "content-type": "application/json"}
    if emulate:
        headers["x-bananagate-emulate"] = emulate
    return httpx.post(gateway.url + path, content=body, headers=headers, timeout=30)


# --- the emulator's faults -------------------------------------------------------------------------


def test_429_storm_is_refused_fast_uncharged_and_the_server_stays_up(shared_gateway: Gateway) -> None:
    gateway = shared_gateway
    key_id, secret = new_key(gateway, "storm", budget_nanos=BUDGET)

    async def storm() -> list[httpx.Response]:
        headers = {"x-goog-api-key": secret, "x-bananagate-emulate": "status=429;retry-delay=3s"}
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
            return await asyncio.gather(
                *(client.post(GENERATE, content=BODY, headers=headers) for _ in range(20))
            )

    started = time.monotonic()
    responses = asyncio.run(storm())
    assert time.monotonic() - started < 20
    for response in responses:
        error = assert_google_envelope(response, 429)
        assert error["status"] == "RESOURCE_EXHAUSTED"
        assert response.headers["retry-after"] == "3"
    assert _post(gateway, secret).status_code == 200  # the storm left nothing behind
    rows = wait_for_ledger(gateway, key_id, 21)
    assert sorted(r.outcome for r in rows).count("error") == 20
    assert_books_balance(gateway, key_id, charged=PRICE_NANOS)


@pytest.mark.parametrize("status", [500, 503, 504])
def test_5xx_is_an_error_in_the_envelope_and_costs_nothing(shared_gateway: Gateway, status: int) -> None:
    gateway = shared_gateway
    key_id, secret = new_key(gateway, f"fivexx-{status}", budget_nanos=BUDGET)
    assert_google_envelope(_post(gateway, secret, emulate=f"status={status}"), status)
    # `times=1`: the same request fails once, then succeeds (a burst that passes). The prompt is
    # this test's own, as the emulator counts identical requests across the shared gateway.
    body = orjson.dumps({"contents": [{"parts": [{"text": f"burst {status}"}]}]})
    assert _post(gateway, secret, emulate="status=503;times=1", body=body).status_code == 503
    assert _post(gateway, secret, emulate="status=503;times=1", body=body).status_code == 200
    wait_for_ledger(gateway, key_id, 3)
    assert_books_balance(gateway, key_id, charged=PRICE_NANOS)


def test_stream_error_after_the_first_event_ends_the_stream_with_an_error_event(
    shared_gateway: Gateway,
) -> None:
    gateway = shared_gateway
    key_id, secret = new_key(gateway, "streamfail", budget_nanos=BUDGET)
    response = _post(gateway, secret, path=STREAM, emulate="stream-error-after=1")
    assert response.status_code == 200
    events = [orjson.loads(line[6:]) for line in response.text.split("\r\n") if line.startswith("data: ")]
    assert len(events) == 2 and "candidates" in events[0]
    assert events[-1]["error"]["code"] == 500 and events[-1]["error"]["status"] == "INTERNAL"
    rows = wait_for_ledger(gateway, key_id, 1)
    assert rows[0].outcome == "error" and rows[0].cost_nanos == 0
    assert_books_balance(gateway, key_id, charged=0)


def test_slow_emulator_answer_arrives_whole(shared_gateway: Gateway) -> None:
    gateway = shared_gateway
    key_id, secret = new_key(gateway, "slow", budget_nanos=BUDGET)
    response = _post(gateway, secret, path=STREAM, emulate="delay=0.5;event-delay=0.5")
    assert response.status_code == 200 and response.text.count("data: ") >= 2
    wait_for_ledger(gateway, key_id, 1)
    assert_books_balance(gateway, key_id, charged=PRICE_NANOS)


# --- a raw upstream that breaks HTTP -----------------------------------------------------------------


def test_reset_mid_body_is_retried_and_charged_once(raw_gateway: Gateway, raw_upstream: RawUpstream) -> None:
    key_id, secret = new_key(raw_gateway, "reset", budget_nanos=BUDGET)
    raw_upstream.enqueue(Behaviour("reset"))
    response = _post(raw_gateway, secret)
    assert response.status_code == 200, response.text
    assert response.headers["x-bananagate-attempts"] == "2"
    assert "served by raw" in response.text
    rows = wait_for_ledger(raw_gateway, key_id, 1)
    assert len(rows) == 1 and rows[0].attempts == 2 and rows[0].outcome == "ok"
    assert_books_balance(raw_gateway, key_id, charged=PRICE_NANOS)


@pytest.mark.parametrize("kind", ["reset", "short", "stall"])
def test_an_upstream_that_always_breaks_gives_a_clear_error(
    raw_gateway: Gateway, raw_upstream: RawUpstream, kind: str
) -> None:
    key_id, secret = new_key(raw_gateway, f"always-{kind}", budget_nanos=BUDGET)
    raw_upstream.default = Behaviour(kind)
    started = time.monotonic()
    response = _post(raw_gateway, secret)
    # Two attempts, each cut off by the 1 s read timeout at most: bounded, never hung.
    assert time.monotonic() - started < 8
    error = assert_google_envelope(response)
    assert response.status_code in (502, 503, 504)
    assert error["status"] in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
    assert "AIzaSy" not in response.text  # the upstream key never leaks into an error
    rows = wait_for_ledger(raw_gateway, key_id, 1)
    assert rows[0].outcome == "error" and rows[0].status == response.status_code
    assert_books_balance(raw_gateway, key_id, charged=0)
    gateway_healthy(raw_gateway)


def test_5xx_burst_then_recovery_is_charged_once(raw_gateway: Gateway, raw_upstream: RawUpstream) -> None:
    key_id, secret = new_key(raw_gateway, "burst", budget_nanos=BUDGET)
    raw_upstream.enqueue(Behaviour("status", 503))
    response = _post(raw_gateway, secret)
    assert response.status_code == 200 and response.headers["x-bananagate-attempts"] == "2"
    raw_upstream.enqueue(Behaviour("status", 500), Behaviour("status", 502))
    response = _post(raw_gateway, secret)
    assert_google_envelope(response)
    assert response.status_code in (500, 502)
    wait_for_ledger(raw_gateway, key_id, 2)
    assert_books_balance(raw_gateway, key_id, charged=PRICE_NANOS)


def test_upstream_429_storm_gives_429_and_nothing_is_charged(
    raw_gateway: Gateway, raw_upstream: RawUpstream
) -> None:
    key_id, secret = new_key(raw_gateway, "up429", budget_nanos=BUDGET)
    raw_upstream.default = Behaviour("status", 429)
    started = time.monotonic()
    response = _post(raw_gateway, secret)
    assert time.monotonic() - started < 8
    assert assert_google_envelope(response, 429)["status"] == "RESOURCE_EXHAUSTED"
    wait_for_ledger(raw_gateway, key_id, 1)
    assert_books_balance(raw_gateway, key_id, charged=0)


def test_trickling_answer_within_the_read_timeout_arrives_intact(
    raw_gateway: Gateway, raw_upstream: RawUpstream
) -> None:
    key_id, secret = new_key(raw_gateway, "trickle", budget_nanos=BUDGET)
    # ~1.5 KB of answer, 256 bytes every 0.2 s: slow, yet never 1 s without a byte.
    raw_upstream.enqueue(Behaviour("trickle", pace=0.2, chunk=256))
    response = _post(raw_gateway, secret)
    assert response.status_code == 200, response.text
    assert response.json()["candidates"][0]["content"]["parts"][0]["text"] == "served by raw"
    wait_for_ledger(raw_gateway, key_id, 1)
    assert_books_balance(raw_gateway, key_id, charged=PRICE_NANOS)


def test_endless_trickle_is_cut_at_the_request_deadline(
    raw_gateway: Gateway, raw_upstream: RawUpstream
) -> None:
    """A byte now and then never trips the read timeout; the request's deadline (the client's
    `X-Server-Timeout`, server/deadlines.py) still ends the call, and frees its worker."""
    key_id, secret = new_key(raw_gateway, "endless", budget_nanos=BUDGET)
    raw_upstream.enqueue(Behaviour("trickle", pace=0.2, chunk=8))  # ~40 s for the whole answer
    started = time.monotonic()
    response = httpx.post(
        raw_gateway.url + GENERATE,
        content=BODY,
        headers={"x-goog-api-key": secret, "x-server-timeout": "1.5"},
        timeout=30,
    )
    assert time.monotonic() - started < 5
    assert assert_google_envelope(response, 504)["status"] == "DEADLINE_EXCEEDED"
    wait_for_ledger(raw_gateway, key_id, 1)
    assert_books_balance(raw_gateway, key_id, charged=0)
    gateway_healthy(raw_gateway)


def test_truncated_json_with_200_is_an_error_and_not_charged(
    raw_gateway: Gateway, raw_upstream: RawUpstream
) -> None:
    key_id, secret = new_key(raw_gateway, "truncated", budget_nanos=BUDGET)
    raw_upstream.default = Behaviour("truncated")
    response = _post(raw_gateway, secret)
    wait_for_ledger(raw_gateway, key_id, 1)
    assert_books_balance(raw_gateway, key_id, charged=0)
    assert response.status_code >= 500
    assert_google_envelope(response)


def test_stream_reset_after_the_first_event_ends_with_an_error_event(
    raw_gateway: Gateway, raw_upstream: RawUpstream
) -> None:
    key_id, secret = new_key(raw_gateway, "sse-reset", budget_nanos=BUDGET)
    raw_upstream.default = Behaviour("sse", cut_after=1, pace=0.1)
    started = time.monotonic()
    response = _post(raw_gateway, secret, path=STREAM)
    assert time.monotonic() - started < 8
    assert response.status_code == 200
    events = [orjson.loads(line[6:]) for line in response.text.split("\r\n") if line.startswith("data: ")]
    assert "candidates" in events[0]
    assert "error" in events[-1] and events[-1]["error"]["code"] >= 500
    rows = wait_for_ledger(raw_gateway, key_id, 1)
    assert rows[0].outcome == "error"
    assert_books_balance(raw_gateway, key_id, charged=0)
    gateway_healthy(raw_gateway)
