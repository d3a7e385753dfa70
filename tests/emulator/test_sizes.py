"""Every model × ratio × size renders exactly the catalog's pixel size, in the model's format."""

from __future__ import annotations

import orjson
import pytest

from bananagate.protocol.catalog import MODELS
from bananagate.providers.emulator import EmulatorProvider

from .helpers import decode, image_of, make_call, request_body

# A 4K render plus its decode costs ~0.4 s, so the 4K column is sampled: square, the tallest
# 3.1 Flash ratio and the widest common one (8:1 4K, the largest output, has its own test).
_SAMPLED_4K = {"1:1", "1:8", "21:9"}


def _cases() -> list[object]:
    cases = []
    for model in MODELS:
        for ratio, sizes in model.sizes.items():
            for label in sizes:
                if label == "4K" and ratio not in _SAMPLED_4K:
                    continue
                cases.append(pytest.param(model.id, ratio, label, id=f"{model.id}-{ratio}-{label}"))
    return cases


@pytest.mark.parametrize(("model_id", "ratio", "label"), _cases())
async def test_output_size_and_format(model_id: str, ratio: str, label: str) -> None:
    call = make_call(model_id, request_body(f"size check {ratio} {label}", ratio=ratio, size=label))
    answer = await EmulatorProvider().generate(call)

    mime, data = image_of(orjson.loads(answer.body))
    image = decode(data)
    assert image.size == call.model.size_for(ratio, label)
    assert mime == call.model.output_mime_type
    assert image.format == ("PNG" if mime == "image/png" else "JPEG")
    assert answer.image_count == 1
    assert answer.usage.candidates_image_tokens == call.model.tokens_for(label)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.id)
async def test_defaults_are_1_1_at_default_size(model) -> None:
    answer = await EmulatorProvider().generate(make_call(model.id, request_body("no config")))
    _, data = image_of(orjson.loads(answer.body))
    assert decode(data).size == model.size_for("1:1")


async def test_largest_render_is_fast() -> None:
    import time

    call = make_call(
        "gemini-3.1-flash-image-preview", request_body("a very wide banana", ratio="8:1", size="4K")
    )
    start = time.perf_counter()
    answer = await EmulatorProvider().generate(call)
    elapsed = time.perf_counter() - start
    _, data = image_of(orjson.loads(answer.body))
    assert decode(data).size == (12288, 1536)
    assert elapsed < 2.0
