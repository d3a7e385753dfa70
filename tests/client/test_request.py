"""Request building and configuration, inspected with a mock transport (no server)."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from bananagate.client import AsyncClient, Client, InvalidInputError, TooManyImagesError
from bananagate.client.inputs import load_image, sniff_mime
from tests.client.conftest import INPUT_KINDS, as_input, png_bytes

OK_PNG = base64.b64encode(png_bytes((8, 8))).decode()
OK_BODY = {
    "candidates": [
        {
            "content": {
                "role": "model",
                "parts": [{"inlineData": {"mimeType": "image/png", "data": OK_PNG}}],
            },
            "finishReason": "STOP",
        }
    ]
}


def recorder() -> tuple[list[httpx.Request], httpx.MockTransport]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=OK_BODY)

    return seen, httpx.MockTransport(handler)


def body_of(request: httpx.Request) -> dict[str, Any]:
    return json.loads(request.content)


@pytest.mark.parametrize("kind", INPUT_KINDS)
def test_every_input_kind_becomes_bare_base64(kind: str, sample_png: Path) -> None:
    seen, transport = recorder()
    with Client("k", base_url="http://gw", transport=transport) as client:
        client.edit("hat", as_input(kind, sample_png))
    (request,) = seen
    parts = body_of(request)["contents"][0]["parts"]
    assert parts[0] == {"text": "hat"}
    blob = parts[1]["inlineData"]
    assert blob["mimeType"] == "image/png"
    assert not blob["data"].startswith("data:")  # the data URL prefix never reaches the wire
    decoded = base64.b64decode(blob["data"], validate=True)
    with Image.open(io.BytesIO(decoded)) as img:
        assert img.size == (96, 64)


def test_generate_body_and_url() -> None:
    seen, transport = recorder()
    with Client("k", base_url="http://gw/prefix/", transport=transport) as client:
        client.generate(
            "a cat", model="models/gemini-3-pro-image-preview", aspect_ratio="16:9", image_size="2k"
        )
    (request,) = seen
    assert str(request.url) == "http://gw/prefix/v1beta/models/gemini-3-pro-image-preview:generateContent"
    assert body_of(request) == {
        "contents": [{"role": "user", "parts": [{"text": "a cat"}]}],
        "generationConfig": {
            "responseModalities": ["TEXT", "IMAGE"],
            "imageConfig": {"aspectRatio": "16:9", "imageSize": "2K"},
        },
    }


@pytest.mark.parametrize(
    ("auth", "check"),
    [
        ("raw", lambda r: r.headers["authorization"] == "sk-1"),
        ("bearer", lambda r: r.headers["authorization"] == "Bearer sk-1"),
        ("goog", lambda r: r.headers["x-goog-api-key"] == "sk-1" and "authorization" not in r.headers),
        ("query", lambda r: r.url.params["key"] == "sk-1" and "x-goog-api-key" not in r.headers),
    ],
)
def test_auth_styles(auth: str, check: Callable[[httpx.Request], bool]) -> None:
    seen, transport = recorder()
    with Client("sk-1", base_url="http://gw", auth=auth, transport=transport) as client:
        client.generate("x")
    assert check(seen[0])


def test_presets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMETAPI_KEY", "sk-comet")
    monkeypatch.setenv("GEMINI_API_KEY", "AIza-gemini")
    monkeypatch.setenv("BANANAGATE_API_KEY", "sk-gateway")
    comet = Client.cometapi()
    assert comet.config.base_url == "https://api.cometapi.com"
    assert comet.config.auth_headers() == {"Authorization": "sk-comet"}
    google = Client.google()
    assert google.config.base_url == "https://generativelanguage.googleapis.com"
    assert google.config.auth_headers() == {"x-goog-api-key": "AIza-gemini"}
    # A gateway key is never sent to a third party.
    monkeypatch.delenv("COMETAPI_KEY")
    assert Client.cometapi().config.api_key is None
    other = Client("sk-2", base_url="https://relay.example/gw", auth="bearer")
    assert other.config.auth_headers() == {"Authorization": "Bearer sk-2"}
    # The async client has the same presets, and they build the async class.
    from bananagate import AsyncClient

    async_google = AsyncClient.google("AIza-x")
    assert isinstance(async_google, AsyncClient)
    assert async_google.config.auth_headers() == {"x-goog-api-key": "AIza-x"}


def test_environment_and_default_key_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "default.key").write_text("sk-from-file\n")
    monkeypatch.setenv("BANANAGATE_DATA_DIR", str(data_dir))
    local = Client()
    assert (local.config.base_url, local.config.api_key) == ("http://127.0.0.1:8000", "sk-from-file")
    # The key file belongs to the local gateway: a remote base URL does not get it.
    assert Client(base_url="https://remote.example").config.api_key is None
    monkeypatch.setenv("BANANAGATE_BASE_URL", "http://localhost:9000/")
    monkeypatch.setenv("BANANAGATE_API_KEY", "sk-env")
    monkeypatch.setenv("BANANAGATE_AUTH", "raw")
    env = Client()
    assert (env.config.base_url, env.config.api_key, env.config.auth) == (
        "http://localhost:9000",
        "sk-env",
        "raw",
    )
    assert Client("sk-arg").config.api_key == "sk-arg"


def test_timeouts_are_minutes_by_default() -> None:
    timeout = Client("k").config.timeout
    assert timeout.read is not None and timeout.read >= 120


@pytest.mark.parametrize("method", ["edit", "compose"])
def test_too_many_images_refused_before_any_request(method: str) -> None:
    seen, transport = recorder()
    images = [png_bytes()] * 4
    with (
        Client("k", base_url="http://gw", transport=transport) as client,
        pytest.raises(TooManyImagesError) as info,
    ):
        getattr(client, method)("combine", images, model="gemini-2.5-flash-image")
    assert seen == []
    assert (info.value.count, info.value.limit) == (4, 3)
    assert 'method="collage"' in str(info.value)


def test_collage_sends_one_grid_image() -> None:
    seen, transport = recorder()
    with Client("k", base_url="http://gw", transport=transport) as client:
        client.compose(
            "combine",
            [png_bytes(color=c) for c in ("red", "green", "blue", "white", "black")],
            method="collage",
            labels=True,
        )
        client.compose("combine", [png_bytes()] * 5, method="auto")
        client.compose("combine", [png_bytes()] * 3, method="auto")
    counts = [sum("inlineData" in p for p in body_of(r)["contents"][0]["parts"]) for r in seen]
    assert counts == [1, 1, 3]
    grid = body_of(seen[0])["contents"][0]["parts"][1]["inlineData"]
    with Image.open(io.BytesIO(base64.b64decode(grid["data"]))) as img:
        assert grid["mimeType"] == "image/png" and img.format == "PNG"
        assert img.width > img.height  # 5 tiles: 3 columns x 2 rows
        assert img.getpixel((16 + 256, 16 + 256))[:3] == (255, 0, 0)  # tile 1 is the first image


def test_unsupported_ratio_and_size_refused_locally() -> None:
    seen, transport = recorder()
    with Client("k", base_url="http://gw", transport=transport) as client:
        with pytest.raises(InvalidInputError, match="aspect ratio"):
            client.generate("x", model="gemini-2.5-flash-image", aspect_ratio="8:1")
        with pytest.raises(InvalidInputError, match="image size"):
            client.generate("x", model="gemini-2.5-flash-image", image_size="4K")
        # Unknown models are passed through: the server decides.
        client.generate("x", model="gemini-9-image", aspect_ratio="8:1")
    assert len(seen) == 1


def test_inputs_are_sniffed_and_odd_formats_converted(tmp_path: Path) -> None:
    gif = io.BytesIO()
    Image.new("RGB", (10, 10)).save(gif, format="GIF")
    converted = load_image(gif.getvalue())
    assert converted.mime_type == "image/png" and sniff_mime(converted.data) == "image/png"
    jpeg = io.BytesIO()
    Image.new("RGB", (10, 10)).save(jpeg, format="JPEG")
    assert load_image(jpeg.getvalue()).mime_type == "image/jpeg"
    cmyk = Image.new("CMYK", (4, 4))
    assert load_image(cmyk).mime_type == "image/png"
    with pytest.raises(InvalidInputError, match="cannot read image"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(InvalidInputError, match="not an image"):
        load_image(b"plain text")
    with pytest.raises(InvalidInputError, match="text mode"):
        load_image(io.StringIO("x"))  # type: ignore[arg-type]
    path = tmp_path / "kitten.png"
    path.write_bytes(png_bytes())
    with path.open("rb") as fh:
        assert load_image(fh).label == "kitten"  # named like the file, for collage captions
    assert load_image(png_bytes(), 3).label == "3"


async def test_async_client_builds_the_same_request(sample_png: Path) -> None:
    sync_seen, sync_transport = recorder()
    async_seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        async_seen.append(request)
        return httpx.Response(200, json=OK_BODY)

    with Client("k", base_url="http://gw", transport=sync_transport) as client:
        client.compose("p", [sample_png, sample_png], aspect_ratio="4:3")
    async with AsyncClient("k", base_url="http://gw", transport=httpx.MockTransport(handler)) as aclient:
        await aclient.compose("p", [sample_png, sample_png], aspect_ratio="4:3")
    assert body_of(sync_seen[0]) == body_of(async_seen[0])
    assert sync_seen[0].url == async_seen[0].url
