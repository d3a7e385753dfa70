"""Every answer says how it was served: Server-Timing, cost, channel, attempts, the key's limits."""

from __future__ import annotations

import re

import httpx

from bananagate.server.timing import format_reset
from tests.guarantees.conftest import GENERATE, PRICE, STREAM, Rig, body
from tests.upstreams import google_error

TIMING = re.compile(r"^gateway;dur=\d+\.\d, upstream;dur=\d+\.\d(, backoff;dur=\d+\.\d)?$")


def test_generate_answers_carry_timing_cost_and_limits(fresh: Rig) -> None:
    _, secret = fresh.key(rpm=50, budget_nanos=3 * PRICE)
    with fresh.client(secret) as client:
        first = client.post(GENERATE, content=body())
        second = client.post(GENERATE, content=body())
    for response in (first, second):
        assert response.status_code == 200
        assert TIMING.match(response.headers["server-timing"]), response.headers["server-timing"]
        assert response.headers["x-bananagate-cost-usd"] == "0.039"
        assert response.headers["x-bananagate-channel"] in ("a", "b")
        assert response.headers["x-bananagate-attempts"] == "1"
        assert response.headers["x-ratelimit-limit-requests"] == "50"
        assert re.fullmatch(r"\d+(\.\d+)?m?s|\d+m\d+s", response.headers["x-ratelimit-reset-requests"])
    assert first.headers["x-ratelimit-remaining-requests"] == "49"
    assert second.headers["x-ratelimit-remaining-requests"] == "48"
    assert first.headers["x-bananagate-budget-remaining-usd"] == "0.078"
    assert second.headers["x-bananagate-budget-remaining-usd"] == "0.039"
    upstream_ms = float(first.headers["server-timing"].split("upstream;dur=")[1].split(",")[0])
    assert upstream_ms > 0


def test_unlimited_keys_get_no_limit_headers_and_errors_still_get_timing(fresh: Rig) -> None:
    _, secret = fresh.key()
    with fresh.client(secret) as client:
        ok = client.post(GENERATE, content=body())
        for upstream in fresh.upstreams:
            upstream.set_default(google_error(400, "Request contains an invalid argument."))
        failed = client.post(GENERATE, content=body())
    assert not any(h.startswith("x-ratelimit") or "budget" in h for h in ok.headers)
    assert failed.status_code == 400
    assert TIMING.match(failed.headers["server-timing"])
    assert failed.headers["x-bananagate-attempts"] == "1"


def test_rpm_refusals_carry_the_rate_limit_headers(fresh: Rig) -> None:
    _, secret = fresh.key(rpm=1)
    with fresh.client(secret) as client:
        assert client.post(GENERATE, content=body()).status_code == 200
        refused = client.post(GENERATE, content=body())
    assert refused.status_code == 429
    assert refused.headers["x-ratelimit-limit-requests"] == "1"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert "retry-after" in refused.headers


def test_streams_and_openai_routes_carry_them_too(fresh: Rig) -> None:
    _, secret = fresh.key(rpm=100)
    with fresh.client(secret) as client, client.stream("POST", STREAM, content=body()) as stream:
        stream.read()
    assert TIMING.match(stream.headers["server-timing"])
    assert stream.headers["x-ratelimit-remaining-requests"] == "99"
    assert "x-bananagate-cost-usd" not in stream.headers  # only known at the end of a stream
    with httpx.Client(base_url=fresh.gateway.url, headers={"Authorization": f"Bearer {secret}"}) as client:
        images = client.post("/v1/images/generations", json={"prompt": "A lighthouse", "n": 2}, timeout=30)
        chat = client.post(
            "/v1/chat/completions",
            json={"model": "gemini-2.5-flash-image", "messages": [{"role": "user", "content": "A kite"}]},
            timeout=30,
        )
        refused = client.post("/v1/images/generations", json={"prompt": "x", "size": "1x1"}, timeout=30)
    assert images.status_code == 200 and chat.status_code == 200
    assert images.headers["x-bananagate-cost-usd"] == "0.078"  # both images of n=2
    assert images.headers["x-bananagate-attempts"] == "2"
    assert images.headers["x-ratelimit-remaining-requests"] == "97"
    for response in (images, chat):
        assert TIMING.match(response.headers["server-timing"])
    assert refused.status_code == 400 and refused.headers["server-timing"].startswith("gateway;dur=")


def test_reset_durations_read_like_openais() -> None:
    assert format_reset(0.25) == "250ms"
    assert format_reset(12.5) == "12.5s"
    assert format_reset(59.9996) == "60s"
    assert format_reset(61) == "1m1s"
