"""A Gemini request served by an OpenAI Images upstream (acceptance 4), and the size table."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from bananagate.protocol import openai_images
from bananagate.protocol.catalog import FLASH_31, MODELS
from tests.channels.conftest import FLASH_25, OPENAI_KEY, client_for, toml_channel
from tests.conftest import Gateway, start_gateway, stop_gateway
from tests.upstreams import FakeOpenAI, openai_error, png

GENERATE = f"/v1beta/models/{FLASH_25}:generateContent"


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(keys=[OPENAI_KEY]) as openai:
        yield openai  # type: ignore[misc]


@pytest.fixture(scope="module")
def gateway(upstream: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    data_dir: Path = tmp_path_factory.mktemp("openai-gw")
    config = data_dir / "channels.toml"
    config.write_text(
        toml_channel(
            "oai",
            "openai-images",
            upstream.url,
            keys=[OPENAI_KEY],
            models=[FLASH_25],
            model_map={FLASH_25: "gpt-image-1"},
        )
    )
    gateway = start_gateway(data_dir, args=("--config", str(config)))
    yield gateway
    stop_gateway(gateway)


def _request(prompt: str, ratio: str | None = None, image: bytes | None = None) -> bytes:
    parts: list[dict[str, object]] = [{"text": prompt}]
    if image is not None:
        parts.append({"inline_data": {"mime_type": "image/png", "data": base64.b64encode(image).decode()}})
    body: dict[str, object] = {"contents": [{"parts": parts}]}
    if ratio:
        body["generationConfig"] = {"imageConfig": {"aspectRatio": ratio}}
    return orjson.dumps(body)


def test_text_to_image_maps_the_ratio_and_returns_inline_data(gateway: Gateway, upstream: FakeOpenAI) -> None:
    with client_for(gateway) as client:
        response = client.post(GENERATE, content=_request("A lighthouse at dusk", "16:9"))
    assert response.status_code == 200, response.text
    seen = upstream.requests[-1]
    assert seen.path == "/v1/images/generations"
    assert seen.header("authorization") == f"Bearer {OPENAI_KEY}"
    assert orjson.loads(seen.body) == {
        "model": "gpt-image-1",
        "prompt": "A lighthouse at dusk",
        "n": 1,
        "size": "1536x1024",
        "response_format": "b64_json",
    }
    answer = response.json()
    (part,) = answer["candidates"][0]["content"]["parts"]
    sent = orjson.loads(seen.reply_body)["data"][0]["b64_json"]
    assert part == {"inlineData": {"mimeType": "image/png", "data": sent}}
    assert answer["candidates"][0]["finishReason"] == "STOP"
    assert answer["usageMetadata"]["candidatesTokenCount"] == 1056
    assert answer["modelVersion"] == "gpt-image-1"
    assert response.headers["x-bananagate-channel"] == "oai"


def test_an_edit_goes_as_multipart_with_the_image_bytes(gateway: Gateway, upstream: FakeOpenAI) -> None:
    source = png((1, 2, 3), (30, 40))
    with client_for(gateway) as client:
        response = client.post(GENERATE, content=_request("Make it snow", "9:16", image=source))
        assert response.status_code == 200, response.text
        streamed = client.post(
            f"/v1beta/models/{FLASH_25}:streamGenerateContent?alt=sse", content=_request("x")
        )
    seen = upstream.requests[-2]
    assert seen.path == "/v1/images/edits"
    fields = {p.name: p for p in upstream.form(seen)}
    assert fields["image"].data == source and fields["image"].content_type == "image/png"
    assert fields["size"].data == b"1024x1536" and fields["prompt"].data == b"Make it snow"
    assert fields["model"].data == b"gpt-image-1"
    # A stream is the whole translated answer as one event.
    (event,) = [e for e in streamed.content.split(b"\r\n\r\n") if e]
    assert orjson.loads(event[len(b"data: ") :])["candidates"][0]["content"]["parts"][0]["inlineData"]["data"]


def test_the_documented_size_table_is_what_the_code_does() -> None:
    doc = openai_images.__doc__ or ""
    rows = re.findall(r"^\| ([0-9:, ]+) \| (\d+x\d+) \|$", doc, flags=re.M)
    documented = {ratio.strip(): size for ratios, size in rows for ratio in ratios.split(",")}
    all_ratios = {r for m in MODELS for r in m.sizes}
    assert set(documented) == all_ratios
    for ratio, size in documented.items():
        assert openai_images.nearest_size(ratio, openai_images.DEFAULT_SIZES) == size


def test_size_choice_prefers_shape_then_pixels() -> None:
    dalle = ("1024x1024", "1792x1024", "1024x1792")
    assert openai_images.nearest_size("16:9", dalle) == "1792x1024"
    sizes = ("512x512", "1024x1024", "2048x2048", "1536x1024")
    w, h = FLASH_31.size_for("1:1", "2K")
    assert openai_images.nearest_size("1:1", sizes, w * h) == "2048x2048"
    assert openai_images.nearest_size("1:1", sizes, 512 * 512) == "512x512"


def test_moderation_refusals_become_image_safety() -> None:
    refusal = {
        "error": {"message": "Your request was rejected by the safety system.", "code": "moderation_blocked"}
    }
    assert openai_images.is_moderation_error(400, refusal)
    assert not openai_images.is_moderation_error(401, refusal)
    body, _ = openai_images.safety_block("no", model_version="m", response_id="r", prompt="p")
    assert body["candidates"][0]["finishReason"] == "IMAGE_SAFETY"


def test_sniffed_mime_types() -> None:
    jpeg = base64.b64encode(b"\xff\xd8\xff\xe0" + b"\x00" * 20).decode()
    assert openai_images.sniff_mime(jpeg) == "image/jpeg"
    assert openai_images.sniff_mime(base64.b64encode(png((0, 0, 0))).decode()) == "image/png"
    assert openai_images.sniff_mime(base64.b64encode(b"RIFF....WEBPVP8 ").decode()) == "image/webp"


def test_an_upstream_refusal_is_a_gemini_safety_finish(gateway: Gateway, upstream: FakeOpenAI) -> None:
    message = "Your request was rejected as a result of our safety system."
    upstream.enqueue(openai_error(400, message, "image_generation_user_error", "moderation_blocked"))
    with client_for(gateway) as client:
        response = client.post(GENERATE, content=_request("something forbidden"))
    assert response.status_code == 200
    candidate = response.json()["candidates"][0]
    assert candidate["finishReason"] == "IMAGE_SAFETY" and candidate["finishMessage"] == message
    assert "parts" not in candidate["content"]
