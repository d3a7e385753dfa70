"""The byte scanner agrees with a full JSON parse on any response shape."""

from __future__ import annotations

import base64
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from bananagate.protocol.response import Usage
from bananagate.protocol.scan import count_output_images, is_error_event, scan_finish_reason, scan_usage

b64 = st.one_of(st.binary(max_size=200), st.binary(min_size=12_000, max_size=20_000)).map(
    lambda b: base64.b64encode(b).decode()
)
nasty_text = st.lists(
    st.sampled_from([*'ab{}[]":,\\ \n', '"inlineData"', '"usageMetadata"', '"thought":true']), max_size=20
).map("".join)


@st.composite
def parts(draw: st.DrawFn, snake: bool) -> dict[str, Any]:
    blob_key, mime_key = ("inline_data", "mime_type") if snake else ("inlineData", "mimeType")
    if draw(st.booleans()):
        part: dict[str, Any] = {"text": draw(nasty_text)}
    else:
        part = {blob_key: {mime_key: "image/png", "data": draw(b64)}}
    if draw(st.booleans()):
        part["thought"] = draw(st.booleans())
    if draw(st.booleans()):
        part["thoughtSignature"] = draw(b64)
    if draw(st.booleans()) and len(part) > 1:
        # key order varies between servers
        part = dict(reversed(list(part.items())))
    return part


@st.composite
def responses(draw: st.DrawFn) -> dict[str, Any]:
    snake = draw(st.booleans())
    ps = draw(st.lists(parts(snake), max_size=5))
    usage = {
        "promptTokenCount": draw(st.integers(0, 5000)),
        "candidatesTokenCount": draw(st.integers(0, 5000)),
        "totalTokenCount": 1,
        "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": draw(st.integers(0, 3000))}],
    }
    finish = draw(st.sampled_from(["STOP", "IMAGE_SAFETY", "NO_IMAGE", "MAX_TOKENS"]))
    candidate = {
        "content": {"role": "model", "parts": ps},
        ("finish_reason" if snake else "finishReason"): finish,
    }
    out: dict[str, Any] = {"candidates": [candidate]}
    out["usage_metadata" if snake else "usageMetadata"] = usage
    out["modelVersion"] = "gemini-2.5-flash-image"
    return out


def expected_images(resp: dict[str, Any]) -> int:
    return sum(
        1
        for p in resp["candidates"][0]["content"]["parts"]
        if ("inlineData" in p or "inline_data" in p) and not p.get("thought")
    )


@settings(max_examples=300)
@given(responses(), st.booleans())
def test_scan_matches_full_parse(resp: dict[str, Any], indent: bool) -> None:
    body = orjson.dumps(resp, option=orjson.OPT_INDENT_2 if indent else 0)
    usage_key = "usage_metadata" if "usage_metadata" in resp else "usageMetadata"
    assert scan_usage(body) == Usage.from_wire(resp[usage_key])
    cand = resp["candidates"][0]
    assert scan_finish_reason(body) == (cand.get("finishReason") or cand.get("finish_reason"))
    if not indent:  # the thought marker is looked up in compact form and with one space
        assert count_output_images(body) == expected_images(resp)


def test_missing_fields() -> None:
    assert scan_usage(b'{"candidates": []}') == Usage()
    assert scan_finish_reason(b"{}") is None
    assert count_output_images(b"{}") == 0
    assert is_error_event(b'{"error": {"code": 500}}'.replace(b": ", b":"))
    assert not is_error_event(b'{"candidates": []}')


def test_skeleton_cuts_payloads_only() -> None:
    data = base64.b64encode(bytes(range(256)) * 100).decode()
    resp = {
        "candidates": [
            {
                "content": {
                    "parts": [
                        {"text": 'say "data": "x"'},
                        {"inlineData": {"mimeType": "image/png", "data": data}},
                    ]
                }
            }
        ]
    }
    body = orjson.dumps(resp)
    from bananagate.protocol.scan import skeleton

    small = skeleton(body)
    assert len(small) < 300
    assert orjson.loads(small)["candidates"][0]["content"]["parts"][1]["inlineData"]["data"] == ""
    assert orjson.loads(small)["candidates"][0]["content"]["parts"][0]["text"] == 'say "data": "x"'


def test_is_json_object_catches_truncation() -> None:
    from bananagate.protocol.scan import is_json_object

    data = base64.b64encode(bytes(range(256)) * 200).decode()
    body = orjson.dumps(
        {"candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": data}}]}}]}
    )
    assert is_json_object(body)
    for cut in (10, len(body) // 2, len(body) - 1):
        assert not is_json_object(body[:cut])
    assert not is_json_object(b"[1]")
