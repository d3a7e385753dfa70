from fractions import Fraction

import pytest

from bananagate.protocol.catalog import MODELS, extension_for, find_model


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.id)
def test_every_table_entry_matches_its_ratio(model) -> None:
    for ratio, sizes in model.sizes.items():
        w, h = (int(x) for x in ratio.split(":"))
        for label, (pw, ph) in sizes.items():
            assert label in model.image_tokens
            # Google's tables round to multiples of 8/16: within 5 % of the nominal ratio.
            assert abs(Fraction(pw, ph) / Fraction(w, h) - 1) < Fraction(5, 100), (ratio, label)
        assert set(sizes) == set(model.image_tokens)


def test_lookup_by_id_name_and_alias() -> None:
    assert find_model("gemini-2.5-flash-image").id == "gemini-2.5-flash-image"
    assert find_model("models/gemini-3-pro-image-preview").id == "gemini-3-pro-image-preview"
    assert find_model("nano-banana-pro-preview").id == "gemini-3-pro-image-preview"
    assert find_model("gemini-2.5-flash-image-preview").max_input_images == 3
    assert find_model("gpt-4") is None


def test_closest_ratio() -> None:
    m = find_model("gemini-2.5-flash-image")
    assert m.closest_ratio(1600, 900) == "16:9"
    assert m.closest_ratio(1000, 1000) == "1:1"
    assert m.closest_ratio(900, 1600) == "9:16"
    assert find_model("gemini-3.1-flash-image-preview").closest_ratio(4000, 500) == "8:1"


def test_extensions() -> None:
    assert extension_for("image/png") == ".png"
    assert extension_for("image/jpeg") == ".jpg"
    assert extension_for("IMAGE/WEBP") == ".webp"
    assert extension_for("application/x-thing") == ".bin"
