"""Retries, failover, key cooldowns and circuits through a real gateway process (acceptance 2)."""

from __future__ import annotations

import time

from tests.channels.conftest import (
    FLASH_25,
    GOOGLE_KEY,
    GOOGLE_KEY_2,
    GatewayFactory,
    client_for,
    image_of,
    simple_body,
    toml_channel,
)
from tests.upstreams import FakeGoogle, google_error, rate_limited

URL = f"/v1beta/models/{FLASH_25}:generateContent"
FAST = "[routing]\nbackoff_base = 0.05\nbackoff_max = 0.2\n"


def test_two_503s_then_failover_to_the_next_channel(
    gateway_with: GatewayFactory, google: FakeGoogle, google_b: FakeGoogle
) -> None:
    config = (
        FAST
        + toml_channel("a", "gemini", google.url, keys=[GOOGLE_KEY], priority=10)
        + toml_channel("b", "gemini", google_b.url, keys=[GOOGLE_KEY], priority=0)
    )
    gateway = gateway_with(config)
    google.set_default(google_error(503))
    with client_for(gateway) as client:
        response = client.post(URL, content=simple_body())
    assert response.status_code == 200, response.text
    assert image_of(response.json()) == google_b.image
    assert response.headers["x-bananagate-attempts"] == "3"
    assert response.headers["x-bananagate-channel"] == "b"
    assert len(google.requests) == 2 and len(google_b.requests) == 1
    # The retry on A waited (backoff) before going again.
    assert google.requests[1].at > google.requests[0].at


def test_429_cools_that_key_while_the_other_serves(gateway_with: GatewayFactory, google: FakeGoogle) -> None:
    gateway = gateway_with(FAST + toml_channel("g", "gemini", google.url, keys=[GOOGLE_KEY, GOOGLE_KEY_2]))
    google.enqueue(rate_limited("2s"))
    with client_for(gateway) as client:
        first = client.post(URL, content=simple_body())
        assert first.status_code == 200, first.text
        assert first.headers["x-bananagate-attempts"] == "2"
        limited_key, other = (
            google.requests[0].header("x-goog-api-key"),
            google.requests[1].header("x-goog-api-key"),
        )
        assert limited_key != other
        cooled_at = time.monotonic()
        during = []
        while time.monotonic() - cooled_at < 1.5:
            assert client.post(URL, content=simple_body()).status_code == 200
            during.append(google.requests[-1].header("x-goog-api-key"))
        assert len(during) >= 3 and set(during) == {other}
        time.sleep(max(0.0, 2.2 - (time.monotonic() - cooled_at)))
        after = []
        for _ in range(2):
            assert client.post(URL, content=simple_body()).status_code == 200
            after.append(google.requests[-1].header("x-goog-api-key"))
    assert limited_key in after  # back in rotation once its retryDelay is over


def test_open_circuit_skips_the_channel_and_recovers(
    gateway_with: GatewayFactory, google: FakeGoogle, google_b: FakeGoogle
) -> None:
    routing = "[routing]\nattempts_per_channel = 1\ncircuit_failures = 2\ncircuit_cooloff = 1.0\n"
    config = (
        routing
        + toml_channel("a", "gemini", google.url, keys=[GOOGLE_KEY], priority=1)
        + toml_channel("b", "gemini", google_b.url, keys=[GOOGLE_KEY])
    )
    gateway = gateway_with(config)
    google.set_default(google_error(500, "An internal error has occurred."))
    with client_for(gateway) as client:
        for _ in range(2):  # two failures on A open its circuit
            response = client.post(URL, content=simple_body())
            assert response.headers["x-bananagate-channel"] == "b"
            assert response.headers["x-bananagate-attempts"] == "2"
        opened = time.monotonic()
        response = client.post(URL, content=simple_body())
        assert response.headers["x-bananagate-attempts"] == "1"  # A skipped, not tried
        assert response.headers["x-bananagate-channel"] == "b"
        assert len(google.requests) == 2
        google.set_default(None)  # A is healthy again
        time.sleep(max(0.0, 1.1 - (time.monotonic() - opened)))
        response = client.post(URL, content=simple_body())  # the half-open trial
        assert response.headers["x-bananagate-channel"] == "a"
        assert image_of(response.json()) == google.image
        response = client.post(URL, content=simple_body())
        assert response.headers["x-bananagate-channel"] == "a"
    assert len(google.requests) == 4


def test_max_concurrent_holds_extra_calls_until_a_slot_frees(
    gateway_with: GatewayFactory, google: FakeGoogle
) -> None:
    import concurrent.futures
    import itertools

    import orjson

    from tests.upstreams import Reply, gemini_answer

    gateway = gateway_with(
        FAST + toml_channel("g", "gemini", google.url, keys=[GOOGLE_KEY], max_concurrent=1)
    )
    body = orjson.dumps(gemini_answer(FLASH_25, google.image))
    google.set_default(Reply(200, body, delay=0.6))

    def call() -> int:
        with client_for(gateway) as client:
            return client.post(URL, content=simple_body()).status_code

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        statuses = list(pool.map(lambda _: call(), range(3)))
    assert statuses == [200, 200, 200]
    # One call at a time reached the upstream: each began after the one before had its answer.
    starts = sorted(r.at for r in google.requests)
    assert len(starts) == 3
    assert all(later - earlier >= 0.55 for earlier, later in itertools.pairwise(starts))
