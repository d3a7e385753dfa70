"""`bananagate.imaging`: refuse bombs before allocating, classify every failure."""

from __future__ import annotations

import io
import time
import tracemalloc

import pytest
from PIL import Image

from bananagate.imaging import (
    ImageFormatNotAllowed,
    ImageInvalid,
    ImageRejected,
    ImageTooLarge,
    decode_image,
    image_size_of,
)

from .helpers import bomb_png, jpeg_bytes, png_bytes

LIMIT = 64_000_000


def test_decodes_allowed_formats() -> None:
    for fmt in ("PNG", "JPEG", "WEBP", "GIF"):
        buf = io.BytesIO()
        Image.new("RGB", (33, 17), (1, 2, 3)).save(buf, fmt)
        image = decode_image(buf.getvalue(), max_pixels=LIMIT)
        assert image.size == (33, 17) and image.format == fmt
        image.getpixel((0, 0))  # pixels are loaded; no file handle needed


def test_bomb_is_refused_before_allocation() -> None:
    data = bomb_png(100_000, 100_000)
    assert len(data) < 200
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(ImageTooLarge) as info:
        decode_image(data, max_pixels=LIMIT)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 0.5
    assert peak < 5_000_000
    assert str(info.value).startswith("Provided image is too large")


def test_own_budget_is_checked_before_pillows() -> None:
    # 9000x9000 = 81 MP: under Pillow's warning threshold, over our 64 MP budget
    with pytest.raises(ImageTooLarge) as info:
        decode_image(bomb_png(9000, 9000), max_pixels=LIMIT)
    assert info.value.size == (9000, 9000)
    assert "9000x9000" in str(info.value) and "64000000" in str(info.value)


def test_pillow_bomb_warning_becomes_too_large() -> None:
    # above Pillow's MAX_IMAGE_PIXELS (warning zone) even with a generous budget of ours
    with pytest.raises(ImageTooLarge):
        decode_image(bomb_png(10_000, 10_000), max_pixels=10**12)


def test_invalid_and_truncated() -> None:
    for data in (b"", b"hello", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, jpeg_bytes((300, 300))[:200]):
        with pytest.raises(ImageInvalid):
            decode_image(data, max_pixels=LIMIT)
    # a header-valid PNG with a corrupt body fails at load(), still as ImageInvalid
    with pytest.raises(ImageInvalid):
        decode_image(bomb_png(64, 64), max_pixels=LIMIT)


def test_format_not_allowed() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "BMP")
    with pytest.raises(ImageFormatNotAllowed) as info:
        decode_image(buf.getvalue(), max_pixels=LIMIT)
    assert info.value.image_format == "BMP"
    assert decode_image(buf.getvalue(), max_pixels=LIMIT, allowed_formats=("bmp",)).size == (8, 8)
    with pytest.raises(ImageFormatNotAllowed):
        decode_image(png_bytes((4, 4)), max_pixels=LIMIT, allowed_formats=("JPEG",))


def test_hierarchy() -> None:
    for cls in (ImageTooLarge, ImageInvalid, ImageFormatNotAllowed):
        assert issubclass(cls, ImageRejected)


def test_jpeg_draft_shrinks_big_inputs() -> None:
    image = decode_image(jpeg_bytes((4000, 2000)), max_pixels=LIMIT, draft=(500, 500))
    assert image.size == (1000, 500)


def test_image_size_of() -> None:
    assert image_size_of(png_bytes((123, 45))) == (123, 45)
    assert image_size_of(jpeg_bytes((64, 32))) == (64, 32)
    assert image_size_of(bomb_png(9000, 9000)) == (9000, 9000)
    assert image_size_of(b"nope") is None
    assert image_size_of(bomb_png(100_000, 100_000)) is None
