"""Lean parsing (protocol/lean.py) must never disagree with a full parse: same request (but for
the elided image data, which sits in the body at the spans), same errors."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bananagate.protocol.catalog import MODELS
from bananagate.protocol.errors import ApiError
from bananagate.protocol.lean import LEAN_MIN_BYTES
from bananagate.protocol.validation import lean_request, parse_and_check
from bananagate.protocol.wire import GenerateContentRequest

MODEL = next(m for m in MODELS if m.id == "gemini-2.5-flash-image")
BIG = b"\x89PNG" + bytes(range(256)) * (LEAN_MIN_BYTES // 256 + 1)


def _b64(data: bytes, style: str) -> str:
    if style == "urlsafe":
        return base64.urlsafe_b64encode(data).decode()
    text = base64.b64encode(data).decode()
    if style == "unpadded":
        return text.rstrip("=")
    if style == "wrapped":
        return "\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    return text


def _blob(data: str, mime: str | None, camel: bool, data_first: bool) -> dict[str, Any]:
    pairs: list[tuple[str, Any]] = [("data", data)]
    if mime is not None:
        pairs.insert(0 if not data_first else 1, ("mimeType" if camel else "mime_type", mime))
    return {("inlineData" if camel else "inline_data"): dict(pairs)}


texts = st.lists(
    st.sampled_from([*'ab "\\\n{}[]:,é', '"data":', '"inlineData":{', '"data":"QUJD"']), max_size=12
).map("".join)
images = st.tuples(
    st.binary(min_size=0, max_size=40).map(lambda b: BIG + b),
    st.sampled_from(["standard"] * 5 + ["urlsafe", "unpadded", "wrapped"]),
    st.sampled_from(["image/png"] * 5 + ["image/jpeg", "text/plain", "", None]),
    st.booleans(),
    st.booleans(),
)
# Mostly well-formed parts (the lean path's ground), some of each kind of mistake.
parts = st.one_of(
    texts.map(lambda t: {"text": t}),
    images.map(lambda i: _blob(_b64(i[0], i[1]), i[2], i[3], i[4])),
    images.map(lambda i: _blob(_b64(i[0], "standard"), "image/png", i[3], i[4])),
    st.just({"text": "x", "thoughtSignature": "c2lnbmF0dXJl"}),
    st.sampled_from(
        [
            {"inlineData": {"mimeType": "image/png", "data": ""}},
            {"inlineData": {"mimeType": "image/png", "data": "not base64!"}},
            {"inlineData": {"mimeType": "image/png", "data": 5}},
        ]
    ),
)
contents = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "model"]), "parts": st.lists(parts, max_size=3)}),
    min_size=1,
    max_size=3,
)


def _outcome(body: bytes, lean: bool) -> GenerateContentRequest | str:
    try:
        return parse_and_check(body, MODEL, lean=lean)
    except ApiError as exc:
        return f"{exc.code} {exc.message}"


def _with_data(request: GenerateContentRequest, body: bytes) -> dict[str, Any]:
    """The lean request's wire form with each elided `data` read back from the body."""
    wire = request.model_dump(by_alias=True, exclude_none=True)
    spans = iter(request.elided_spans)
    for content in wire.get("contents", []):
        for part in content.get("parts", []):
            if "inlineData" in part:
                start, end = next(spans)
                part["inlineData"]["data"] = body[start:end].decode()
    return wire


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(contents=contents, system=st.booleans(), indent=st.booleans())
def test_lean_parse_agrees_with_a_full_parse(
    contents: list[dict[str, Any]], system: bool, indent: bool
) -> None:
    payload: dict[str, Any] = {"contents": contents}
    if system:
        payload["systemInstruction"] = {"parts": [{"text": "be brief"}]}
    body = orjson.dumps(payload, option=orjson.OPT_INDENT_2 if indent else 0)
    full = _outcome(body, lean=False)
    lean = _outcome(body, lean=True)
    if isinstance(full, str) or isinstance(lean, str):
        assert lean == full
        return
    if lean.elided_spans:
        assert _with_data(lean, body) == full.model_dump(by_alias=True, exclude_none=True)
    else:
        assert lean == full


def _image_request(*datas: str, prompt: str = "Make it blue") -> bytes:
    parts: list[dict[str, Any]] = [{"text": prompt}]
    parts += [{"inlineData": {"mimeType": "image/png", "data": d}} for d in datas]
    return orjson.dumps({"contents": [{"role": "user", "parts": parts}]})


def test_big_canonical_images_are_checked_in_place() -> None:
    datas = [base64.b64encode(BIG + bytes([i])).decode() for i in range(3)]
    body = _image_request(*datas)
    request = parse_and_check(body, MODEL, lean=True)
    assert [body[a:b].decode() for a, b in request.elided_spans] == datas
    assert [image.data for image in request.input_images()] == ["", "", ""]
    assert request.prompt_text() == "Make it blue"


@pytest.mark.parametrize(
    "body",
    [
        _image_request(base64.urlsafe_b64encode(BIG + b"\xfb\xff").decode()),  # URL-safe alphabet
        _image_request(base64.b64encode(BIG).decode(), prompt='say "hi"'),  # an escaped quote
        orjson.dumps(
            {
                "systemInstruction": {
                    "parts": [
                        {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(BIG).decode()}}
                    ]
                },
                "contents": [{"parts": [{"text": "x"}]}],
            }
        ),
        _image_request("QUJD"),  # small: a full parse costs nothing
    ],
)
def test_bodies_only_a_full_parse_reads_exactly_are_left_to_it(body: bytes) -> None:
    assert lean_request(body) is None
    assert parse_and_check(body, MODEL, lean=True).elided_spans == ()


def test_broken_base64_in_a_big_body_gets_the_full_parse_error() -> None:
    body = _image_request(base64.b64encode(BIG).decode()[:-8] + "!!!!====")
    with pytest.raises(ApiError) as lean_error:
        parse_and_check(body, MODEL, lean=True)
    with pytest.raises(ApiError) as full_error:
        parse_and_check(body, MODEL)
    assert lean_error.value.code == 400
    assert lean_error.value.message == full_error.value.message
    assert "Base64 decoding failed" in lean_error.value.message
