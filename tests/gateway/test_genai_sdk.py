"""The official `google-genai` SDK, unchanged, pointed at the gateway (protocol reference §7)."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from google import genai
from google.genai import errors, types
from PIL import Image

from bananagate.protocol.catalog import MODELS, find_model
from tests.conftest import Gateway

from .helpers import FLASH_25, FLASH_31, PRO_3, decode, generate_path, images_of, noise_png

SDK_ENV = ("GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_GENAI_USE_ENTERPRISE", "GOOGLE_API_KEY", "GEMINI_API_KEY")
FAULT = "x-bananagate-emulate"


def make_client(gateway: Gateway, key: str | None = None, **http_options: Any) -> genai.Client:
    with pytest.MonkeyPatch.context() as mp:
        for name in SDK_ENV:
            mp.delenv(name, raising=False)
        options = types.HttpOptions(base_url=gateway.url, api_version="v1beta", **http_options)
        return genai.Client(api_key=gateway.key if key is None else key, http_options=options)


class Recorder:
    """An httpx request hook (a documented SDK option): what the SDK really put on the wire."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> None:
        self.requests.append(request)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests if r.method == "POST"]


@pytest.fixture(scope="module")
def client(gateway: Gateway) -> Iterator[genai.Client]:
    c = make_client(gateway)
    yield c
    c.close()


def _pil(data: bytes) -> Image.Image:
    return decode(data)


# --- generate_content --------------------------------------------------------------------------------


def test_text_to_image(client: genai.Client) -> None:
    response = client.models.generate_content(
        model=FLASH_25,
        contents="A kitten napping on a sunny windowsill, watercolor",
        config=types.GenerateContentConfig(
            response_modalities=["TEXT", "IMAGE"],
            image_config=types.ImageConfig(aspect_ratio="16:9"),
        ),
    )
    assert response.candidates and response.candidates[0].finish_reason == types.FinishReason.STOP
    parts = response.parts
    assert parts is not None
    assert "kitten napping" in (response.text or "")
    images = [p.as_image() for p in parts if p.inline_data]
    assert len(images) == 1 and images[0] is not None
    assert images[0].mime_type == "image/png"
    assert images[0].image_bytes is not None
    assert _pil(images[0].image_bytes).size == (1344, 768)
    usage = response.usage_metadata
    assert usage is not None and usage.total_token_count and usage.candidates_token_count
    assert response.model_version == FLASH_25 and response.response_id


def test_image_edit_with_part_from_bytes(client: genai.Client) -> None:
    source = noise_png((300, 400), seed=7)  # 3:4
    contents: list[Any] = [
        "Put a tiny wizard hat on the kitten",
        types.Part.from_bytes(data=source, mime_type="image/png"),
    ]
    response = client.models.generate_content(
        model=PRO_3,
        contents=contents,
        config=types.GenerateContentConfig(image_config=types.ImageConfig(image_size="2K")),
    )
    parts = response.parts
    assert parts is not None
    images = [p for p in parts if p.inline_data]
    assert len(images) == 1
    image = images[0].as_image()
    assert image is not None and image.mime_type == "image/jpeg" and image.image_bytes
    decoded = _pil(image.image_bytes)
    assert (decoded.format, decoded.size) == ("JPEG", (1792, 2400))  # input ratio 3:4 kept, at 2K
    # The SDK turned the prompt image's token count into usage details.
    details = response.usage_metadata.prompt_tokens_details if response.usage_metadata else None
    assert details and any(d.modality == types.MediaModality.IMAGE for d in details)


async def test_async_generate_content(client: genai.Client) -> None:
    response = await client.aio.models.generate_content(
        model=FLASH_31,
        contents="An async banana",
        config=types.GenerateContentConfig(
            image_config=types.ImageConfig(aspect_ratio="1:4", image_size="512")
        ),
    )
    parts = response.parts
    assert parts is not None
    images = [p.as_image() for p in parts if p.inline_data]
    assert len(images) == 1 and images[0] is not None and images[0].image_bytes
    assert _pil(images[0].image_bytes).size == (256, 1024)


# --- streaming ------------------------------------------------------------------------------------------


def _check_stream(chunks: list[types.GenerateContentResponse], size: tuple[int, int]) -> None:
    assert len(chunks) >= 2
    with_image = [i for i, c in enumerate(chunks) for p in (c.parts or []) if p.inline_data and not p.thought]
    assert len(with_image) == 1
    blob = next(p.inline_data for p in chunks[with_image[0]].parts or [] if p.inline_data)
    assert blob is not None and blob.data
    assert _pil(blob.data).size == size
    last = chunks[-1].candidates
    assert last and last[0].finish_reason == types.FinishReason.STOP
    assert all(c.candidates and c.candidates[0].finish_reason is None for c in chunks[:-1])


def test_stream_sync(client: genai.Client) -> None:
    chunks = list(
        client.models.generate_content_stream(
            model=PRO_3,
            contents="A streamed banana",
            config=types.GenerateContentConfig(
                image_config=types.ImageConfig(aspect_ratio="21:9"),
                thinking_config=types.ThinkingConfig(include_thoughts=True),
            ),
        )
    )
    _check_stream(chunks, (1584, 672))
    first_parts = chunks[0].parts or []
    assert first_parts and first_parts[0].thought is True


async def test_stream_async(client: genai.Client) -> None:
    stream = await client.aio.models.generate_content_stream(
        model=FLASH_31,
        contents="An async streamed banana",
        # 4K: the image event is one multi-megabyte SSE line.
        config=types.GenerateContentConfig(
            image_config=types.ImageConfig(aspect_ratio="8:1", image_size="4K")
        ),
    )
    chunks = [chunk async for chunk in stream]
    _check_stream(chunks, (12288, 1536))


def test_stream_error_event_raises(gateway: Gateway) -> None:
    faulty = make_client(gateway, headers={FAULT: "stream-error-after=1"})
    received = []
    with pytest.raises(errors.APIError) as caught:
        for chunk in faulty.models.generate_content_stream(model=PRO_3, contents="a fragile stream"):
            received.append(chunk)
    faulty.close()
    assert len(received) == 1  # the first event arrived before the error event
    assert caught.value.code >= 500 and caught.value.status
    assert caught.value.message


# --- models ------------------------------------------------------------------------------------------------


def test_models_list(gateway: Gateway) -> None:
    recorder = Recorder()
    c = make_client(gateway, client_args={"event_hooks": {"request": [recorder]}})
    listed = list(c.models.list())
    assert [m.name for m in listed] == [f"models/{m.id}" for m in MODELS]
    by_name = {m.name: m for m in listed}
    for model in MODELS:
        got = by_name[f"models/{model.id}"]
        assert got.display_name == model.display_name
        assert got.input_token_limit == model.input_token_limit
        assert got.output_token_limit == model.output_token_limit
        assert got.supported_actions and "generateContent" in got.supported_actions

    recorder.requests.clear()
    pager = c.models.list(config={"page_size": 2})
    assert pager.page_size == 2 and len(pager.page) == 2
    paged = [m.name for m in pager]
    assert paged == [f"models/{m.id}" for m in MODELS]
    # Two pages of two: the SDK followed nextPageToken once.
    assert len(recorder.requests) == -(-len(MODELS) // 2)
    assert all(r.url.params.get("pageSize") == "2" for r in recorder.requests)
    c.close()


def test_models_get(client: genai.Client) -> None:
    got = client.models.get(model=PRO_3)
    model = find_model(PRO_3)
    assert model is not None
    assert got.name == f"models/{PRO_3}"
    assert (got.display_name, got.version) == (model.display_name, model.version)
    assert got.input_token_limit == model.input_token_limit
    assert got.thinking is True
    with pytest.raises(errors.ClientError) as caught:
        client.models.get(model="gemini-0-nonexistent")
    assert (caught.value.code, caught.value.status) == (404, "NOT_FOUND")


def test_count_tokens(client: genai.Client) -> None:
    text_only = client.models.count_tokens(model=PRO_3, contents="hello world, a banana")
    assert text_only.total_tokens and text_only.total_tokens > 0
    contents: list[Any] = [
        "hello world, a banana",
        types.Part.from_bytes(data=noise_png((32, 32)), mime_type="image/png"),
    ]
    with_image = client.models.count_tokens(model=PRO_3, contents=contents)
    model = find_model(PRO_3)
    assert model is not None
    assert with_image.total_tokens == text_only.total_tokens + model.input_image_tokens


# --- chats ---------------------------------------------------------------------------------------------------


def test_chat_round_trips_thought_signatures(gateway: Gateway) -> None:
    recorder = Recorder()
    c = make_client(gateway, client_args={"event_hooks": {"request": [recorder]}})
    chat = c.chats.create(model=PRO_3)
    first = chat.send_message("Draw a banana on a beach")
    signed = [p for p in first.parts or [] if p.thought_signature]
    assert signed and signed[-1].inline_data, "the final image carries the signature"
    signature = signed[-1].thought_signature

    second = chat.send_message("Now make the banana blue")
    assert second.parts and any(p.inline_data for p in second.parts)
    assert any(p.thought_signature for p in second.parts)

    bodies = recorder.bodies()
    assert len(bodies) == 2
    history = bodies[1]["contents"]
    assert [c.get("role") for c in history] == ["user", "model", "user"]
    sent = [p["thoughtSignature"] for p in history[1]["parts"] if "thoughtSignature" in p]
    assert sent, "the model turn was resent without its signature"
    # The SDK re-encodes bytes as URL-safe Base64: compare decoded values.
    assert base64.urlsafe_b64decode(sent[-1] + "=" * (-len(sent[-1]) % 4)) == signature
    # And the model image went back too, which the gateway accepted (2nd answer is 200).
    assert any("inlineData" in p for p in history[1]["parts"])
    c.close()


# --- errors ------------------------------------------------------------------------------------------------


def test_bad_aspect_ratio_is_client_error_400(client: genai.Client) -> None:
    with pytest.raises(errors.ClientError) as caught:
        client.models.generate_content(
            model=FLASH_25,
            contents="x",
            config=types.GenerateContentConfig(image_config=types.ImageConfig(aspect_ratio="7:3")),
        )
    assert caught.value.code == 400
    assert caught.value.status == "INVALID_ARGUMENT"
    assert caught.value.message and "aspect ratio" in caught.value.message and "7:3" in caught.value.message


def test_wrong_key_is_client_error_401(gateway: Gateway) -> None:
    wrong = make_client(gateway, key="sk-wrong")
    with pytest.raises(errors.ClientError) as caught:
        wrong.models.generate_content(model=FLASH_25, contents="x")
    wrong.close()
    assert (caught.value.code, caught.value.status) == (401, "UNAUTHENTICATED")
    assert caught.value.message == "API key not valid. Please pass a valid API key."


def test_unknown_model_is_client_error_404(client: genai.Client) -> None:
    with pytest.raises(errors.ClientError) as caught:
        client.models.generate_content(model="gemini-0-nonexistent", contents="x")
    assert (caught.value.code, caught.value.status) == (404, "NOT_FOUND")
    assert caught.value.message and "models/gemini-0-nonexistent is not found" in caught.value.message


# --- the SSE wire format, seen with raw httpx ------------------------------------------------------------------


STREAM_BODY = {
    "contents": [{"parts": [{"text": "a wire-level banana"}]}],
    "generationConfig": {"thinkingConfig": {"includeThoughts": True}},
}


def test_sse_framing(api: httpx.Client) -> None:
    with api.stream(
        "POST", generate_path(PRO_3, "streamGenerateContent") + "?alt=sse", json=STREAM_BODY
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].split(";")[0] == "text/event-stream"
        raw = r.read()
    assert b"[DONE]" not in raw
    assert raw.endswith(b"\r\n\r\n")
    frames = raw.split(b"\r\n\r\n")
    assert frames[-1] == b""
    frames = frames[:-1]
    assert len(frames) == 3  # thought, text, image
    events = []
    for frame in frames:
        assert frame.startswith(b"data: {"), frame[:40]
        assert b"\n" not in frame and b"\r" not in frame  # one line per event
        events.append(json.loads(frame[len(b"data: ") :]))
    assert [len(images_of(e)) for e in events] == [0, 0, 1]
    assert [e["candidates"][0].get("finishReason") for e in events] == [None, None, "STOP"]
    assert len({e["responseId"] for e in events}) == 1

    # Without alt=sse: the same events as one JSON array.
    plain = api.post(generate_path(PRO_3, "streamGenerateContent"), json=STREAM_BODY)
    assert plain.status_code == 200
    assert plain.headers["content-type"].startswith("application/json")
    array = plain.json()
    assert isinstance(array, list) and len(array) == len(events)
    for a, e in zip(array, events, strict=True):
        assert a["candidates"] == e["candidates"]  # deterministic emulator: identical content


def test_sse_error_event(api: httpx.Client) -> None:
    headers = {FAULT: "stream-error-after=1"}
    url = generate_path(PRO_3, "streamGenerateContent") + "?alt=sse"
    with api.stream("POST", url, json=STREAM_BODY, headers=headers) as r:
        assert r.status_code == 200
        raw = r.read()
    frames = raw.split(b"\r\n\r\n")[:-1]
    assert len(frames) == 2
    error = frames[-1].removeprefix(b"data: ")
    assert error.startswith(b'{"error":')
    envelope = json.loads(error)["error"]
    assert envelope["code"] >= 500 and envelope["status"] and envelope["message"]


def test_pil_image_input_is_accepted(client: genai.Client) -> None:
    # The SDK also takes PIL images and re-encodes them as PNG with URL-safe Base64.
    image = Image.open(io.BytesIO(noise_png((200, 100), seed=9)))
    contents: list[Any] = ["use this", image]
    response = client.models.generate_content(model=FLASH_25, contents=contents)
    parts = response.parts or []
    blob = next(p.inline_data for p in parts if p.inline_data)
    assert blob and blob.data and _pil(blob.data).size == (1344, 768)  # 2:1 -> 16:9 is the closest ratio
