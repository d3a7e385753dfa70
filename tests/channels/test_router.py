"""The router driven directly (in process) against the loopback upstreams."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
import pytest

from bananagate.config import ChannelConfig, GatewayConfig, RoutingConfig
from bananagate.protocol.catalog import find_model
from bananagate.protocol.validation import parse_and_check
from bananagate.providers.base import Call, Method, UpstreamError
from bananagate.server.registry import ChannelRegistry
from bananagate.server.routing import ModelRouter
from tests.channels.conftest import FLASH_25, GOOGLE_KEY, image_of, simple_body
from tests.conftest import free_port
from tests.upstreams import FakeGoogle, Reply, StreamReply, google_error, rate_limited

FAST = {"backoff_base": 0.02, "backoff_max": 0.1}


def channel(name: str, url: str, keys: list[str] | None = None, **fields: Any) -> ChannelConfig:
    return ChannelConfig(name=name, kind="gemini", base_url=url, keys=keys or [GOOGLE_KEY], **fields)


def router_for(*channels: ChannelConfig, **routing: Any) -> ModelRouter:
    config = GatewayConfig(channels=channels, routing=RoutingConfig(**{**FAST, **routing}))
    return ModelRouter(registry=ChannelRegistry(config))


def make_call(
    body: bytes | None = None, model_id: str = FLASH_25, method: Method = "generateContent"
) -> Call:
    model = find_model(model_id)
    assert model is not None
    raw = body or simple_body()
    return Call(model=model, model_id=model_id, method=method, body=raw, request=parse_and_check(raw, model))


async def test_query_auth_puts_the_key_in_the_url_and_never_in_logs(
    google: FakeGoogle, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    router = router_for(
        ChannelConfig(
            name="q", kind="gemini-compatible", base_url=google.url, auth="query", keys=[GOOGLE_KEY]
        )
    )
    try:
        google.enqueue(google_error(503))
        answer = await router.generate(call := make_call())
    finally:
        await router.aclose()
    assert call.attempts == 2 and call.channel == "q"
    seen = google.requests[-1]
    assert seen.query == {"key": GOOGLE_KEY}
    assert seen.header("x-goog-api-key") is None and seen.header("authorization") is None
    assert image_of(orjson.loads(answer.body)) == google.image
    assert answer.usage.candidates_image_tokens == 1290 and answer.image_count == 1
    assert answer.finish_reason == "STOP"
    assert GOOGLE_KEY not in caplog.text
    assert "503" in caplog.text  # the failed attempt was logged


async def test_a_short_retry_delay_on_the_only_key_is_waited_out(google: FakeGoogle) -> None:
    router = router_for(channel("g", google.url))
    google.enqueue(rate_limited("0.5s"))
    try:
        await router.generate(call := make_call())
    finally:
        await router.aclose()
    assert call.attempts == 2
    assert google.requests[1].at - google.requests[0].at >= 0.45


async def test_a_long_retry_delay_goes_back_to_the_client_and_the_key_stays_cool(google: FakeGoogle) -> None:
    router = router_for(channel("g", google.url))
    google.enqueue(rate_limited("26s"))
    try:
        with pytest.raises(UpstreamError) as first:
            await router.generate(make_call())
        assert first.value.error.code == 429
        assert first.value.retry_after == 26
        with pytest.raises(UpstreamError) as second:
            await router.generate(make_call())
    finally:
        await router.aclose()
    assert second.value.error.code == 429 and len(google.requests) == 1
    (retry,) = second.value.error.details
    assert retry["@type"].endswith("RetryInfo") and 25 <= float(retry["retryDelay"].rstrip("s")) <= 26


async def test_rejected_key_is_set_aside_and_never_shown(google: FakeGoogle) -> None:
    router = router_for(channel("g", google.url, keys=["AIza-revoked-key-000000", GOOGLE_KEY]))
    try:
        await router.generate(call := make_call())
        assert call.attempts == 2  # the bad key, then the good one
        for _ in range(3):
            await router.generate(make_call())
    finally:
        await router.aclose()
    keys = [r.header("x-goog-api-key") for r in google.requests]
    assert keys.count("AIza-revoked-key-000000") == 1


async def test_only_a_rejected_key_is_a_gateway_error_naming_the_channel(google: FakeGoogle) -> None:
    router = router_for(channel("g", google.url, keys=["AIza-wrong-key-123456789"]))
    try:
        with pytest.raises(UpstreamError) as raised:
            await router.generate(call := make_call())
    finally:
        await router.aclose()
    error = raised.value.error
    assert error.code == 502 and "'g' rejected its key" in error.message
    assert "AIza-wrong" not in error.message and "API key not valid" not in error.message
    assert error.headers["x-bananagate-channel"] == "g" and call.attempts == 1


async def test_timeouts_and_refused_connections_fail_over(google: FakeGoogle, google_b: FakeGoogle) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    router = router_for(
        channel("slow", google.url, priority=3, read_timeout=0.3),
        channel("dead", dead, priority=2),
        channel("ok", google_b.url, priority=1),
    )
    google.set_default(Reply(200, b"{}", delay=2.0))
    started = time.monotonic()
    try:
        answer = await router.generate(call := make_call())
    finally:
        await router.aclose()
    assert call.channel == "ok" and call.attempts == 5
    assert image_of(orjson.loads(answer.body)) == google_b.image
    assert time.monotonic() - started < 3


async def test_every_channel_failing_returns_the_last_upstream_error(google: FakeGoogle) -> None:
    router = router_for(channel("g", google.url), max_attempts=3, attempts_per_channel=5)
    google.set_default(google_error(503, "The model is overloaded."))
    try:
        with pytest.raises(UpstreamError) as raised:
            await router.generate(call := make_call())
    finally:
        await router.aclose()
    assert call.attempts == 3 and len(google.requests) == 3
    assert raised.value.error.code == 503 and raised.value.error.message == "The model is overloaded."
    assert raised.value.error.headers["x-bananagate-attempts"] == "3"


async def test_open_circuits_everywhere_is_a_503_with_retry_info(google: FakeGoogle) -> None:
    router = router_for(
        channel("g", google.url), attempts_per_channel=1, circuit_failures=1, circuit_cooloff=60
    )
    google.set_default(google_error(500))
    try:
        with pytest.raises(UpstreamError):
            await router.generate(make_call())
        with pytest.raises(UpstreamError) as raised:
            await router.generate(make_call())
    finally:
        await router.aclose()
    assert raised.value.error.code == 503 and "available" in raised.value.error.message
    assert raised.value.error.details[0]["@type"].endswith("RetryInfo")
    assert len(google.requests) == 1


async def test_stream_fails_over_before_the_first_event(google: FakeGoogle, google_b: FakeGoogle) -> None:
    router = router_for(
        channel("a", google.url, priority=1), channel("b", google_b.url), attempts_per_channel=1
    )
    # An error sent as the stream's first event counts as an error answer: nothing reached the client.
    error_event = orjson.dumps({"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}})
    google.enqueue(StreamReply([error_event]))
    call = make_call(method="streamGenerateContent")
    try:
        events = [e async for e in router.stream(call)]
    finally:
        await router.aclose()
    assert call.attempts == 2 and call.channel == "b"
    assert events == google_b.requests[-1].reply_events
    assert google_b.requests[-1].query == {"alt": "sse"}


async def test_no_channels_means_the_emulator_serves_everything_unaliased() -> None:
    router = ModelRouter(registry=ChannelRegistry(GatewayConfig()))
    try:
        assert [m.id for m in router.models()] == [
            "gemini-2.5-flash-image",
            "gemini-2.5-flash-image-preview",
            "gemini-3-pro-image-preview",
            "gemini-3.1-flash-image-preview",
        ]
        preview = router.find("gemini-2.5-flash-image-preview")
        assert preview is not None and preview.id == "gemini-2.5-flash-image-preview"
        answer = await router.generate(call := make_call(model_id="gemini-2.5-flash-image-preview"))
    finally:
        await router.aclose()
    assert call.channel == "emulator" and call.attempts == 1
    assert orjson.loads(answer.body)["modelVersion"] == "gemini-2.5-flash-image-preview"


async def test_the_implicit_emulator_passes_injected_faults_straight_through() -> None:
    router = ModelRouter(registry=ChannelRegistry(GatewayConfig()))
    fault = {"x-bananagate-emulate": "status=429;retry-delay=2s"}
    try:
        for _ in range(2):  # no retry, no cooldown: each request reaches the emulator once
            call = make_call()
            call.headers = fault
            started = time.monotonic()
            with pytest.raises(UpstreamError) as raised:
                await router.generate(call)
            assert raised.value.error.code == 429 and call.attempts == 1
            assert time.monotonic() - started < 1
        stream_call = make_call(method="streamGenerateContent")
        stream_call.headers = {"x-bananagate-emulate": "stream-error-after=1"}
        events = [e async for e in router.stream(stream_call)]
        assert len(events) == 2 and events[-1].startswith(b'{"error"')
    finally:
        await router.aclose()


async def test_models_without_a_channel_are_not_found(google: FakeGoogle) -> None:
    router = router_for(channel("g", google.url, models=["gemini-3-pro-image"]))
    try:
        assert [m.id for m in router.models()] == ["gemini-3-pro-image-preview"]
        assert router.find(FLASH_25) is None
        assert router.find("models/nano-banana-pro-preview") is not None
    finally:
        await router.aclose()


async def test_a_registry_reload_adds_and_retires_channels(google: FakeGoogle, google_b: FakeGoogle) -> None:
    tables: list[list[ChannelConfig]] = [[channel("a", google.url)]]

    def load(known: object | None) -> tuple[object, list[ChannelConfig]] | None:
        version = len(tables)
        return None if known == version else (version, tables[-1])

    registry = ChannelRegistry(GatewayConfig(routing=RoutingConfig(**FAST)), load_database=load)
    router = ModelRouter(registry=registry)
    try:
        await router.start()
        await router.generate(call := make_call())
        assert call.channel == "a"
        old = registry.snapshot().channels[0]
        tables.append([channel("b", google_b.url)])
        assert await registry.refresh()
        assert not await registry.refresh()  # unchanged: nothing rebuilt
        await router.generate(call := make_call())
        assert call.channel == "b" and len(google_b.requests) == 1
        assert old.retired and old.built.closed
    finally:
        await router.aclose()
