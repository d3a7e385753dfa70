"""Any valid request parses to the same model whichever casing each key uses."""

from __future__ import annotations

import base64
import random
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bananagate.protocol.catalog import FLASH_25, FLASH_31, PRO_3
from bananagate.protocol.errors import ApiError
from bananagate.protocol.validation import field_path, parse_and_check, snake

RATIOS_25 = list(FLASH_25.aspect_ratios)


def to_snake_keys(value: Any, rng: random.Random) -> Any:
    """Rename each known camelCase key to snake_case with probability 1/2 (mixing, as clients do)."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            key = snake(k) if rng.random() < 0.5 else k
            out[key] = to_snake_keys(v, rng)
        return out
    if isinstance(value, list):
        return [to_snake_keys(v, rng) for v in value]
    return value


def enum_case(value: str, rng: random.Random) -> str:
    return rng.choice([value.upper(), value.lower(), value.capitalize()])


images = st.binary(min_size=1, max_size=64).map(lambda b: base64.b64encode(b).decode())
texts = st.text(min_size=1, max_size=40)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"text": draw(texts)}]
    for data in draw(st.lists(images, max_size=3)):
        parts.append(
            {"inlineData": {"mimeType": draw(st.sampled_from(["image/png", "image/jpeg"])), "data": data}}
        )
    request: dict[str, Any] = {"contents": [{"role": "user", "parts": parts}]}
    gc: dict[str, Any] = {}
    if draw(st.booleans()):
        gc["responseModalities"] = draw(st.sampled_from([["TEXT", "IMAGE"], ["IMAGE"], ["TEXT"]]))
    if draw(st.booleans()):
        gc["imageConfig"] = {"aspectRatio": draw(st.sampled_from(RATIOS_25))}
    if draw(st.booleans()):
        gc["temperature"] = draw(st.floats(min_value=0, max_value=1))
    if draw(st.booleans()):
        gc["thinkingConfig"] = {"includeThoughts": draw(st.booleans())}
    if gc:
        request["generationConfig"] = gc
    if draw(st.booleans()):
        request["systemInstruction"] = {"parts": [{"text": draw(texts)}]}
    if draw(st.booleans()):
        request["safetySettings"] = [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]
    return request


@settings(max_examples=150)
@given(requests(), st.integers())
def test_either_casing_parses_to_the_same_model(request: dict[str, Any], seed: int) -> None:
    rng = random.Random(seed)
    camel = parse_and_check(orjson.dumps(request), FLASH_25)
    mixed_dict = to_snake_keys(request, rng)
    gc = mixed_dict.get("generationConfig") or mixed_dict.get("generation_config")
    if gc:
        key = "responseModalities" if "responseModalities" in gc else "response_modalities"
        if key in gc:
            gc[key] = [enum_case(m, rng) for m in gc[key]]
    mixed = parse_and_check(orjson.dumps(mixed_dict), FLASH_25)
    assert camel == mixed
    assert camel.to_wire() == mixed.to_wire()


@given(st.binary(min_size=1, max_size=100))
def test_urlsafe_unpadded_image_is_normalised_on_output(data: bytes) -> None:
    url = base64.urlsafe_b64encode(data).decode().rstrip("=")
    body = {
        "contents": [{"parts": [{"text": "x"}, {"inline_data": {"mime_type": "image/png", "data": url}}]}]
    }
    parsed = parse_and_check(orjson.dumps(body), FLASH_25)
    wire = parsed.to_wire()
    assert wire["contents"][0]["parts"][1]["inlineData"]["data"] == base64.b64encode(data).decode()


def test_unknown_fields_are_kept_at_every_level() -> None:
    body = {
        "contents": [{"parts": [{"text": "x", "partMetadata": {"a": 1}}], "futureField": True}],
        "generationConfig": {"imageConfig": {"aspectRatio": "1:1", "newKnob": 3}, "mediaResolution": "HIGH"},
        "cachedContent": "cachedContents/1",
        "someTopLevelThing": [1, 2],
    }
    wire = parse_and_check(orjson.dumps(body), FLASH_25).to_wire()
    assert wire["someTopLevelThing"] == [1, 2]
    assert wire["contents"][0]["futureField"] is True
    assert wire["contents"][0]["parts"][0]["partMetadata"] == {"a": 1}
    assert wire["generationConfig"]["imageConfig"]["newKnob"] == 3
    assert wire["generationConfig"]["mediaResolution"] == "HIGH"


def test_sdk_style_snake_case_inside_thinking_config() -> None:
    body = {
        "contents": [{"parts": [{"text": "x"}]}],
        "generationConfig": {"thinkingConfig": {"include_thoughts": True, "thinking_level": "high"}},
    }
    parsed = parse_and_check(orjson.dumps(body), PRO_3)
    assert parsed.include_thoughts
    assert parsed.generation_config is not None
    assert parsed.generation_config.thinking_config is not None
    assert parsed.generation_config.thinking_config.thinking_level == "HIGH"


def bad(body: Any, model: Any = FLASH_25) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse_and_check(body if isinstance(body, bytes) else orjson.dumps(body), model)
    assert info.value.code == 400
    assert info.value.status == "INVALID_ARGUMENT"
    return info.value


def test_data_url_prefix_names_the_field_path() -> None:
    err = bad(
        {
            "contents": [
                {
                    "parts": [
                        {"text": "x"},
                        {"inline_data": {"mime_type": "image/png", "data": "data:image/png;base64,iVBOR"}},
                    ]
                }
            ]
        }
    )
    assert err.message.startswith(
        "Invalid value at 'contents[0].parts[1].inline_data.data' (TYPE_BYTES), Base64 decoding failed for \"data:image/png;base64,"
    )
    assert err.details[0]["fieldViolations"][0]["field"] == "contents[0].parts[1].inline_data.data"


def test_bad_thought_signature() -> None:
    err = bad({"contents": [{"parts": [{"text": "x", "thoughtSignature": "not base64!"}]}]})
    assert "contents[0].parts[0].thought_signature" in err.message


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"contents": []}, "contents is not specified"),
        ({}, "contents is not specified"),
        ({"contents": [{"parts": []}]}, "must not be empty"),
        ({"contents": [{"parts": [{}]}]}, "required oneof field 'data'"),
        (
            {"contents": [{"parts": [{"inlineData": {"mimeType": "text/plain", "data": "QUJD"}}]}]},
            "Unsupported MIME type: text/plain",
        ),
        (
            {"contents": [{"parts": [{"inlineData": {"mimeType": "png", "data": "QUJD"}}]}]},
            "Unsupported MIME type: png",
        ),
        (
            {"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"candidateCount": 2}},
            "Multiple candidates is not enabled for models/gemini-2.5-flash-image",
        ),
        (
            {
                "contents": [{"parts": [{"text": "x"}]}],
                "generationConfig": {"imageConfig": {"aspectRatio": "7:3"}},
            },
            "Unsupported aspect ratio",
        ),
        (
            {
                "contents": [{"parts": [{"text": "x"}]}],
                "generationConfig": {"imageConfig": {"imageSize": "2K"}},
            },
            "Unsupported image size",
        ),
        ({"contents": [{"parts": [{"text": 5}]}]}, "(TYPE_STRING)"),
        ({"contents": "hello"}, "Invalid value at 'contents'"),
        (
            {"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"candidateCount": "two"}},
            "generation_config.candidate_count",
        ),
    ],
)
def test_bad_requests(body: dict[str, Any], needle: str) -> None:
    assert needle in bad(body).message


def test_too_many_images_follows_the_model() -> None:
    img = {"inlineData": {"mimeType": "image/png", "data": "QUJD"}}
    four = {"contents": [{"parts": [{"text": "x"}, img, img, img, img]}]}
    assert "at most 3" in bad(four).message
    parse_and_check(orjson.dumps(four), FLASH_31)  # 3.x takes 14
    fifteen = {"contents": [{"parts": [{"text": "x"}] + [img] * 15}]}
    assert "at most 14" in bad(fifteen, FLASH_31).message


def test_lowercase_k_is_rejected_and_512_only_on_31_flash() -> None:
    body = {
        "contents": [{"parts": [{"text": "x"}]}],
        "generationConfig": {"imageConfig": {"imageSize": "2k"}},
    }
    bad(body, PRO_3)
    ok = {
        "contents": [{"parts": [{"text": "x"}]}],
        "generationConfig": {"imageConfig": {"imageSize": "512", "aspectRatio": "8:1"}},
    }
    parse_and_check(orjson.dumps(ok), FLASH_31)
    bad(ok, PRO_3)


@pytest.mark.parametrize("body", [b"", b"{", b"[1,2]", b"null", b'"str"', b"\xff\xfe"])
def test_malformed_json(body: bytes) -> None:
    assert bad(body).message.startswith("Invalid JSON payload received.")


def test_field_path() -> None:
    assert (
        field_path(("contents", 0, "parts", 1, "inlineData", "data"))
        == "contents[0].parts[1].inline_data.data"
    )
