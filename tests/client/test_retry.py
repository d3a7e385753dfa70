"""Retries: the pure policy, then real faults injected by the emulator."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from bananagate.client import (
    APIConnectionError,
    APITimeoutError,
    AsyncClient,
    Client,
    InvalidRequestError,
    RateLimitError,
    RetryPolicy,
    ServerError,
)
from bananagate.client import sync as sync_module
from bananagate.client.retry import RetryState
from tests.client.conftest import FAST_MODEL
from tests.client.test_request import OK_BODY
from tests.conftest import Gateway

FAST = {"model": FAST_MODEL, "image_size": "512"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_backoff_is_exponential_capped_and_jittered() -> None:
    policy = RetryPolicy(
        max_attempts=6, initial_delay=1.0, multiplier=2.0, max_delay=5.0, jitter=0.5, max_elapsed=None
    )
    state = RetryState(policy, clock=FakeClock(), rand=lambda: 0.0)
    delays = []
    for _ in range(5):
        state.start_attempt()
        delays.append(state.delay_after_status(503))
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0]
    state.start_attempt()
    assert state.delay_after_status(503) is None  # sixth attempt was the last
    jittered = RetryState(policy, clock=FakeClock(), rand=lambda: 0.999)
    jittered.start_attempt()
    assert 0.5 <= (jittered.delay_after_status(503) or 0) < 0.51


def test_server_delay_wins_and_budget_caps_total_time() -> None:
    clock = FakeClock()
    state = RetryState(RetryPolicy(max_elapsed=10.0), clock=clock, rand=lambda: 0.0)
    state.start_attempt()
    assert state.delay_after_status(429, retry_after=7.0) == 7.0
    clock.now += 7.0
    state.start_attempt()
    assert state.delay_after_status(429, retry_after=7.0) is None  # 14 s > 10 s budget


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 501])
def test_other_4xx_are_never_retried(status: int) -> None:
    state = RetryState(RetryPolicy(), rand=lambda: 0.0)
    state.start_attempt()
    assert state.delay_after_status(status, retry_after=1.0) is None


def flaky(
    *outcomes: Callable[[httpx.Request], httpx.Response],
) -> tuple[list[httpx.Request], httpx.MockTransport]:
    """A transport answering with each outcome in turn, then 200 forever."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) <= len(outcomes):
            return outcomes[len(seen) - 1](request)
        return httpx.Response(200, json=OK_BODY)

    return seen, httpx.MockTransport(handler)


def raise_(exc: Exception) -> Callable[[httpx.Request], httpx.Response]:
    def go(request: httpx.Request) -> httpx.Response:
        raise exc

    return go


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    recorded: list[float] = []
    monkeypatch.setattr(sync_module.time, "sleep", recorded.append)
    return recorded


def test_dropped_connections_and_retry_after_header(sleeps: list[float]) -> None:
    seen, transport = flaky(
        raise_(httpx.RemoteProtocolError("Server disconnected without sending a response.")),
        raise_(httpx.ConnectError("connection refused")),
        lambda r: httpx.Response(503, headers={"Retry-After": "9"}, text="overloaded"),
    )
    with Client(
        "k", base_url="http://gw", transport=transport, retry=RetryPolicy(max_attempts=4, jitter=0)
    ) as client:
        result = client.generate("x")
    assert len(seen) == 4 and result.attempts == 4
    assert sleeps == [1.0, 2.0, 9.0]  # backoff, backoff, then the server's Retry-After


def test_timeouts_retry_until_the_cap(sleeps: list[float]) -> None:
    seen, transport = flaky(*[raise_(httpx.ReadTimeout("timed out"))] * 5)
    with (
        Client("k", base_url="http://gw", transport=transport, max_attempts=3) as client,
        pytest.raises(APITimeoutError) as info,
    ):
        client.generate("x")
    assert len(seen) == 3 and info.value.attempts == 3 and len(sleeps) == 2


def test_retries_can_be_disabled(sleeps: list[float]) -> None:
    seen, transport = flaky(raise_(httpx.ConnectError("refused")))
    with (
        Client("k", base_url="http://gw", transport=transport, retry=RetryPolicy.none()) as client,
        pytest.raises(APIConnectionError),
    ):
        client.generate("x")
    assert len(seen) == 1 and sleeps == []


# --- against the emulator ------------------------------------------------------------------------


def test_429_with_retry_delay_is_retried_after_it_then_succeeds(
    client: Client, unique: Callable[[str], str]
) -> None:
    started = time.monotonic()
    result = client.generate(unique("a fox [emulate: status=429; retry-delay=1s; times=1]"), **FAST)
    waited = time.monotonic() - started
    assert result.attempts == 2 and result.image is not None
    assert waited >= 1.0 and result.elapsed >= 1.0


async def test_async_429_is_retried_too(gateway: Gateway, unique: Callable[[str], str]) -> None:
    async with AsyncClient(gateway.key, base_url=gateway.url) as aclient:
        started = time.monotonic()
        result = await aclient.generate(
            unique("an owl [emulate: status=429; retry-delay=1s; times=1]"), **FAST
        )
    assert result.attempts == 2 and time.monotonic() - started >= 1.0


def test_400_is_not_retried(client: Client, unique: Callable[[str], str]) -> None:
    prompt = unique("a newt [emulate: status=400; times=1]")
    with pytest.raises(InvalidRequestError) as info:
        client.generate(prompt, **FAST)
    assert info.value.attempts == 1 and info.value.code == "INVALID_ARGUMENT"
    # The fault was one-shot: had the client retried, the call above would have succeeded.
    assert client.generate(prompt, **FAST).attempts == 1


def test_attempt_cap_holds(gateway: Gateway, unique: Callable[[str], str]) -> None:
    prompt = unique("a yak [emulate: status=503; times=3]")
    policy = RetryPolicy(max_attempts=3, initial_delay=0.05, max_delay=0.1)
    with (
        Client(gateway.key, base_url=gateway.url, retry=policy) as capped,
        pytest.raises(ServerError) as info,
    ):
        capped.generate(prompt, **FAST)
    assert info.value.attempts == 3 and info.value.status == 503
    # Exactly three requests reached the server: the fourth identical one is past `times=3`.
    with Client(gateway.key, base_url=gateway.url, retry=RetryPolicy.none()) as once:
        assert once.generate(prompt, **FAST).image is not None


def test_total_time_budget_gives_up_instead_of_sleeping_past_it(
    gateway: Gateway, unique: Callable[[str], str]
) -> None:
    policy = RetryPolicy(max_elapsed=0.5)
    with (
        Client(gateway.key, base_url=gateway.url, retry=policy) as client,
        pytest.raises(RateLimitError) as info,
    ):
        client.generate(unique("a gnu [emulate: status=429; retry-delay=3s; times=1]"), **FAST)
    assert info.value.attempts == 1 and info.value.retry_after == 3.0


def test_slow_answers_time_out_and_are_retried(gateway: Gateway, unique: Callable[[str], str]) -> None:
    policy = RetryPolicy(max_attempts=2, initial_delay=0.05)
    with (
        Client(gateway.key, base_url=gateway.url, timeout=0.3, retry=policy) as client,
        pytest.raises(APITimeoutError) as info,
    ):
        client.generate(unique("a sloth [emulate: delay=2]"), **FAST)
    assert info.value.attempts == 2
