"""Turning whatever the caller holds into (bytes, MIME type) pairs the wire can carry.

Accepted: a filesystem path (str or PathLike), raw bytes, a binary file object, a PIL image, or
a `data:image/...;base64,` URL. The data URL's prefix is stripped here: Gemini wants bare Base64
and answers 400 to a prefix (protocol reference §3.2).
"""

from __future__ import annotations

import base64
import binascii
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeAlias, cast

from PIL import Image

from bananagate.client.errors import InvalidInputError
from bananagate.protocol.catalog import INPUT_IMAGE_MIME_TYPES

ImageInput: TypeAlias = str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes] | Image.Image
Images: TypeAlias = ImageInput | Sequence[ImageInput]


@dataclass(frozen=True, slots=True)
class InputImage:
    """One image ready to send: its bytes, MIME type and a label (file stem or position)."""

    data: bytes
    mime_type: str
    label: str

    def to_pil(self) -> Image.Image:
        image = Image.open(io.BytesIO(self.data))
        image.load()
        return image

    def b64(self) -> str:
        return base64.b64encode(self.data).decode("ascii")


def sniff_mime(data: bytes) -> str | None:
    """The image MIME type from magic bytes, or None when not a recognised image."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis"):
            return "image/heic"
        if brand in (b"mif1", b"msf1"):
            return "image/heif"
    return None


def _reencode_png(data: bytes, label: str) -> bytes:
    """Formats Gemini does not take (GIF, BMP, TIFF, ...) become PNG, if Pillow can read them."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return _pil_bytes(image)[0]
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"{label}: not an image Pillow can read ({exc})") from None


def _pil_bytes(image: Image.Image) -> tuple[bytes, str]:
    # PNG is lossless and takes every mode except CMYK-like ones, which become RGB first.
    if image.mode not in ("1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue(), "image/png"


def _from_bytes(data: bytes, label: str) -> InputImage:
    if not data:
        raise InvalidInputError(f"{label}: empty image")
    mime = sniff_mime(data)
    if mime in INPUT_IMAGE_MIME_TYPES:
        return InputImage(data, mime, label)
    return InputImage(_reencode_png(data, label), "image/png", label)


def parse_data_url(url: str, label: str) -> InputImage:
    """`data:image/png;base64,....` -> the decoded image (the prefix never reaches the wire)."""
    header, sep, payload = url.partition(",")
    if not sep or ";base64" not in header.lower():
        raise InvalidInputError(f"{label}: only base64 data URLs are supported")
    try:
        data = base64.b64decode("".join(payload.split()), validate=False)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInputError(f"{label}: data URL is not valid base64 ({exc})") from None
    declared = header[len("data:") :].split(";")[0].strip().lower()
    image = _from_bytes(data, label)
    # Trust the bytes over the header (a mislabelled URL would be rejected upstream), except
    # for HEIF variants we cannot tell apart by magic.
    if declared in ("image/heic", "image/heif") and image.mime_type in ("image/heic", "image/heif"):
        return InputImage(image.data, declared, label)
    return image


def load_image(value: ImageInput, position: int = 1) -> InputImage:
    """One caller image -> InputImage. `position` (1-based) labels anonymous inputs."""
    label = str(position)
    if isinstance(value, Image.Image):
        data, mime = _pil_bytes(value)
        return InputImage(data, mime, label)
    if isinstance(value, bytes | bytearray | memoryview):
        return _from_bytes(bytes(value), label)
    if isinstance(value, str) and value[:5].lower() == "data:":
        return parse_data_url(value, label)
    if isinstance(value, str | os.PathLike):
        path = Path(value)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InvalidInputError(f"cannot read image {path}: {exc.strerror or exc}") from None
        return _from_bytes(data, path.stem or label)
    read = getattr(value, "read", None)
    if callable(read):
        data = read()
        if isinstance(data, str):
            raise InvalidInputError(f"image {position}: file object is in text mode; open it with 'rb'")
        name = getattr(value, "name", None)
        return _from_bytes(bytes(data), Path(name).stem if isinstance(name, str) and name else label)
    raise InvalidInputError(
        f"image {position}: unsupported type {type(value).__name__} "
        "(expected a path, bytes, a binary file object, a PIL image or a data: URL)"
    )


def _is_single(value: Any) -> bool:
    return isinstance(value, str | bytes | bytearray | memoryview | os.PathLike | Image.Image) or callable(
        getattr(value, "read", None)
    )


def load_images(images: Images | None) -> list[InputImage]:
    """One image or a sequence of them -> InputImages, in order."""
    if images is None:
        return []
    if _is_single(images):
        return [load_image(cast(ImageInput, images))]
    return [load_image(item, i) for i, item in enumerate(cast(Sequence[ImageInput], images), start=1)]
