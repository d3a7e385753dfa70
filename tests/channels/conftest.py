"""Fixtures for the channels suite: loopback upstreams, config files, gateways configured with them."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import Gateway, start_gateway, stop_gateway
from tests.upstreams import FakeComet, FakeGoogle, FakeOpenAI, png

FLASH_25 = "gemini-2.5-flash-image"
PRO_3 = "gemini-3-pro-image-preview"
FLASH_31 = "gemini-3.1-flash-image-preview"

GOOGLE_KEY = "AIzaSyTEST-google-0123456789abcdefghij"
GOOGLE_KEY_2 = "AIzaSyTEST-google-second-key-9876543210"
COMET_KEY = "sk-comet-test-0123456789abcdefghijklmnop"
OPENAI_KEY = "sk-proj-openai-test-0123456789abcdefghijkl"


def fidelity_body() -> bytes:
    """A client body full of what a gateway must not lose or reformat: unknown fields, snake_case
    `thinkingConfig`, URL-safe unpadded Base64, a thoughtSignature, odd spacing and key order."""
    image = base64.urlsafe_b64encode(png((250, 10, 10), (17, 9))).decode().rstrip("=")
    signature = base64.urlsafe_b64encode(b"\xfb\xff\xfe-signature").decode()
    text = (
        '{ "generationConfig" : {"responseModalities":["Text","Image"], "imageConfig": {"aspectRatio": "16:9"},'
        ' "thinkingConfig": {"include_thoughts": true, "thinking_level": "high"}, "futureKnob": 7},\n'
        '  "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],\n'
        '  "contents": [{"role": "user", "parts": [{"text": "Put a hat on it \\u00e9"},'
        ' {"inline_data": {"mime_type": "image/png", "data": "' + image + '"}}]},'
        ' {"role": "model", "parts": [{"text": "ok", "thoughtSignature": "' + signature + '"}]},'
        ' {"role": "user", "parts": [{"text": "now bigger"}]}],\n'
        '  "someUnknownTopLevelField": {"nested": [1, 2, 3]} }'
    )
    return text.encode()


def simple_body(prompt: str = "A banana on a beach", ratio: str | None = None, **config: Any) -> bytes:
    generation: dict[str, Any] = dict(config)
    if ratio:
        generation["imageConfig"] = {"aspectRatio": ratio}
    body: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": prompt}]}]}
    if generation:
        body["generationConfig"] = generation
    return orjson.dumps(body)


def toml_channel(name: str, kind: str, url: str | None = None, **fields: Any) -> str:
    lines = ["[[channels]]", f'name = "{name}"', f'kind = "{kind}"']
    if url:
        lines.append(f'base_url = "{url}"')
    for key, value in fields.items():
        if isinstance(value, dict):
            inner = ", ".join(f'"{k}" = {orjson.dumps(v).decode()}' for k, v in value.items())
            lines.append(f"{key} = {{ {inner} }}")
        else:
            lines.append(f"{key} = {orjson.dumps(value).decode()}")
    return "\n".join(lines) + "\n"


@pytest.fixture
def google() -> Iterator[FakeGoogle]:
    with FakeGoogle(keys=[GOOGLE_KEY, GOOGLE_KEY_2]) as upstream:
        yield upstream  # type: ignore[misc]


@pytest.fixture
def google_b() -> Iterator[FakeGoogle]:
    with FakeGoogle(keys=[GOOGLE_KEY], name="google-b", colour=(10, 10, 240)) as upstream:
        yield upstream  # type: ignore[misc]


@pytest.fixture
def comet() -> Iterator[FakeComet]:
    with FakeComet(keys=[COMET_KEY]) as upstream:
        yield upstream  # type: ignore[misc]


@pytest.fixture
def openai_up() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(keys=[OPENAI_KEY]) as upstream:
        yield upstream  # type: ignore[misc]


GatewayFactory = Callable[..., Gateway]


@pytest.fixture
def gateway_with(tmp_path: Path) -> Iterator[GatewayFactory]:
    """Start `bananagate serve --config <file>` with the given TOML; stopped after the test."""
    started: list[Gateway] = []

    def start(config: str, *, env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> Gateway:
        data_dir = tmp_path / f"gw{len(started)}"
        data_dir.mkdir()
        path = data_dir / "channels.toml"
        path.write_text(config)
        gateway = start_gateway(data_dir, env=env, args=("--config", str(path), *args))
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        with contextlib.suppress(Exception):
            stop_gateway(gateway)


def client_for(gateway: Gateway, timeout: float = 60) -> httpx.Client:
    return httpx.Client(base_url=gateway.url, headers={"x-goog-api-key": gateway.key}, timeout=timeout)


def image_of(answer: dict[str, Any]) -> bytes:
    parts = answer["candidates"][0]["content"]["parts"]
    (blob,) = [p["inlineData"] for p in parts if "inlineData" in p]
    return base64.b64decode(blob["data"])
