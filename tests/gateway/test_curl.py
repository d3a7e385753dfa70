"""The gateway through real `curl` processes, the way a user pastes the guide's commands."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bananagate.protocol.catalog import MODELS, ImageModel, find_model
from tests.conftest import Gateway

from .helpers import (
    AUTH_STYLES,
    CURL,
    FLASH_25,
    MAX_ARG_STRLEN,
    PUBLISHED,
    assert_envelope,
    auth_header,
    b64,
    curl,
    curl_post,
    decode,
    generate_path,
    images_of,
    noise_png,
    the_image,
)

pytestmark = pytest.mark.skipif(CURL is None, reason="curl is not installed")

GENERATE = generate_path(FLASH_25)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("curl")


@pytest.fixture(scope="module")
def photos(workdir: Path) -> dict[str, bytes]:
    """Incompressible PNGs, so the request bodies are photo-sized (well over one argv string)."""
    return {
        "wide": noise_png((640, 360), seed=1),  # 16:9
        "square": noise_png((400, 400), seed=2),
        "tall": noise_png((400, 600), seed=3),  # 2:3
    }


def _write_body(workdir: Path, name: str, text: str) -> Path:
    """A body file laid out like the guide's heredoc (curl's `-d @file` drops the newlines)."""
    path = workdir / name
    path.write_text(text)
    assert path.stat().st_size > MAX_ARG_STRLEN, "the body must be too large for a shell argument"
    return path


# --- the guide's three flows, with every way of sending the key ----------------------------------


@pytest.mark.parametrize("auth", AUTH_STYLES)
def test_flow_text_to_image(gateway: Gateway, workdir: Path, auth: str) -> None:
    body = json.dumps(
        {
            "contents": [{"parts": [{"text": "A kitten napping on a sunny windowsill, watercolor"}]}],
            "generationConfig": {
                "responseModalities": ["TEXT", "IMAGE"],
                "imageConfig": {"aspectRatio": "16:9"},
            },
        },
        indent=2,
    ).encode()
    result = curl_post(gateway, GENERATE, body, workdir, auth=auth)
    assert result.status_code == 200, result.text[:500]
    assert result.headers["content-type"].startswith("application/json")
    response = result.json()
    parts = response["candidates"][0]["content"]["parts"]
    assert any("kitten napping" in p.get("text", "") for p in parts)
    mime, image = the_image(response)
    assert (mime, image.format, image.size) == ("image/png", "PNG", (1344, 768))
    assert response["candidates"][0]["finishReason"] == "STOP"
    assert response["usageMetadata"]["totalTokenCount"] > 0


@pytest.mark.parametrize("auth", AUTH_STYLES)
def test_flow_image_to_image(gateway: Gateway, workdir: Path, photos: dict[str, bytes], auth: str) -> None:
    # Guide spelling: snake_case `inline_data` / `mime_type`, no aspectRatio: the edit keeps the
    # input's ratio (16:9), which shows the image really was read.
    body = _write_body(
        workdir,
        f"edit-{auth}.json",
        '{"contents": [{"parts": [\n'
        '  {"text": "Put a tiny wizard hat on the kitten"},\n'
        f'  {{"inline_data": {{"mime_type": "image/png", "data": "{b64(photos["wide"])}"}}}}\n'
        "]}]}\n",
    )
    result = curl_post(gateway, GENERATE, body, workdir, auth=auth)
    assert result.status_code == 200, result.text[:500]
    mime, image = the_image(result.json())
    assert (mime, image.format, image.size) == ("image/png", "PNG", (1344, 768))


@pytest.mark.parametrize("auth", AUTH_STYLES)
def test_flow_multi_image(gateway: Gateway, workdir: Path, photos: dict[str, bytes], auth: str) -> None:
    parts = ",\n".join(
        f'  {{"inline_data": {{"mime_type": "image/png", "data": "{b64(photos[name])}"}}}}'
        for name in ("wide", "square", "tall")
    )
    body = _write_body(
        workdir,
        f"multi-{auth}.json",
        '{"contents": [{"parts": [\n'
        '  {"text": "A model leaning against a pink car, wearing the handbag, with the parrot on her shoulder"},\n'
        f"{parts}\n"
        "]}]}\n",
    )
    result = curl_post(gateway, GENERATE, body, workdir, auth=auth)
    assert result.status_code == 200, result.text[:500]
    mime, image = the_image(result.json())
    # The ratio follows the last input image (2:3): all three were decoded.
    assert (mime, image.format, image.size) == ("image/png", "PNG", (832, 1248))
    details = {d["modality"]: d["tokenCount"] for d in result.json()["usageMetadata"]["promptTokensDetails"]}
    model = find_model(FLASH_25)
    assert model is not None and details["IMAGE"] == 3 * model.input_image_tokens


def test_streaming_with_curl(gateway: Gateway, workdir: Path) -> None:
    body = {"contents": [{"parts": [{"text": "a streamed banana"}]}]}
    result = curl_post(gateway, generate_path(FLASH_25, "streamGenerateContent") + "?alt=sse", body, workdir)
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(e.removeprefix(b"data: ")) for e in result.content.split(b"\r\n\r\n") if e]
    assert len(events) >= 2
    assert [len(images_of(e)) for e in events][-1] == 1
    assert events[-1]["candidates"][0]["finishReason"] == "STOP"


# --- keys -----------------------------------------------------------------------------------------


def test_missing_key_is_401(gateway: Gateway, workdir: Path) -> None:
    result = curl_post(gateway, GENERATE, {"contents": [{"parts": [{"text": "x"}]}]}, workdir, auth=None)
    message = assert_envelope(result, 401, "UNAUTHENTICATED")
    assert "API Key" in message


@pytest.mark.parametrize("auth", AUTH_STYLES)
def test_wrong_key_is_401(gateway: Gateway, workdir: Path, auth: str) -> None:
    wrong = "sk-" + "x" * 48
    result = curl_post(
        gateway, GENERATE, {"contents": [{"parts": [{"text": "x"}]}]}, workdir, auth=auth, key=wrong
    )
    message = assert_envelope(result, 401, "UNAUTHENTICATED")
    assert message == "API key not valid. Please pass a valid API key."


def test_models_list_with_curl(gateway: Gateway, workdir: Path) -> None:
    result = curl([gateway.url + "/v1beta/models", "-H", auth_header("x-goog-api-key", gateway.key)], workdir)
    assert result.status_code == 200
    names = [m["name"] for m in result.json()["models"]]
    assert names == [f"models/{m.id}" for m in MODELS]


# --- every model × ratio × size, each image decoded --------------------------------------------------


def _sweep_one(gateway: Gateway, workdir: Path, model: ImageModel, ratio: str, size: str) -> str | None:
    """None when the answer is right, else what was wrong."""
    table, mime_type, pil_format = PUBLISHED[model.id]
    expected = table[ratio][size]
    body = {
        "contents": [{"parts": [{"text": f"sweep {ratio} {size}"}]}],
        "generationConfig": {
            "responseModalities": ["IMAGE"],
            "imageConfig": {"aspectRatio": ratio, "imageSize": size},
        },
    }
    result = curl_post(gateway, generate_path(model.id), body, workdir, auth="bearer")
    where = f"{model.id} {ratio} {size}"
    if result.status_code != 200:
        return f"{where}: HTTP {result.status_code} {result.text[:200]}"
    images = images_of(result.json())
    if len(images) != 1:
        return f"{where}: {len(images)} images"
    mime, data = images[0]
    image = decode(data)
    got = (mime, image.format, image.size)
    if got != (mime_type, pil_format, expected):
        return f"{where}: got {got}, expected {(mime_type, pil_format, expected)}"
    return None


@pytest.mark.parametrize("model", MODELS, ids=[m.id for m in MODELS])
def test_size_sweep(gateway: Gateway, workdir: Path, model: ImageModel) -> None:
    table, _, _ = PUBLISHED[model.id]
    # The catalog offers exactly the published ratios and sizes.
    assert set(model.aspect_ratios) == set(table)
    assert {s for sizes in table.values() for s in sizes} == set(model.image_sizes)
    combos = [(ratio, size) for ratio in table for size in table[ratio]]
    # Largest first, so the slow 4K renders overlap with the rest.
    combos.sort(key=lambda c: -table[c[0]][c[1]][0] * table[c[0]][c[1]][1])
    with ThreadPoolExecutor(max_workers=4) as pool:
        problems = [
            p for p in pool.map(lambda c: _sweep_one(gateway, workdir, model, *c), combos) if p is not None
        ]
    assert problems == []
