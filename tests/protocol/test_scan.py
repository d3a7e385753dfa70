"""The byte scanner agrees with a full JSON parse on any response shape."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bananagate.protocol import base64codec
from bananagate.protocol.response import Usage
from bananagate.protocol.scan import (
    count_output_images,
    inline_image_bytes,
    is_error_event,
    is_json_object,
    scan_answer,
    scan_finish_reason,
    scan_usage,
    summarize,
)

# Big payloads by repetition: Hypothesis draws at most a few kB of fresh bytes per example.
b64 = st.one_of(st.binary(max_size=200), st.binary(min_size=1, max_size=40).map(lambda b: b * 400)).map(
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
    whole = orjson.dumps(resp, option=orjson.OPT_INDENT_2 if indent else 0)
    usage_key = "usage_metadata" if "usage_metadata" in resp else "usageMetadata"
    cand = resp["candidates"][0]
    # A whole object is summarised from one parse of its skeleton; a body that is not one (a
    # trailing comma here) falls back to hopping through its bytes. Both read the same fields.
    for body in (whole, whole + b","):
        assert is_json_object(body) == (body is whole)
        assert scan_usage(body) == Usage.from_wire(resp[usage_key])
        assert scan_finish_reason(body) == (cand.get("finishReason") or cand.get("finish_reason"))
        if body is whole or not indent:  # bytes: the thought marker in compact form or one space
            assert count_output_images(body) == expected_images(resp)
    summary = summarize(whole)
    assert summary is not None and summary.image_count == expected_images(resp)
    assert summary.usage == Usage.from_wire(resp[usage_key])


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

    data = base64.b64encode(bytes(range(256)) * 200).decode()
    body = orjson.dumps(
        {"candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": data}}]}}]}
    )
    assert is_json_object(body)
    for cut in (10, len(body) // 2, len(body) - 1):
        assert not is_json_object(body[:cut])
    assert not is_json_object(b"[1]")


# --- scan_answer: images as byte spans, against a full parse ---------------------------------------


def parsed_answer(body: bytes) -> tuple[list[tuple[str, str]], list[str], str | None] | None:
    """The oracle: orjson parses the whole body; (MIME type, data string) of the first candidate's
    non-thought images, its non-thought texts, and its finish reason."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None

    def first_str(obj: dict[str, Any], *keys: str) -> str | None:
        return next((v for k in keys if isinstance(v := obj.get(k), str) and v), None)

    images: list[tuple[str, str]] = []
    texts: list[str] = []
    finish = None
    cands = doc.get("candidates")
    dict_cands = [c for c in cands if isinstance(c, dict)] if isinstance(cands, list) else []
    if dict_cands:
        cand = dict_cands[0]
        finish = first_str(cand, "finishReason", "finish_reason")
        content = cand.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        for part in parts if isinstance(parts, list) else []:
            if not isinstance(part, dict) or part.get("thought"):
                continue
            blob = part.get("inlineData") or part.get("inline_data")
            if isinstance(blob, dict):
                if isinstance(blob.get("data"), str):
                    images.append((first_str(blob, "mimeType", "mime_type") or "image/png", blob["data"]))
            elif isinstance(part.get("text"), str):
                texts.append(part["text"])
    return images, texts, finish


# Big payloads by repetition: Hypothesis draws at most a few kB of fresh bytes per example.
raw = st.binary(max_size=120) | st.binary(min_size=1, max_size=40).map(lambda b: b * 300)
data_strings = st.one_of(
    raw.map(lambda b: base64.b64encode(b).decode()),
    raw.map(lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")),
    raw.map(lambda b: base64.encodebytes(b).decode()),  # wrapped: JSON carries "\n" escapes
    st.sampled_from(["", "not base64!", "QUJD\u00e9", "AAAA===", 'a"b\\c']),
)
odd_values = st.one_of(
    st.none(), st.integers(-(2**63), 2**63 - 1), st.booleans(), st.just([]), st.just({"data": "x"})
)
scalar_text = st.lists(
    st.sampled_from([*'ab{}[]":,\\/ \n\t\x00é', '"data": "QUJD"', '\\"data\\"', '"inlineData"', "data"]),
    max_size=12,
).map("".join)


@st.composite
def answer_parts_(draw: st.DrawFn) -> dict[str, Any]:
    snake = draw(st.booleans())
    blob_key, mime_key = ("inline_data", "mime_type") if snake else ("inlineData", "mimeType")
    kind = draw(st.sampled_from(["text", "image", "image", "odd"]))
    part: dict[str, Any]
    if kind == "text":
        part = {"text": draw(scalar_text)}
    elif kind == "image":
        blob: dict[str, Any] = {"data": draw(data_strings)}
        if draw(st.booleans()):
            blob[mime_key] = draw(st.sampled_from(["image/png", "image/jpeg", "", 7]))
        if draw(st.booleans()):
            blob = dict(reversed(list(blob.items())))
        part = {blob_key: blob}
    else:
        part = draw(
            st.sampled_from(
                [{blob_key: {"data": draw(odd_values)}}, {blob_key: {}, "text": "t"}, {"data": "QUJD"}, {}]
            )
        )
    if draw(st.booleans()):
        part["thought"] = draw(st.sampled_from([True, False, 1, 0, "", "yes", None]))
    if draw(st.booleans()):
        part["thoughtSignature"] = draw(data_strings)
    return part


@st.composite
def answers(draw: st.DrawFn) -> dict[str, Any]:
    candidates: list[Any] = []
    if draw(st.booleans()):
        candidates.append(draw(st.sampled_from(["junk", 3, None])))
    for _ in range(draw(st.integers(0, 2))):
        candidate: dict[str, Any] = {
            "content": {"role": "model", "parts": draw(st.lists(answer_parts_(), max_size=4))}
        }
        if draw(st.booleans()):
            key = draw(st.sampled_from(["finishReason", "finish_reason"]))
            candidate[key] = draw(st.sampled_from(["STOP", "IMAGE_SAFETY", "", 5]))
        candidates.append(candidate)
    out: dict[str, Any] = {"candidates": candidates}
    if draw(st.booleans()):
        out["promptFeedback"] = {"data": draw(data_strings), draw(scalar_text): {"data": 1}}
    out["usageMetadata"] = {"totalTokenCount": 3}
    return out


@st.composite
def answer_bodies(draw: st.DrawFn) -> bytes:
    body = orjson.dumps(draw(answers()), option=orjson.OPT_INDENT_2 if draw(st.booleans()) else 0)
    if draw(st.booleans()):  # some encoders escape every slash (a "/" only ever sits in a string)
        body = body.replace(b"/", b"\\/")
    if draw(st.booleans()):  # the same member name, spelled with an escape, and spaced out
        body = body.replace(b'"data":', draw(st.sampled_from([b'"d\\u0061ta":', b'"data" :\t'])))
    if draw(st.integers(0, 9)) == 7:  # broken bodies: cut off, or a stray byte anywhere
        at = draw(st.integers(0, len(body)))
        if draw(st.booleans()):
            body = body[:at]
        else:
            body = body[:at] + draw(st.sampled_from([b"\x01", b"\xff", b'"', b"\\", b"{", b"\n"])) + body[at:]
    return body


def try_decode(text: str) -> bytes | None:
    try:
        return base64codec.decode(text)
    except ValueError:
        return None


@settings(max_examples=400, deadline=None)
@given(answer_bodies(), st.sampled_from([{}, {"whole_below": 0}, {"whole_below": 0, "max_hops": 3}]))
def test_scan_answer_matches_a_full_parse(body: bytes, options: dict[str, int]) -> None:
    expected = parsed_answer(body)
    got = scan_answer(body, **options)
    if expected is None:
        assert got is None
        return
    assert got is not None
    images, texts, finish = expected
    assert (got.texts, got.finish_reason) == (texts, finish)
    assert [img.mime_type for img in got.images] == [mime for mime, _ in images]
    for img, (_, data) in zip(got.images, images, strict=True):
        # The span is the string's exact bytes, or the value says what the string holds.
        assert (body[img.start : img.end].decode() if img.value is None else img.value) == data
        want = try_decode(data)
        if want is None:
            with pytest.raises(ValueError):
                inline_image_bytes(body, img)
        else:
            assert inline_image_bytes(body, img) == want


def test_scan_answer_finds_a_big_image_without_parsing_it() -> None:
    image = bytes(range(256)) * 4000
    b64 = base64.b64encode(image).decode()
    body = orjson.dumps(
        {
            "candidates": [
                {
                    "content": {
                        "parts": [
                            {"text": 'a "quoted" \\ text', "thought": True},
                            {"inlineData": {"mimeType": "image/webp", "data": b64}, "thought": True},
                            {"text": 'say "data": "x"'},
                            {"inlineData": {"mimeType": "image/jpeg", "data": b64}},
                        ]
                    },
                    "finishReason": "STOP",
                }
            ]
        }
    )
    got = scan_answer(body)
    assert got is not None and got.texts == ['say "data": "x"'] and got.finish_reason == "STOP"
    (img,) = got.images
    assert img.mime_type == "image/jpeg" and img.value is None and body[img.start : img.end] == b64.encode()
    assert inline_image_bytes(body, img) == image
    assert scan_answer(body[:-1]) is None and scan_answer(b"[" + body + b"]") is None


def test_skeletons_of_alternating_bodies_are_their_own() -> None:
    # skeleton() remembers the last big body's skeleton: it must never answer for another body.
    def big(tokens: int) -> bytes:
        return orjson.dumps(
            {
                "candidates": [{"content": {"parts": [{"inlineData": {"data": "QUJD" * 10_000}}]}}],
                "usageMetadata": {"promptTokenCount": tokens},
            }
        )

    first, second = big(1), big(2)
    for _ in range(2):
        assert scan_usage(first).prompt_tokens == 1
        assert scan_usage(second).prompt_tokens == 2
    # Answers read into bytearrays (the upstream pool's buffers, never written after they are
    # read) are remembered too, by identity: each still gets its own skeleton.
    third, fourth = bytearray(big(3)), bytearray(big(4))
    for _ in range(2):
        assert scan_usage(third).prompt_tokens == 3
        assert scan_usage(fourth).prompt_tokens == 4
        assert scan_usage(second).prompt_tokens == 2


def test_summaries_of_alternating_bodies_are_their_own() -> None:
    # summarize() remembers the last body's summary, by identity, and never answers for another.
    def answer(images: int, finish: str) -> bytearray:
        part = {"inlineData": {"mimeType": "image/png", "data": "QUJD" * 10_000}}
        return bytearray(
            orjson.dumps({"candidates": [{"content": {"parts": [part] * images}, "finishReason": finish}]})
        )

    one, two = answer(1, "STOP"), answer(2, "IMAGE_SAFETY")
    for _ in range(2):
        assert (count_output_images(one), scan_finish_reason(one)) == (1, "STOP")
        assert (count_output_images(two), scan_finish_reason(two)) == (2, "IMAGE_SAFETY")
    assert summarize(b'["not", "an object"]') is None and not is_json_object(b"[]")
