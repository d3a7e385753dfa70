"""Fixtures for the SDK and client CLI: sample inputs in every accepted form, clean environment."""

from __future__ import annotations

import base64
import io
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bananagate.client import Client
from tests.conftest import Gateway

ENV_VARS = (
    "BANANAGATE_BASE_URL",
    "BANANAGATE_API_KEY",
    "BANANAGATE_AUTH",
    "COMETAPI_KEY",
    "GOOGLE_API_KEY",
    "GEMINI_API_KEY",
)
FAST_MODEL = "gemini-3.1-flash-image-preview"  # 512 px: the cheapest size where size does not matter
INPUT_KINDS = ("path", "bytes", "file", "pil", "data_url")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No developer settings leak in; the default data dir is an empty temp dir."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BANANAGATE_DATA_DIR", str(tmp_path / "no-data-dir"))


def png_bytes(size: tuple[int, int] = (96, 64), color: str = "orange") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def sample_png(tmp_path: Path) -> Path:
    path = tmp_path / "sample.png"
    path.write_bytes(png_bytes())
    return path


def as_input(kind: str, path: Path) -> Any:
    """The image at `path` in the given input form."""
    data = path.read_bytes()
    if kind == "path":
        return path
    if kind == "bytes":
        return data
    if kind == "file":
        return io.BytesIO(data)
    if kind == "pil":
        return Image.open(path)
    if kind == "data_url":
        return "data:image/png;base64," + base64.b64encode(data).decode()
    raise AssertionError(kind)


@pytest.fixture
def client(gateway: Gateway) -> Iterator[Client]:
    with Client(gateway.key, base_url=gateway.url) as c:
        yield c


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Prompt text unique to this test run: emulator `times=N` counters are per identical request."""
    tag = uuid.uuid4().hex[:8]
    return lambda text: f"{text} #{tag}"
