"""`/v1/chat/completions` (streamed and not) and `/v1/models` through the official openai SDK."""

from __future__ import annotations

import base64
import json

import httpx
import openai
import pytest
from google import genai
from openai import AsyncOpenAI, OpenAI

from tests.conftest import Gateway
from tests.openai.conftest import FLASH_25, FLASH_31, PRO_3, decode, png


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def image_of(entry: dict) -> bytes:
    """Bytes of one `message.images[]` entry (OpenRouter/LiteLLM convention)."""
    assert entry["type"] == "image_url"
    url = entry["image_url"]["url"]
    header, _, payload = url.partition(",")
    assert header.startswith("data:image/") and header.endswith(";base64")
    return base64.b64decode(payload)


def test_chat_text_and_image(client: OpenAI) -> None:
    answer = client.chat.completions.create(
        model=FLASH_25,
        messages=[
            {"role": "system", "content": "You draw."},
            {"role": "user", "content": [{"type": "text", "text": "a teapot"}]},
        ],
    )
    choice = answer.choices[0]
    assert answer.object == "chat.completion" and answer.model == FLASH_25
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    assert "a teapot" in choice.message.content
    (entry,) = choice.message.images
    assert decode(image_of(entry)).size == (1024, 1024)
    usage = answer.usage
    assert usage.completion_tokens_details.image_tokens == 1290
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_chat_edit_with_data_url_and_image_config(client: OpenAI) -> None:
    answer = client.chat.completions.create(
        model=PRO_3,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "make it night"},
                    {"type": "image_url", "image_url": {"url": data_url(png((1600, 900)))}},
                ],
            }
        ],
        extra_body={"modalities": ["image"], "image_config": {"aspect_ratio": "4:3", "image_size": "2K"}},
    )
    message = answer.choices[0].message
    assert message.content == ""  # IMAGE only: no text
    assert decode(image_of(message.images[0])).size == (2400, 1792)
    assert answer.usage.prompt_tokens_details.image_tokens == 560
    assert answer.usage.completion_tokens_details.reasoning_tokens > 0  # 3 Pro thinks


def test_multi_turn_sends_back_the_previous_image(client: OpenAI) -> None:
    first = client.chat.completions.create(model=FLASH_25, messages=[{"role": "user", "content": "a boat"}])
    previous = first.choices[0].message
    second = client.chat.completions.create(
        model=FLASH_25,
        messages=[
            {"role": "user", "content": "a boat"},
            {"role": "assistant", "content": previous.content, "images": previous.images},
            {"role": "user", "content": "now at sunset"},
        ],
    )
    assert second.choices[0].message.images
    assert second.usage.prompt_tokens_details.image_tokens == 0  # model-turn images are not inputs


def test_chat_stream(client: OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model=FLASH_31, messages=[{"role": "user", "content": "a comet"}], stream=True
        )
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "a comet" in text
    images = [e for c in chunks if c.choices for e in (getattr(c.choices[0].delta, "images", None) or [])]
    assert len(images) == 1 and decode(image_of(images[0])).size == (1024, 1024)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].usage.completion_tokens_details.image_tokens == 1120


def test_chat_stream_wire_format_and_include_usage(gateway: Gateway) -> None:
    body = {
        "model": FLASH_25,
        "messages": [{"role": "user", "content": "a kettle"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    headers = {"authorization": f"Bearer {gateway.key}"}
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, headers=headers) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    parsed = [json.loads(e[6:]) for e in events[:-1]]
    # OpenAI's include_usage shape: the finish chunk, then one chunk with no choices and the usage.
    assert parsed[-2]["choices"][0]["finish_reason"] == "stop" and "usage" not in parsed[-2]
    assert parsed[-1]["choices"] == [] and parsed[-1]["usage"]["completion_tokens"] > 1290


async def test_chat_async_stream_and_plain(aclient: AsyncOpenAI) -> None:
    plain = await aclient.chat.completions.create(
        model=FLASH_25, messages=[{"role": "user", "content": "a owl"}]
    )
    assert plain.choices[0].message.images
    stream = await aclient.chat.completions.create(
        model=FLASH_25, messages=[{"role": "user", "content": "an owl"}], stream=True
    )
    chunks = [c async for c in stream]
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_error_after_the_stream_began(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model=FLASH_25,
        messages=[{"role": "user", "content": "a storm"}],
        stream=True,
        extra_headers={"x-bananagate-emulate": "stream-error-after=1"},
    )
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received.append(chunk)
    assert received  # the first event arrived before the error
    assert "internal error" in caught.value.message.lower()


@pytest.mark.parametrize(
    ("directive", "error"),
    [
        ("status=429; retry-delay=0", openai.RateLimitError),
        ("stream-error-after=0", openai.InternalServerError),  # the very first event is the error
    ],
)
def test_error_before_the_stream_is_a_status(client: OpenAI, directive: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        client.chat.completions.create(
            model=FLASH_25,
            messages=[{"role": "user", "content": "x"}],
            stream=True,
            extra_headers={"x-bananagate-emulate": directive},
        )


def test_safety_finish_is_a_content_filter(client: OpenAI) -> None:
    answer = client.chat.completions.create(
        model=FLASH_25,
        messages=[{"role": "user", "content": "x"}],
        extra_headers={"x-bananagate-emulate": "finish=IMAGE_SAFETY"},
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "content_filter" and choice.message.refusal
    assert not getattr(choice.message, "images", None)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": FLASH_25, "messages": []}, "messages"),
        ({"model": FLASH_25, "messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
        ({"model": FLASH_25, "messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
        (
            {
                "model": FLASH_25,
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}],
                    }
                ],
            },
            "messages[0].content[0].image_url.url",
        ),
        (
            {
                "model": FLASH_25,
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}],
                    }
                ],
            },
            "messages[0].content[0].image_url",
        ),
    ],
)
def test_chat_bad_requests(gateway: Gateway, body: dict, param: str) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {gateway.key}"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


# --- /v1/models -------------------------------------------------------------------------------------


def test_models_list_and_retrieve(client: OpenAI) -> None:
    models = client.models.list()
    ids = [m.id for m in models]
    assert {FLASH_25, PRO_3, FLASH_31} <= set(ids)
    assert all(m.object == "model" and m.owned_by == "google" for m in models)
    assert client.models.retrieve(PRO_3).id == PRO_3
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


def test_v1_models_is_gemini_for_gemini_clients(gateway: Gateway) -> None:
    # The same path, asked the Gemini way (x-goog-api-key, as google-genai sends it).
    gemini = genai.Client(api_key=gateway.key, http_options={"base_url": gateway.url, "api_version": "v1"})
    names = [m.name for m in gemini.models.list()]
    assert f"models/{FLASH_25}" in names
    assert gemini.models.get(model=PRO_3).display_name == "Nano Banana Pro"
    by_query = httpx.get(f"{gateway.url}/v1/models", params={"key": gateway.key}).json()
    assert "models" in by_query and "data" not in by_query
    by_bearer = httpx.get(
        f"{gateway.url}/v1/models", headers={"authorization": f"Bearer {gateway.key}"}
    ).json()
    assert by_bearer["object"] == "list" and "models" not in by_bearer
    by_raw = httpx.get(f"{gateway.url}/v1/models", headers={"authorization": gateway.key}).json()
    assert by_raw["object"] == "list"
    # Errors follow the shape too.
    bad_gemini = httpx.get(f"{gateway.url}/v1/models", headers={"x-goog-api-key": "sk-wrong"}).json()
    assert bad_gemini["error"]["status"] == "UNAUTHENTICATED"
    bad_openai = httpx.get(f"{gateway.url}/v1/models", headers={"authorization": "Bearer sk-wrong"}).json()
    assert bad_openai["error"]["code"] == "invalid_api_key"


def test_gemini_generate_under_v1_still_works(gateway: Gateway) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/models/{FLASH_25}:generateContent",
        headers={"authorization": f"Bearer {gateway.key}"},
        json={"contents": [{"parts": [{"text": "a pear"}]}]},
        timeout=60,
    )
    assert response.status_code == 200 and response.json()["candidates"]
