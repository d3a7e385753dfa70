"""Building emulator calls and reading their answers, with real JSON and real Pillow decoding."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from typing import Any

import orjson
from PIL import Image

from bananagate.protocol.catalog import find_model
from bananagate.protocol.validation import parse_and_check
from bananagate.providers.base import Call, Method

FLASH_25 = "gemini-2.5-flash-image"
PRO_3 = "gemini-3-pro-image-preview"
FLASH_31 = "gemini-3.1-flash-image-preview"


def request_body(
    prompt: str = "A banana wearing sunglasses",
    *,
    ratio: str | None = None,
    size: str | None = None,
    modalities: list[str] | None = None,
    include_thoughts: bool | None = None,
    images: list[tuple[str, bytes]] | None = None,
    file_uris: list[str] | None = None,
) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"text": prompt}] if prompt else []
    for mime, data in images or []:
        parts.append({"inlineData": {"mimeType": mime, "data": base64.b64encode(data).decode()}})
    for uri in file_uris or []:
        parts.append({"fileData": {"mimeType": "image/png", "fileUri": uri}})
    body: dict[str, Any] = {"contents": [{"role": "user", "parts": parts}]}
    config: dict[str, Any] = {}
    image_config = {k: v for k, v in (("aspectRatio", ratio), ("imageSize", size)) if v is not None}
    if image_config:
        config["imageConfig"] = image_config
    if modalities is not None:
        config["responseModalities"] = modalities
    if include_thoughts is not None:
        config["thinkingConfig"] = {"include_thoughts": include_thoughts}
    if config:
        body["generationConfig"] = config
    return body


def make_call(
    model_id: str = FLASH_25,
    body: dict[str, Any] | None = None,
    *,
    headers: dict[str, str] | None = None,
    method: Method = "generateContent",
    request_id: str = "r1",
) -> Call:
    model = find_model(model_id)
    assert model is not None, model_id
    raw = orjson.dumps(body if body is not None else request_body())
    return Call(
        model=model,
        model_id=model_id,
        method=method,
        body=raw,
        request=parse_and_check(raw, model),
        headers=headers or {},
        request_id=request_id,
    )


def parts_of(response: dict[str, Any]) -> list[dict[str, Any]]:
    return response["candidates"][0]["content"].get("parts", [])


def image_of(response: dict[str, Any]) -> tuple[str, bytes]:
    """(mimeType, bytes) of the single image part."""
    images = [p["inlineData"] for p in parts_of(response) if "inlineData" in p]
    assert len(images) == 1, images
    return images[0]["mimeType"], base64.b64decode(images[0]["data"], validate=True)


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def png_bytes(
    size: tuple[int, int], colour: tuple[int, int, int] = (200, 30, 30), mode: str = "RGB"
) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour if mode == "RGB" else 128).save(buf, "PNG")
    return buf.getvalue()


def jpeg_bytes(size: tuple[int, int], colour: tuple[int, int, int] = (30, 30, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG")
    return buf.getvalue()


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A ~100-byte PNG whose header claims width×height RGB pixels (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def heic_like() -> bytes:
    """Bytes shaped like a HEIC file header (an ISO-BMFF `ftyp` box), which Pillow cannot decode."""
    return struct.pack(">I", 24) + b"ftypheic" + b"\x00\x00\x00\x00" + b"mif1heic" + b"\x00" * 64
