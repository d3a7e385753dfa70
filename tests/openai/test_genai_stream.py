"""The Gemini side with the official google-genai SDK: `generate_content_stream` (sync and async),
errors after the stream began, `:streamGenerateContent` without `alt=sse`, and `count_tokens`."""

from __future__ import annotations

import json

import httpx
import pytest
from google import genai
from google.genai import errors, types

from tests.conftest import Gateway
from tests.openai.conftest import FLASH_25, PRO_3, decode, png


def gemini(gateway: Gateway, headers: dict[str, str] | None = None) -> genai.Client:
    options: dict = {"base_url": gateway.url, "api_version": "v1beta"}
    if headers:
        options["headers"] = headers
    return genai.Client(api_key=gateway.key, http_options=options)


def test_generate_content_stream(gateway: Gateway) -> None:
    client = gemini(gateway)  # held: a collected Client closes its connection pool
    chunks = list(
        client.models.generate_content_stream(
            model=PRO_3,
            contents="a glass banana",
            config=types.GenerateContentConfig(
                image_config=types.ImageConfig(aspect_ratio="16:9", image_size="2K"),
                thinking_config=types.ThinkingConfig(include_thoughts=True),
            ),
        )
    )
    assert len(chunks) >= 2
    parts = [p for c in chunks for p in (c.candidates[0].content.parts or [])]
    assert any(p.thought for p in parts)  # thoughts first, when asked for
    images = [p for p in parts if p.inline_data and not p.thought]
    assert len(images) == 1 and images[0].inline_data.mime_type == "image/jpeg"
    assert decode(images[0].inline_data.data).size == (2752, 1536)
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[-1].usage_metadata.total_token_count > 1120


async def test_generate_content_stream_async(gateway: Gateway) -> None:
    client = gemini(gateway)
    stream = await client.aio.models.generate_content_stream(model=FLASH_25, contents="a clock")
    chunks = [c async for c in stream]
    assert any(p.inline_data for c in chunks for p in (c.candidates[0].content.parts or []))


def test_stream_error_after_start_raises(gateway: Gateway) -> None:
    client = gemini(gateway, {"x-bananagate-emulate": "stream-error-after=1"})
    seen = []
    with pytest.raises(errors.ServerError) as caught:
        for chunk in client.models.generate_content_stream(model=FLASH_25, contents="a storm"):
            seen.append(chunk)
    assert len(seen) == 1  # one event, then the error event
    assert caught.value.code == 500 and caught.value.status == "INTERNAL"


def test_stream_error_before_start_is_a_status(gateway: Gateway) -> None:
    client = gemini(gateway, {"x-bananagate-emulate": "status=400"})
    with pytest.raises(errors.ClientError) as caught:
        list(client.models.generate_content_stream(model=FLASH_25, contents="x"))
    assert caught.value.code == 400


@pytest.mark.parametrize("alt", ["sse", None])
def test_stream_wire_format_with_and_without_alt_sse(gateway: Gateway, alt: str | None) -> None:
    url = f"{gateway.url}/v1beta/models/{FLASH_25}:streamGenerateContent"
    body = {"contents": [{"parts": [{"text": "a bell"}]}]}
    response = httpx.post(
        url,
        params={"alt": alt} if alt else None,
        json=body,
        headers={"x-goog-api-key": gateway.key},
        timeout=60,
    )
    assert response.status_code == 200
    if alt == "sse":
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(e[len("data: ") :]) for e in response.text.split("\r\n\r\n") if e]
        assert "[DONE]" not in response.text
    else:
        events = response.json()  # one JSON array, written progressively
        assert isinstance(events, list)
    assert len(events) == 2  # text, then the image with the finish
    assert events[-1]["candidates"][0]["finishReason"] == "STOP"


def test_count_tokens(gateway: Gateway) -> None:
    client = gemini(gateway)
    text_only = client.models.count_tokens(model=FLASH_25, contents="a lighthouse on a cliff at dawn")
    assert text_only.total_tokens and text_only.total_tokens > 0
    with_image = client.models.count_tokens(
        model=PRO_3,
        contents=[
            "a lighthouse on a cliff at dawn",
            types.Part.from_bytes(data=png(), mime_type="image/png"),
        ],
    )
    assert with_image.total_tokens == text_only.total_tokens + 560  # 3 Pro bills 560 per input image


def test_count_tokens_unknown_model(gateway: Gateway) -> None:
    client = gemini(gateway)
    with pytest.raises(errors.ClientError) as caught:
        client.models.count_tokens(model="gemini-nope", contents="x")
    assert caught.value.code == 404
