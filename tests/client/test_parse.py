"""Pure parsing: answers in either casing, error envelopes, the no-image rule, result helpers."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from bananagate.client.errors import (
    AuthenticationError,
    InvalidRequestError,
    NoImageError,
    NotFoundError,
    RateLimitError,
    SafetyBlockedError,
    ServerError,
)
from bananagate.client.parse import error_from_response, parse_result, parse_retry_after, require_image
from bananagate.client.result import GeneratedImage

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def to_snake(value: Any, choose: Any = None) -> Any:
    """Every dict key (recursively) in snake_case; with `choose`, each key picks its casing."""
    if isinstance(value, list):
        return [to_snake(v, choose) for v in value]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            snake = _CAMEL.sub("_", k).lower()
            out[snake if choose is None or choose() else k] = to_snake(v, choose)
        return out
    return value


b64 = st.binary(min_size=1, max_size=40).map(lambda b: base64.b64encode(b).decode())
text_part = st.fixed_dictionaries({"text": st.text(max_size=20)}, optional={"thought": st.booleans()})
image_part = st.fixed_dictionaries(
    {
        "inlineData": st.fixed_dictionaries(
            {"mimeType": st.sampled_from(["image/png", "image/jpeg"]), "data": b64}
        )
    },
    optional={"thought": st.booleans(), "thoughtSignature": b64},
)
usage = st.fixed_dictionaries(
    {"promptTokenCount": st.integers(0, 5000), "candidatesTokenCount": st.integers(0, 5000)},
    optional={
        "thoughtsTokenCount": st.integers(0, 500),
        "candidatesTokensDetails": st.lists(
            st.fixed_dictionaries(
                {"modality": st.sampled_from(["TEXT", "IMAGE"]), "tokenCount": st.integers(0, 2000)}
            ),
            max_size=2,
        ),
    },
)
candidate = st.fixed_dictionaries(
    {
        "content": st.fixed_dictionaries(
            {"role": st.just("model"), "parts": st.lists(text_part | image_part, max_size=5)}
        )
    },
    optional={
        "finishReason": st.sampled_from(["STOP", "IMAGE_SAFETY", "NO_IMAGE"]),
        "finishMessage": st.text(max_size=10),
    },
)
response = st.fixed_dictionaries(
    {"candidates": st.lists(candidate, min_size=1, max_size=2)},
    optional={
        "usageMetadata": usage,
        "modelVersion": st.text(max_size=10),
        "responseId": st.text(max_size=10),
        "promptFeedback": st.fixed_dictionaries({"blockReason": st.sampled_from(["SAFETY", "OTHER"])}),
    },
)


def summary(body: dict[str, Any]) -> tuple[Any, ...]:
    r = parse_result(body)
    return (
        r.images,
        r.text,
        r.finish_reason,
        r.finish_message,
        r.usage,
        r.block_reason,
        r.model_version,
        r.response_id,
    )


@settings(max_examples=150, deadline=None)
@given(response, st.randoms(use_true_random=False))
def test_snake_case_and_camel_case_parse_the_same(body: dict[str, Any], rnd: Any) -> None:
    camel = summary(body)
    assert summary(to_snake(body)) == camel
    assert summary(to_snake(body, choose=lambda: rnd.random() < 0.5)) == camel


def test_fixed_pair_snake_and_camel() -> None:
    png = base64.b64encode(b"\x89PNG fake").decode()
    camel = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "draft", "thought": True},
                        {"inlineData": {"mimeType": "image/png", "data": png}, "thought": True},
                        {"text": "Here you go"},
                        {"inlineData": {"mimeType": "image/jpeg", "data": png}, "thoughtSignature": "c2ln"},
                    ],
                },
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 10,
            "candidatesTokenCount": 1300,
            "thoughtsTokenCount": 7,
            "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": 1290}],
        },
        "modelVersion": "gemini-3-pro-image-preview",
        "responseId": "abc",
    }
    a, b = parse_result(camel), parse_result(to_snake(camel))
    assert summary(camel) == summary(to_snake(camel))
    # Thought parts are drafts: only the answer's image and text count.
    assert [i.mime_type for i in a.images] == ["image/jpeg"]
    assert a.text == "Here you go"
    assert a.images[0].thought_signature == b.images[0].thought_signature == "c2ln"
    assert a.usage.candidates_image_tokens == 1290 and a.usage.thoughts_tokens == 7
    assert a.usage.total_tokens == 1317


def test_final_image_is_the_last_non_thought_image_and_all_are_exposed() -> None:
    parts = [
        {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(b"one").decode()}},
        {
            "inlineData": {"mimeType": "image/png", "data": base64.b64encode(b"thought").decode()},
            "thought": True,
        },
        {
            "inline_data": {
                "mime_type": "image/webp",
                "data": base64.urlsafe_b64encode(b"two\xff\xfe").decode().rstrip("="),
            }
        },
    ]
    result = parse_result({"candidates": [{"content": {"parts": parts}, "finishReason": "STOP"}]})
    assert [i.data for i in result.images] == [b"one", b"two\xff\xfe"]
    assert result.image is not None and result.image.data == b"two\xff\xfe"


def test_cost_and_request_id_come_from_headers_or_body() -> None:
    body: dict[str, Any] = {"candidates": []}
    assert parse_result(body, {}).cost is None
    r = parse_result(body, {"X-Bananagate-Cost-USD": "0.039", "X-Request-Id": "rid-1"})
    assert r.cost == pytest.approx(0.039) and r.request_id == "rid-1"
    assert parse_result({**body, "cost": 0.134}).cost == pytest.approx(0.134)
    assert parse_result({**body, "cost": {"usd": "0.5"}}).cost == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("body", "error", "reason"),
    [
        (
            {
                "candidates": [
                    {
                        "content": {"role": "model"},
                        "finishReason": "IMAGE_SAFETY",
                        "finishMessage": "filtered",
                    }
                ]
            },
            SafetyBlockedError,
            "IMAGE_SAFETY",
        ),
        ({"promptFeedback": {"blockReason": "SAFETY"}}, SafetyBlockedError, "SAFETY"),
        (
            {
                "candidates": [
                    {"content": {"parts": [{"text": "I can't draw that"}]}, "finishReason": "NO_IMAGE"}
                ]
            },
            NoImageError,
            "NO_IMAGE",
        ),
        (
            {"candidates": [{"content": {"parts": [{"text": "Just words"}]}, "finishReason": "STOP"}]},
            NoImageError,
            "STOP",
        ),
    ],
)
def test_no_image_answers_raise_typed_errors(
    body: dict[str, Any], error: type[NoImageError], reason: str
) -> None:
    with pytest.raises(error) as info:
        require_image(parse_result(body))
    exc = info.value
    assert type(exc) is error
    assert reason in (exc.finish_reason, exc.block_reason)
    assert reason in str(exc)
    parts = (body.get("candidates") or [{}])[0].get("content", {}).get("parts", [])
    if parts:
        assert exc.text == parts[0]["text"]


def test_google_envelope_with_retry_info() -> None:
    body = b"""{"error": {"code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED",
      "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "26s"}]}}"""
    exc = error_from_response(429, {"x-request-id": "r9"}, body)
    assert isinstance(exc, RateLimitError)
    assert (exc.status, exc.code, exc.retry_after, exc.request_id) == (429, "RESOURCE_EXHAUSTED", 26.0, "r9")
    assert exc.message == "Resource has been exhausted" and exc.body["error"]["code"] == 429


@pytest.mark.parametrize(
    ("status", "body", "cls", "code", "message"),
    [
        (
            400,
            b'{"error":{"message":"model name is required","type":"comet_api_error","param":"","code":"invalid_request"}}',
            InvalidRequestError,
            "invalid_request",
            "model name is required",
        ),
        (
            401,
            b'[{"error": {"code": 401, "message": "bad key", "status": "UNAUTHENTICATED"}}]',
            AuthenticationError,
            "UNAUTHENTICATED",
            "bad key",
        ),
        (
            403,
            b'{"error": {"code": 403, "message": "no", "status": "PERMISSION_DENIED"}}',
            AuthenticationError,
            "PERMISSION_DENIED",
            "no",
        ),
        (
            404,
            b'{"error": {"code": 404, "message": "models/x is not found", "status": "NOT_FOUND"}}',
            NotFoundError,
            "NOT_FOUND",
            "models/x is not found",
        ),
        (502, b"<html>Bad Gateway</html>", ServerError, None, "<html>Bad Gateway</html>"),
        (503, b"", ServerError, None, "HTTP 503 with no message"),
    ],
)
def test_error_envelopes(status: int, body: bytes, cls: type, code: str | None, message: str) -> None:
    exc = error_from_response(status, {}, body)
    assert type(exc) is cls
    assert (exc.status, exc.code, exc.message) == (status, code, message)


def test_retry_after_header_seconds_and_date() -> None:
    assert error_from_response(503, {"Retry-After": "3"}, b"").retry_after == 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == pytest.approx(10.0)
    assert parse_retry_after("soon") is None


def test_generated_image_save_names_file_by_mime_type(tmp_path: Path) -> None:
    out = io.BytesIO()
    Image.new("RGB", (30, 20)).save(out, format="JPEG")
    image = GeneratedImage(out.getvalue(), "image/jpeg")
    assert image.size == (30, 20)
    assert image.save(tmp_path / "a").name == "a.jpg"
    assert image.save(tmp_path / "b.png").name == "b.jpg"  # never a JPEG named .png
    assert image.save(tmp_path / "shot.v2").name == "shot.v2.jpg"
    assert GeneratedImage(b"", "image/webp").path_for("x").name == "x.webp"
    with Image.open(tmp_path / "b.jpg") as img:
        assert img.format == "JPEG"
    assert image.to_pil().size == (30, 20)
