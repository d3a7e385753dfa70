"""Fuzzing the parsers that see untrusted bytes first: the request parser
(`protocol.validation.parse_and_check`), the Base64 validator and decoder, and image decoding.

The contract under test: whatever the input, the request parser raises nothing but `ApiError`
(a 4xx the client can read), the Base64 functions nothing but what they document, image decoding
nothing but `ImageRejected`; and none of them takes long, whatever the input's shape.
Examples are derandomized (the same on every run) and bounded, so CI is reproducible.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import time
import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from bananagate.imaging import ImageRejected, ImageTooLarge, decode_image, image_size_of
from bananagate.protocol import base64codec
from bananagate.protocol.catalog import MODELS, find_model
from bananagate.protocol.errors import ApiError
from bananagate.protocol.validation import parse_and_check

FUZZ = settings(
    max_examples=150,
    deadline=2000,  # ms per example: "never hangs"
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FLASH = find_model("gemini-2.5-flash-image")
assert FLASH is not None

# --- strategies -----------------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=25,
)
b64_text = st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode())
b64ish = st.text(alphabet="ABCDEFabcdef0189+/-_= \n\t%:.", max_size=40) | b64_text
field_names = st.sampled_from(
    [
        "text",
        "inlineData",
        "inline_data",
        "mimeType",
        "mime_type",
        "data",
        "thoughtSignature",
        "thought",
        "fileData",
        "role",
        "parts",
        "unknownField",
    ]
)


@st.composite
def parts(draw: st.DrawFn) -> dict[str, Any]:
    """A Part that is often almost right: the shapes clients get wrong in real life."""
    choice = draw(st.integers(0, 4))
    if choice == 0:
        return {"text": draw(st.text(max_size=40) | json_values)}
    if choice == 1:
        mime = draw(
            st.sampled_from(["image/png", "image/jpeg", "png", "", "image/gif"]) | st.text(max_size=10)
        )
        key = draw(st.sampled_from(["inlineData", "inline_data"]))
        return {key: {"mimeType": mime, "data": draw(b64ish | json_values)}}
    if choice == 2:
        return {"text": "x", "thoughtSignature": draw(b64ish | json_values)}
    if choice == 3:
        return draw(st.dictionaries(field_names, json_values, max_size=3))
    return {"fileData": {"fileUri": draw(st.text(max_size=30)), "mimeType": "image/png"}}


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {
        "contents": draw(
            st.lists(
                st.fixed_dictionaries(
                    {"parts": st.lists(parts(), max_size=4) | json_values},
                    optional={"role": st.sampled_from(["user", "model", "system", ""]) | json_values},
                ),
                max_size=3,
            )
            | json_values
        )
    }
    if draw(st.booleans()):
        body["generationConfig"] = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "responseModalities": st.lists(st.sampled_from(["TEXT", "IMAGE", "image", "AUDIO", ""]))
                    | json_values,
                    "imageConfig": st.fixed_dictionaries(
                        {},
                        optional={
                            "aspectRatio": st.sampled_from(["1:1", "16:9", "1:8", "2:1", ""]) | json_values,
                            "imageSize": st.sampled_from(["1K", "2K", "4K", "512", "1k", "8K"]) | json_values,
                        },
                    )
                    | json_values,
                    "candidateCount": st.integers(-3, 3) | json_values,
                    "seed": st.integers() | json_values,
                    "temperature": json_values,
                    "thinkingConfig": json_values,
                },
            )
            | json_values
        )
    if draw(st.booleans()):
        body[draw(st.text(max_size=15))] = draw(json_values)
    return body


def _dumps(value: Any) -> bytes:
    # The stdlib, not orjson: it writes integers beyond 64 bits, which clients may send too.
    return json.dumps(value).encode()


def _only_api_errors(body: bytes, model: Any = FLASH) -> None:
    try:
        parse_and_check(body, model)
    except ApiError as error:
        assert 400 <= error.code < 500, error
        assert error.to_json()  # renders


# --- the request parser ---------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=2000))
def test_parser_on_arbitrary_bytes(data: bytes) -> None:
    _only_api_errors(data)


@FUZZ
@given(json_values)
def test_parser_on_arbitrary_json(value: Any) -> None:
    _only_api_errors(_dumps(value))


@FUZZ
@given(requests(), st.sampled_from(MODELS))
def test_parser_on_almost_valid_requests(body: dict[str, Any], model: Any) -> None:
    _only_api_errors(_dumps(body), model)


@FUZZ
@given(requests(), st.integers(0, 10_000), st.binary(min_size=1, max_size=3))
def test_parser_on_corrupted_valid_json(body: dict[str, Any], where: int, junk: bytes) -> None:
    raw = _dumps(body)
    cut = where % (len(raw) + 1)
    _only_api_errors(raw[:cut] + junk + raw[cut:])
    _only_api_errors(raw[:cut])


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 200_000,
        b'{"a":' * 100_000,
        b'{"contents": [' + b'{"parts": [{"text": "x"}]},' * 50_000 + b"{}]}",
        b'{"contents": [{"parts": [' + b'{"text": "x"},' * 100_000 + b'{"text": "y"}]}]}',
        b'{"contents": [{"parts": [{"inlineData": {"mimeType": "image/png", "data": "'
        + b"QUFB\n" * 2_000_000
        + b'"}}]}]}',
        b'{"contents": [{"parts": [{"text": "' + b"\\u00e9" * 1_000_000 + b'"}]}]}',
        b'{"contents": [{"parts": [{"inlineData": {"mimeType": "image/png", "data": "'
        + b"A" * 5_000_001
        + b'"}}]}]}',
    ],
    ids=[
        "deep-array",
        "deep-object",
        "many-contents",
        "many-parts",
        "wrapped-base64-10MB",
        "escapes",
        "bad-length",
    ],
)
def test_parser_stays_fast_on_pathological_shapes(body: bytes) -> None:
    started = time.perf_counter()
    _only_api_errors(body)
    assert time.perf_counter() - started < 5.0


# --- Base64 ----------------------------------------------------------------------------------------


@FUZZ
@given(st.text(max_size=200))
def test_base64_functions_only_raise_what_they_document(text: str) -> None:
    valid = base64codec.is_valid_base64(text)
    assert isinstance(valid, bool)
    try:
        decoded = base64codec.decode(text)
    except ValueError:
        stripped = "".join(text.split())
        assert not base64codec.is_valid_base64(stripped)
    else:
        assert base64codec.decode(base64codec.encode(decoded)) == decoded
        assert base64codec.decoded_length("".join(text.split())) == len(decoded)


@FUZZ
@given(st.binary(max_size=500), st.booleans(), st.booleans())
def test_base64_variants_round_trip_and_validate(data: bytes, urlsafe: bool, padded: bool) -> None:
    text = (base64.urlsafe_b64encode(data) if urlsafe else base64.b64encode(data)).decode()
    if not padded:
        text = text.rstrip("=")
    assert base64codec.is_valid_base64(text)
    assert base64codec.decode(text) == data
    # The parser accepts exactly what the codec accepts.
    body = {"contents": [{"parts": [{"text": "x"}, {"inlineData": {"mimeType": "image/png", "data": text}}]}]}
    if data:
        parse_and_check(_dumps(body), FLASH)


def test_base64_validation_is_linear_on_big_inputs() -> None:
    big = base64.b64encode(b"\x00" * 15_000_000).decode()
    started = time.perf_counter()
    assert base64codec.is_valid_base64(big)
    assert not base64codec.is_valid_base64(big[:-1] + "!")
    assert not base64codec.has_whitespace(big)
    assert time.perf_counter() - started < 3.0


# --- image decoding --------------------------------------------------------------------------------


def _png(size: tuple[int, int] = (16, 12), mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, 128).save(out, "PNG")
    return out.getvalue()


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 10, 10)).save(out, "JPEG")
    return out.getvalue()


def _encoded(fmt: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(out, fmt)
    return out.getvalue()


SEEDS = [_png(), _png(mode="RGBA"), _png(mode="P"), _jpeg(), _encoded("WEBP"), _encoded("GIF")]


@FUZZ
@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8))
def test_mutated_images_only_raise_image_rejected(seed: bytes, flips: list[tuple[int, int]]) -> None:
    data = bytearray(seed)
    for where, value in flips:
        data[where % len(data)] = value
    _decode_or_reject(bytes(data))


@FUZZ
@given(st.sampled_from(SEEDS), st.integers(0, 10**6))
def test_truncated_images_only_raise_image_rejected(seed: bytes, cut: int) -> None:
    _decode_or_reject(seed[: cut % len(seed)])


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes_only_raise_image_rejected(data: bytes) -> None:
    _decode_or_reject(data)


def _decode_or_reject(data: bytes) -> None:
    started = time.perf_counter()
    try:
        decode_image(data, max_pixels=4_000_000)
    except ImageRejected as exc:
        assert str(exc)
    image_size_of(data)  # never raises either
    assert time.perf_counter() - started < 2.0


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims `width` x `height` (the pixel data is a few bytes)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("size", [(100_000, 100_000), (65535, 65535), (2001, 2000), (1, 4_000_001)])
def test_pixel_limit_is_checked_before_decoding(size: tuple[int, int]) -> None:
    started = time.perf_counter()
    with pytest.raises(ImageTooLarge):
        decode_image(_png_claiming(*size), max_pixels=4_000_000)
    assert time.perf_counter() - started < 0.5  # nothing proportional to the claim was allocated


@pytest.mark.parametrize("fmt", ["BMP", "TIFF", "ICO", "PPM", "TGA"])
def test_formats_outside_the_allowed_list_are_refused(fmt: str) -> None:
    with pytest.raises(ImageRejected, match=r"not allowed|not valid"):
        decode_image(_encoded(fmt), max_pixels=4_000_000)


def test_allowed_formats_decode() -> None:
    for data in SEEDS:
        image = decode_image(data, max_pixels=4_000_000)
        assert image.size[0] > 0


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.integers(1, 3000), st.integers(1, 3000))
def test_claimed_sizes_either_fit_or_are_refused(width: int, height: int) -> None:
    data = _png_claiming(width, height)
    try:
        decode_image(data, max_pixels=1_000_000)
    except ImageTooLarge:
        assert width * height > 1_000_000
    except ImageRejected:
        assert width * height <= 1_000_000  # fits, but the pixel data is short: invalid, not a crash
