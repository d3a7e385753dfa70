"""Shape and determinism of ordinary (fault-free) answers."""

from __future__ import annotations

import base64
import math

import orjson
import pytest

from bananagate.protocol.response import Usage
from bananagate.providers.emulator import EmulatorProvider

from .helpers import (
    FLASH_25,
    FLASH_31,
    PRO_3,
    decode,
    image_of,
    make_call,
    parts_of,
    png_bytes,
    request_body,
)


async def _answer(call):
    answer = await EmulatorProvider().generate(call)
    return answer, orjson.loads(answer.body)


async def test_body_is_compact_camel_case_json() -> None:
    answer, response = await _answer(make_call(FLASH_25, request_body("hello")))
    assert b"\n" not in answer.body
    assert set(response) == {"candidates", "usageMetadata", "modelVersion", "responseId"}
    candidate = response["candidates"][0]
    assert candidate["finishReason"] == "STOP"
    assert candidate["index"] == 0
    assert candidate["content"]["role"] == "model"
    assert answer.finish_reason == "STOP"
    assert answer.status == 200
    # standard padded Base64 only
    data = parts_of(response)[-1]["inlineData"]["data"]
    assert "-" not in data and "_" not in data and len(data) % 4 == 0


@pytest.mark.parametrize(
    ("model_id", "mime"), [(FLASH_25, "image/png"), (PRO_3, "image/jpeg"), (FLASH_31, "image/jpeg")]
)
async def test_mime_type_per_model(model_id: str, mime: str) -> None:
    _, response = await _answer(make_call(model_id))
    got, data = image_of(response)
    assert got == mime
    assert decode(data).format == {"image/png": "PNG", "image/jpeg": "JPEG"}[mime]


async def test_same_request_same_bytes_other_prompt_other_bytes() -> None:
    first = image_of((await _answer(make_call(PRO_3, request_body("a red fox"))))[1])[1]
    again = image_of((await _answer(make_call(PRO_3, request_body("a red fox"), request_id="r2")))[1])[1]
    other = image_of((await _answer(make_call(PRO_3, request_body("a blue fox"))))[1])[1]
    assert first == again
    assert first != other


async def test_fingerprint_is_semantic_not_textual() -> None:
    """snake_case vs camelCase and URL-safe vs standard Base64 are the same request."""
    camel = request_body("same", ratio="16:9")
    snake = {
        "contents": [{"role": "user", "parts": [{"text": "same"}]}],
        "generation_config": {"image_config": {"aspect_ratio": "16:9"}},
    }
    a = image_of((await _answer(make_call(FLASH_25, camel)))[1])[1]
    b = image_of((await _answer(make_call(FLASH_25, snake)))[1])[1]
    assert a == b


async def test_alias_reports_requested_id_and_draws_like_the_model() -> None:
    _, via_alias = await _answer(make_call("gemini-2.5-flash-image-preview", request_body("x")))
    assert via_alias["modelVersion"] == "gemini-2.5-flash-image-preview"
    _, via_alias = await _answer(make_call("nano-banana-pro-preview", request_body("x")))
    assert via_alias["modelVersion"] == "nano-banana-pro-preview"


async def test_response_id_follows_request_id() -> None:
    _, a = await _answer(make_call(FLASH_25, request_id="abc"))
    _, b = await _answer(make_call(FLASH_25, request_id="abc"))
    _, c = await _answer(make_call(FLASH_25, request_id="xyz"))
    _, d = await _answer(make_call(FLASH_25, request_id=""))
    assert a["responseId"] == b["responseId"] != c["responseId"]
    assert d["responseId"] and d["responseId"] != a["responseId"]


async def test_text_part_before_image_for_text_and_image() -> None:
    _, response = await _answer(make_call(FLASH_25, request_body("a cat", ratio="3:2")))
    parts = parts_of(response)
    assert [("text" in p, "inlineData" in p) for p in parts] == [(True, False), (False, True)]
    text = parts[0]["text"]
    assert '"a cat"' in text and "gemini-2.5-flash-image" in text and "3:2" in text and "1K" in text
    assert "thoughtSignature" not in parts[1]  # 2.5 does not think


async def test_image_only_modality_has_no_text() -> None:
    _, response = await _answer(make_call(FLASH_25, request_body("a cat", modalities=["image"])))
    parts = parts_of(response)
    assert len(parts) == 1 and "inlineData" in parts[0]


async def test_text_only_modality_has_no_image() -> None:
    answer, response = await _answer(make_call(PRO_3, request_body("a cat", modalities=["TEXT"])))
    parts = parts_of(response)
    assert len(parts) == 1 and "text" in parts[0]
    assert parts[0]["thoughtSignature"]  # the signature moves to the last non-thought part
    assert answer.image_count == 0
    assert answer.usage.candidates_image_tokens == 0


@pytest.mark.parametrize("model_id", [PRO_3, FLASH_31])
async def test_thinking_model_thoughts_and_signature(model_id: str) -> None:
    call = make_call(model_id, request_body("a fox", include_thoughts=True))
    _, response = await _answer(call)
    parts = parts_of(response)
    assert parts[0]["thought"] is True and parts[0]["text"]
    assert "thought" not in parts[1] and "text" in parts[1]
    final = parts[2]
    assert "inlineData" in final and "thought" not in final
    signature = base64.b64decode(final["thoughtSignature"], validate=True)
    assert len(signature) >= 16
    assert 100 <= response["usageMetadata"]["thoughtsTokenCount"] <= 250

    # deterministic signature; no thought part without includeThoughts, but tokens still counted
    _, again = await _answer(make_call(model_id, request_body("a fox", include_thoughts=True)))
    assert parts_of(again)[2]["thoughtSignature"] == final["thoughtSignature"]
    _, quiet = await _answer(make_call(model_id, request_body("a fox")))
    assert not any(p.get("thought") for p in parts_of(quiet))
    assert quiet["usageMetadata"]["thoughtsTokenCount"] > 0


async def test_usage_metadata_counts() -> None:
    prompt = "x" * 41  # ceil(41 / 4) = 11 text tokens
    body = request_body(prompt, size="2K", images=[("image/png", png_bytes((64, 64)))] * 2)
    answer, response = await _answer(make_call(PRO_3, body))
    usage = response["usageMetadata"]
    text_part = parts_of(response)[0]["text"]
    assert usage["promptTokenCount"] == 11 + 2 * 560
    assert usage["promptTokensDetails"] == [
        {"modality": "TEXT", "tokenCount": 11},
        {"modality": "IMAGE", "tokenCount": 1120},
    ]
    text_tokens = math.ceil(len(text_part) / 4)
    assert usage["candidatesTokenCount"] == 1120 + text_tokens
    assert {"modality": "IMAGE", "tokenCount": 1120} in usage["candidatesTokensDetails"]
    assert usage["totalTokenCount"] == (
        usage["promptTokenCount"] + usage["candidatesTokenCount"] + usage["thoughtsTokenCount"]
    )
    assert Usage.from_wire(usage) == answer.usage


async def test_flash_25_image_tokens() -> None:
    answer, _ = await _answer(make_call(FLASH_25, request_body("t", modalities=["IMAGE"])))
    assert answer.usage.candidates_tokens == answer.usage.candidates_image_tokens == 1290
    assert answer.usage.prompt_tokens == 1
    assert answer.usage.thoughts_tokens == 0


async def test_provider_protocol_shape() -> None:
    provider = EmulatorProvider()
    assert provider.name == "emulator"
    await provider.aclose()
