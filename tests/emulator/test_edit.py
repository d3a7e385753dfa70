"""Edits: input images are decoded safely, shape the output ratio and visibly appear in it."""

from __future__ import annotations

import base64
import io
import time

import orjson
import pytest
from PIL import Image, ImageChops, ImageStat

from bananagate.protocol.errors import ApiError
from bananagate.providers.emulator import EmulatorProvider

from .helpers import (
    FLASH_25,
    FLASH_31,
    PRO_3,
    bomb_png,
    decode,
    heic_like,
    image_of,
    jpeg_bytes,
    make_call,
    png_bytes,
    request_body,
)


async def _image(call, provider: EmulatorProvider | None = None) -> Image.Image:
    answer = await (provider or EmulatorProvider()).generate(call)
    return decode(image_of(orjson.loads(answer.body))[1]).convert("RGB")


def _mean_difference(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


async def test_closest_ratio_follows_last_input_without_aspect_ratio() -> None:
    body = request_body("make it night", images=[("image/png", png_bytes((1600, 900)))])
    image = await _image(make_call(PRO_3, body))
    assert image.size == (1376, 768)  # 16:9 at 1K

    # the LAST input decides
    body = request_body(
        "combine",
        images=[("image/png", png_bytes((1600, 900))), ("image/jpeg", jpeg_bytes((900, 1600)))],
    )
    assert (await _image(make_call(PRO_3, body))).size == (768, 1376)

    # an explicit aspectRatio wins over the input's shape
    body = request_body("square it", ratio="1:1", images=[("image/png", png_bytes((1600, 900)))])
    assert (await _image(make_call(PRO_3, body))).size == (1024, 1024)


async def test_edit_uses_its_input() -> None:
    plain = await _image(make_call(FLASH_25, request_body("edit me", ratio="1:1")))
    red = await _image(
        make_call(
            FLASH_25, request_body("edit me", ratio="1:1", images=[("image/png", png_bytes((512, 512)))])
        )
    )
    blue = await _image(
        make_call(
            FLASH_25,
            request_body(
                "edit me", ratio="1:1", images=[("image/png", png_bytes((512, 512), (20, 20, 220)))]
            ),
        )
    )
    assert _mean_difference(plain, red) > 10
    assert _mean_difference(red, blue) > 10
    # the input's red shows through the tint in the middle of the picture (where the tile is)
    r, g, b = red.crop((412, 312, 612, 412)).resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
    assert r > g + 40 and r > b + 40


async def test_several_inputs_and_transparency() -> None:
    inputs = [
        ("image/png", png_bytes((300, 200))),
        ("image/png", png_bytes((200, 300), mode="LA")),
        ("image/jpeg", jpeg_bytes((640, 480))),
    ]
    buf = io.BytesIO()
    Image.new("RGBA", (100, 100), (0, 255, 0, 0)).save(buf, "WEBP")
    inputs.append(("image/webp", buf.getvalue()))
    image = await _image(make_call(FLASH_31, request_body("collage", ratio="4:1", size="512", images=inputs)))
    assert image.size == (1024, 256)


async def test_file_data_and_heic_become_placeholders() -> None:
    body = request_body(
        "use these",
        images=[("image/heic", heic_like())],
        file_uris=["https://generativelanguage.googleapis.com/v1beta/files/abc123"],
    )
    image = await _image(make_call(PRO_3, body))
    # no readable input size: 1:1
    assert image.size == (1024, 1024)
    alone = await _image(make_call(PRO_3, request_body("use these")))
    assert _mean_difference(image, alone) > 5


async def test_url_safe_base64_input_is_decoded() -> None:
    raw = png_bytes((160, 90))
    body = request_body("x")
    urlsafe = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    body["contents"][0]["parts"].append({"inline_data": {"mime_type": "image/png", "data": urlsafe}})
    assert (await _image(make_call(FLASH_25, body))).size == (1344, 768)


async def test_invalid_bytes_are_a_400() -> None:
    body = request_body("x", images=[("image/png", b"definitely not an image")])
    with pytest.raises(ApiError) as info:
        await EmulatorProvider().generate(make_call(FLASH_25, body))
    assert info.value.code == 400
    assert info.value.status == "INVALID_ARGUMENT"
    assert info.value.message == "Provided image is not valid"
    assert info.value.details[0]["fieldViolations"][0]["field"] == "contents[0].parts[1].inline_data.data"


async def test_truncated_image_is_a_400() -> None:
    body = request_body("x", images=[("image/jpeg", jpeg_bytes((400, 400))[:300])])
    with pytest.raises(ApiError, match="Provided image is not valid"):
        await EmulatorProvider().generate(make_call(FLASH_25, body))


async def test_heic_mime_with_garbage_is_still_a_400() -> None:
    body = request_body("x", images=[("image/heic", b"garbage garbage garbage")])
    with pytest.raises(ApiError, match="Provided image is not valid"):
        await EmulatorProvider().generate(make_call(PRO_3, body))


async def test_decompression_bomb_is_refused_quickly() -> None:
    body = request_body("x", images=[("image/png", bomb_png())])
    start = time.perf_counter()
    with pytest.raises(ApiError) as info:
        await EmulatorProvider().generate(make_call(FLASH_25, body))
    assert time.perf_counter() - start < 1.0
    assert info.value.code == 400
    assert info.value.message.startswith("Provided image is too large")


async def test_pixel_budget_is_configurable() -> None:
    body = request_body("x", images=[("image/png", png_bytes((300, 300)))])
    with pytest.raises(ApiError, match=r"Provided image is too large: 300x300 pixels"):
        await EmulatorProvider(max_image_pixels=300 * 299).generate(make_call(FLASH_25, body))
    await EmulatorProvider(max_image_pixels=300 * 300).generate(make_call(FLASH_25, body))


async def test_bomb_in_stream_fails_before_any_event() -> None:
    body = request_body("x", images=[("image/png", bomb_png())])
    events = []
    with pytest.raises(ApiError):
        async for event in EmulatorProvider().stream(
            make_call(FLASH_25, body, method="streamGenerateContent")
        ):
            events.append(event)
    assert events == []
