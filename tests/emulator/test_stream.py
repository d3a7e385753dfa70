"""Streaming: one complete response per event, in Gemini's order, with faults mid-stream."""

from __future__ import annotations

import time

import orjson
import pytest

from bananagate.providers.base import UpstreamError
from bananagate.providers.emulator import EmulatorProvider

from .helpers import FLASH_25, PRO_3, decode, image_of, make_call, request_body

H = "x-bananagate-emulate"


def _call(model_id: str = PRO_3, directive: str = "", **kw):
    return make_call(
        model_id,
        request_body(kw.pop("prompt", "a streamed banana"), **kw),
        headers={H: directive} if directive else {},
        method="streamGenerateContent",
    )


async def _events(call, provider: EmulatorProvider | None = None) -> list[bytes]:
    return [event async for event in (provider or EmulatorProvider()).stream(call)]


async def test_event_order_thought_text_image() -> None:
    raw = await _events(_call(include_thoughts=True, ratio="16:9"))
    assert all(b"\n" not in event for event in raw)  # one SSE line each
    events = [orjson.loads(e) for e in raw]
    assert len(events) == 3
    for event in events:
        assert event["modelVersion"] == PRO_3
        assert event["responseId"] == events[0]["responseId"]
        assert "usageMetadata" in event
        assert len(event["candidates"][0]["content"]["parts"]) == 1
    thought, text, final = (e["candidates"][0] for e in events)
    assert thought["content"]["parts"][0]["thought"] is True
    assert "finishReason" not in thought and "finishReason" not in text
    assert "thought" not in text["content"]["parts"][0] and text["content"]["parts"][0]["text"]
    assert final["finishReason"] == "STOP"
    part = final["content"]["parts"][0]
    assert part["thoughtSignature"]
    mime, data = image_of(events[2])
    assert mime == "image/jpeg" and decode(data).size == (1376, 768)
    # usage grows; image tokens only in the final event
    assert "candidatesTokensDetails" not in events[0]["usageMetadata"]
    assert events[2]["usageMetadata"]["candidatesTokensDetails"][-1] == {
        "modality": "IMAGE",
        "tokenCount": 1120,
    }


async def test_stream_matches_generate() -> None:
    provider = EmulatorProvider()
    events = [orjson.loads(e) for e in await _events(_call(FLASH_25), provider)]
    answer = await provider.generate(make_call(FLASH_25, request_body("a streamed banana")))
    whole = orjson.loads(answer.body)
    streamed_parts = [p for e in events for p in e["candidates"][0]["content"]["parts"]]
    assert streamed_parts == whole["candidates"][0]["content"]["parts"]
    assert events[-1]["usageMetadata"] == whole["usageMetadata"]


async def test_image_only_is_a_single_event() -> None:
    events = await _events(_call(FLASH_25, modalities=["IMAGE"]))
    assert len(events) == 1
    assert orjson.loads(events[0])["candidates"][0]["finishReason"] == "STOP"


async def test_stream_error_after() -> None:
    events = [
        orjson.loads(e) for e in await _events(_call(directive="stream-error-after=1", include_thoughts=True))
    ]
    assert len(events) == 2
    assert events[0]["candidates"][0]["content"]["parts"][0]["thought"] is True
    assert list(events[1]) == ["error"]
    assert events[1]["error"] == {
        "code": 500,
        "message": "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
        "status": "INTERNAL",
    }
    assert (await _events(_call(directive="stream-error-after=1", include_thoughts=True)))[1].startswith(
        b'{"error":'
    )


async def test_stream_error_after_zero_and_after_everything() -> None:
    events = await _events(_call(directive="stream-error-after=0"))
    assert len(events) == 1 and orjson.loads(events[0])["error"]["code"] == 500
    events = await _events(_call(FLASH_25, directive="stream-error-after=5"))
    assert len(events) == 3  # text, image, then the error
    assert orjson.loads(events[1])["candidates"][0]["finishReason"] == "STOP"
    assert "error" in orjson.loads(events[2])


async def test_delay_before_first_event_and_between_events() -> None:
    provider = EmulatorProvider()
    start = time.perf_counter()
    stamps = []
    async for _ in provider.stream(_call(directive="delay=0.3; event-delay=0.2", include_thoughts=True)):
        stamps.append(time.perf_counter() - start)
    assert len(stamps) == 3
    assert stamps[0] >= 0.3
    assert stamps[1] - stamps[0] >= 0.2 and stamps[2] - stamps[1] >= 0.2


async def test_status_fault_raises_before_any_event() -> None:
    events = []
    with pytest.raises(UpstreamError) as info:
        async for event in EmulatorProvider().stream(_call(directive="status=429;retry-delay=3")):
            events.append(event)
    assert events == [] and info.value.retry_after == 3.0


async def test_stream_finish_and_block() -> None:
    events = [orjson.loads(e) for e in await _events(_call(directive="finish=IMAGE_SAFETY"))]
    assert len(events) == 1
    assert events[0]["candidates"][0]["content"] == {"role": "model"}
    assert events[0]["candidates"][0]["finishReason"] == "IMAGE_SAFETY"

    events = [orjson.loads(e) for e in await _events(_call(directive="block=PROHIBITED_CONTENT"))]
    assert len(events) == 1 and events[0]["promptFeedback"] == {"blockReason": "PROHIBITED_CONTENT"}

    events = [orjson.loads(e) for e in await _events(_call(FLASH_25, directive="finish=NO_IMAGE"))]
    assert len(events) == 1 and events[0]["candidates"][0]["finishReason"] == "NO_IMAGE"
    assert "NO_IMAGE" in events[0]["candidates"][0]["content"]["parts"][0]["text"]


async def test_stream_text_only() -> None:
    events = [orjson.loads(e) for e in await _events(_call(directive="text-only", include_thoughts=True))]
    assert len(events) == 2
    assert events[-1]["candidates"][0]["finishReason"] == "STOP"
    assert all("inlineData" not in p for e in events for p in e["candidates"][0]["content"]["parts"])


async def test_stream_times() -> None:
    provider = EmulatorProvider()
    call = _call(FLASH_25, directive="stream-error-after=0; times=1")
    first = await _events(call, provider)
    second = await _events(call, provider)
    assert "error" in orjson.loads(first[-1])
    assert all("error" not in orjson.loads(e) for e in second)
