"""Every SDK method, for every image input kind, against a real gateway on the emulator."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from bananagate import AsyncClient, Client
from bananagate.client import (
    AuthenticationError,
    GenerateResult,
    NoImageError,
    NotFoundError,
    SafetyBlockedError,
)
from bananagate.protocol.catalog import find_model
from tests.client.conftest import FAST_MODEL, INPUT_KINDS, as_input
from tests.conftest import Gateway

FAST = {"model": FAST_MODEL, "image_size": "512"}


def expected_size(model: str, ratio: str, size: str | None = None) -> tuple[int, int]:
    info = find_model(model)
    assert info is not None
    return info.size_for(ratio, size)


def check_saved(result: GenerateResult, stem: Path, fmt: str, size: tuple[int, int]) -> None:
    """The final image saved under the extension its MIME type implies, opening at `size`."""
    assert result.image is not None
    path = result.image.save(stem)
    assert path.suffix == {"PNG": ".png", "JPEG": ".jpg"}[fmt]
    with Image.open(path) as img:
        assert (img.format, img.size) == (fmt, size)
    assert result.image.size == size
    assert result.image.to_pil().size == size
    assert result.request_id and result.finish_reason == "STOP"
    assert result.usage.candidates_image_tokens > 0
    assert result.cost is None or result.cost > 0


@pytest.mark.parametrize(
    ("model", "ratio", "size", "fmt"),
    [
        ("gemini-2.5-flash-image", "16:9", None, "PNG"),
        ("gemini-3-pro-image-preview", "1:1", "2K", "JPEG"),
        (FAST_MODEL, "21:9", "512", "JPEG"),
    ],
)
def test_generate_sizes_and_formats(
    client: Client, tmp_path: Path, model: str, ratio: str, size: str | None, fmt: str
) -> None:
    result = client.generate(
        "A kitten napping on a windowsill", model=model, aspect_ratio=ratio, image_size=size
    )
    check_saved(result, tmp_path / "out", fmt, expected_size(model, ratio, size))
    assert "kitten" in result.text


@pytest.mark.parametrize("kind", INPUT_KINDS)
def test_edit_every_input_kind(client: Client, sample_png: Path, tmp_path: Path, kind: str) -> None:
    result = client.edit("Put a tiny wizard hat on it", as_input(kind, sample_png), **FAST)
    # No aspectRatio: the edit follows its 96x64 (3:2) input.
    check_saved(result, tmp_path / kind, "JPEG", expected_size(FAST_MODEL, "3:2", "512"))


@pytest.mark.parametrize("kind", INPUT_KINDS)
@pytest.mark.parametrize("method", ["inline", "collage"])
def test_compose_every_input_kind(
    client: Client, sample_png: Path, tmp_path: Path, kind: str, method: str
) -> None:
    images = [as_input(kind, sample_png) for _ in range(3)]
    result = client.compose(
        "All three together",
        images,
        method=method,
        labels=True,
        aspect_ratio="1:1",
        model="gemini-2.5-flash-image",
    )  # type: ignore[arg-type]
    check_saved(result, tmp_path / f"{kind}-{method}", "PNG", (1024, 1024))


def test_compose_collage_lifts_the_model_limit(client: Client, sample_png: Path, tmp_path: Path) -> None:
    result = client.compose(
        "Six into one", [sample_png] * 6, method="collage", model="gemini-2.5-flash-image"
    )
    assert result.image is not None and result.image.mime_type == "image/png"


@pytest.mark.parametrize("kind", INPUT_KINDS)
async def test_async_methods_every_input_kind(
    gateway: Gateway, sample_png: Path, tmp_path: Path, kind: str
) -> None:
    async with AsyncClient(gateway.key, base_url=gateway.url) as aclient:
        generated = await aclient.generate("A lighthouse", aspect_ratio="16:9", **FAST)
        edited = await aclient.edit("Make it night", as_input(kind, sample_png), **FAST)
        composed = await aclient.compose(
            "Both", [as_input(kind, sample_png), as_input(kind, sample_png)], method="collage", **FAST
        )
    check_saved(generated, tmp_path / "g", "JPEG", expected_size(FAST_MODEL, "16:9", "512"))
    check_saved(edited, tmp_path / "e", "JPEG", expected_size(FAST_MODEL, "3:2", "512"))
    assert composed.image is not None and composed.image.mime_type == "image/jpeg"


@pytest.mark.parametrize(
    ("directive", "error", "reason", "has_text"),
    [
        ("finish=IMAGE_SAFETY", SafetyBlockedError, "IMAGE_SAFETY", False),
        ("block=SAFETY", SafetyBlockedError, "SAFETY", False),
        ("finish=NO_IMAGE", NoImageError, "NO_IMAGE", True),
        ("text-only", NoImageError, "STOP", True),
    ],
)
def test_no_image_answers_raise(
    client: Client,
    unique: Callable[[str], str],
    directive: str,
    error: type[NoImageError],
    reason: str,
    has_text: bool,
) -> None:
    with pytest.raises(error) as info:
        client.generate(unique(f"A cat [emulate: {directive}]"), **FAST)
    exc = info.value
    assert type(exc) is error
    assert reason in (exc.finish_reason, exc.block_reason)
    assert bool(exc.text) is has_text
    assert exc.result.images == []


def test_default_key_file_makes_it_work_out_of_the_box(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BANANAGATE_DATA_DIR", str(gateway.data_dir))
    monkeypatch.setenv("BANANAGATE_BASE_URL", gateway.url)
    with Client() as client:
        assert client.config.key_source == "key file"
        assert client.generate("A pear", **FAST).image is not None


@pytest.mark.parametrize("auth", ["raw", "bearer", "goog", "query"])
def test_every_auth_style_is_accepted(gateway: Gateway, auth: str) -> None:
    with Client(gateway.key, base_url=gateway.url, auth=auth) as client:
        assert client.generate("A plum", **FAST).image is not None


def test_auth_and_model_errors(gateway: Gateway) -> None:
    with Client("sk-wrong", base_url=gateway.url) as client, pytest.raises(AuthenticationError) as info:
        client.generate("x", **FAST)
    assert info.value.status == 401 and info.value.attempts == 1
    with (
        Client(base_url=gateway.url) as keyless,
        pytest.raises(AuthenticationError, match="no API key was configured"),
    ):
        keyless.generate("x", **FAST)
    with Client(gateway.key, base_url=gateway.url) as client, pytest.raises(NotFoundError):
        client.generate("x", model="gemini-0-unknown-image")
