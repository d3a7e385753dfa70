"""The documented `size` table: every entry lands on the right Gemini ratio and size label, on
every model that offers it, and is refused (400) on the others."""

from __future__ import annotations

import base64

import openai
import pytest
from openai import OpenAI

from bananagate.protocol.catalog import MODELS, ImageModel, find_model
from bananagate.protocol.openai_sizes import GEMINI_SIZES, SIZE_TABLE, SizeError, resolve_size
from bananagate.protocol.openai_wire import ImagesParams, images_request
from tests.openai.conftest import FLASH_25, FLASH_31, PRO_3, decode

# The README's table of OpenAI sizes, written out independently of the code.
OPENAI_EXPECTED = {
    "1024x1024": ("1:1", "1K"),
    "1536x1024": ("3:2", "1K"),
    "1024x1536": ("2:3", "1K"),
    "1792x1024": ("16:9", "1K"),
    "1024x1792": ("9:16", "1K"),
    "2048x2048": ("1:1", "2K"),
}


def expected(size: str) -> tuple[str, str]:
    """What `size` must mean: the OpenAI table above, else the Gemini table entry with those pixels."""
    if size in OPENAI_EXPECTED:
        return OPENAI_EXPECTED[size]
    width, height = (int(v) for v in size.split("x"))
    hits = {
        (ratio, label)
        for model in MODELS
        for ratio, by_label in model.sizes.items()
        for label, pixels in by_label.items()
        if pixels == (width, height)
    }
    assert len(hits) == 1, (size, hits)
    return hits.pop()


def offers(model: ImageModel, ratio: str, label: str) -> bool:
    return ratio in model.sizes and label in model.image_tokens


def test_table_covers_the_openai_sizes_and_every_gemini_entry() -> None:
    assert set(OPENAI_EXPECTED) <= set(SIZE_TABLE)
    entries = {f"{w}x{h}" for m in MODELS for by_label in m.sizes.values() for (w, h) in by_label.values()}
    assert entries == set(GEMINI_SIZES)
    assert set(SIZE_TABLE) == set(OPENAI_EXPECTED) | entries


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.id)
@pytest.mark.parametrize("size", sorted(SIZE_TABLE))
def test_size_lands_on_ratio_and_size(size: str, model: ImageModel) -> None:
    ratio, label = expected(size)
    if not offers(model, ratio, label):
        with pytest.raises(SizeError, match="not available"):
            resolve_size(size, model)
        return
    choice = resolve_size(size, model)
    assert (choice.aspect_ratio, choice.image_size) == (ratio, label)
    params = ImagesParams(model, model.id, "p", 1, choice, "b64_json")
    config = images_request(params)["generationConfig"]
    assert config["responseModalities"] == ["IMAGE"]
    assert config["imageConfig"]["aspectRatio"] == ratio
    # A 1K-only model is not sent imageSize; the others get the label.
    assert config["imageConfig"].get("imageSize") == (label if len(model.image_tokens) > 1 else None)
    assert choice.pixels(model) == model.sizes[ratio][label]


@pytest.mark.parametrize("size", ["auto", None, "AUTO"])
def test_auto_leaves_the_choice_to_the_model(size: str | None) -> None:
    model = find_model(PRO_3)
    choice = resolve_size(size, model)
    assert (choice.aspect_ratio, choice.image_size) == (None, None)
    params = ImagesParams(model, model.id, "p", 1, choice, "b64_json")
    assert "imageConfig" not in images_request(params)["generationConfig"]


def test_spellings_are_normalised() -> None:
    model = find_model(FLASH_31)
    for spelling in (" 1536x1024 ", "1536X1024", "1536×1024", "1536 x 1024"):
        assert resolve_size(spelling, model).aspect_ratio == "3:2"


@pytest.mark.parametrize("bad", ["1000x1000", "256x256", "big", "", "1024"])
def test_unknown_sizes_are_refused_with_the_list(bad: str) -> None:
    with pytest.raises(SizeError, match="1024x1024"):
        resolve_size(bad, find_model(FLASH_25))


# End to end: the gateway really produces the table's pixels for the sizes OpenAI clients send.
@pytest.mark.parametrize(
    ("model", "size", "pixels"),
    [
        (FLASH_25, "1024x1024", (1024, 1024)),
        (FLASH_25, "1536x1024", (1248, 832)),
        (FLASH_25, "1024x1536", (832, 1248)),
        (FLASH_25, "1792x1024", (1344, 768)),
        (FLASH_25, "1024x1792", (768, 1344)),
        (FLASH_31, "2048x2048", (2048, 2048)),
        (FLASH_31, "512x2048", (512, 2048)),
        (FLASH_31, "792x336", (792, 336)),
        (PRO_3, "1344x768", (1376, 768)),  # 2.5 Flash's 16:9 entry -> 16:9 1K on 3 Pro
        (PRO_3, "auto", (1024, 1024)),
    ],
)
def test_gateway_draws_the_table_pixels(
    client: OpenAI, model: str, size: str, pixels: tuple[int, int]
) -> None:
    answer = client.images.generate(model=model, prompt="a lighthouse", size=size)
    image = decode(base64.b64decode(answer.data[0].b64_json))
    assert image.size == pixels
    assert answer.size == (None if size == "auto" else f"{pixels[0]}x{pixels[1]}")


def test_size_the_model_lacks_is_a_bad_request(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(model=FLASH_25, prompt="x", size="2048x2048")
    assert caught.value.param == "size"
    assert "not available on gemini-2.5-flash-image" in caught.value.message
