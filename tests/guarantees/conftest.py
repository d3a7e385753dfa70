"""Fixtures for the request-guarantees suite: one gateway process in front of two equal-priority
loopback Google upstreams (a and b), shared by the module; each test makes its own API key."""

from __future__ import annotations

import asyncio
import base64
import itertools
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from bananagate.store import KeyLimits, Store
from tests.channels.conftest import FLASH_25, GOOGLE_KEY, toml_channel
from tests.conftest import Gateway, start_gateway, stop_gateway
from tests.metering.conftest import db_url, store  # noqa: F401  (store fixtures on SQLite and PostgreSQL)
from tests.upstreams import FakeGoogle, Recorded, Reply, StreamReply, gemini_answer, usage

GENERATE = f"/v1beta/models/{FLASH_25}:generateContent"
STREAM = f"/v1beta/models/{FLASH_25}:streamGenerateContent?alt=sse"
PRICE = 39_000_000  # one gemini-2.5-flash-image image
ROUTING = "[routing]\nbackoff_base = 0.05\nbackoff_max = 0.2\ncircuit_failures = 100\n"
_names = itertools.count()


@dataclass
class Rig:
    gateway: Gateway
    a: FakeGoogle
    b: FakeGoogle
    store: Store

    @property
    def upstreams(self) -> tuple[FakeGoogle, FakeGoogle]:
        return self.a, self.b

    def upstream_calls(self) -> int:
        return len(self.a.requests) + len(self.b.requests)

    def key(self, **limits: Any) -> tuple[int, str]:
        record, secret = self.store.keys.create_key(f"k{next(_names)}", limits=KeyLimits(**limits))
        return record.id, secret

    def client(self, secret: str, timeout: float = 30) -> httpx.Client:
        return httpx.Client(base_url=self.gateway.url, headers={"x-goog-api-key": secret}, timeout=timeout)


def two_channels(a_url: str, b_url: str, extra: str = "") -> str:
    return (
        ROUTING
        + extra
        + toml_channel("a", "gemini", a_url, keys=[GOOGLE_KEY])
        + toml_channel("b", "gemini", b_url, keys=[GOOGLE_KEY])
    )


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with (
        FakeGoogle(keys=[GOOGLE_KEY], name="a") as a,
        FakeGoogle(keys=[GOOGLE_KEY], name="b", colour=(10, 10, 240)) as b,
    ):
        data_dir: Path = tmp_path_factory.mktemp("guarantees")
        (data_dir / "bananagate.toml").write_text(two_channels(a.url, b.url))
        gateway = start_gateway(data_dir, env={"BANANAGATE_CONSOLE": "false"})
        try:
            with Store.open(f"sqlite:///{data_dir / 'bananagate.db'}") as store:
                yield Rig(gateway, a, b, store)  # type: ignore[arg-type]
        finally:
            stop_gateway(gateway)


@pytest.fixture
def fresh(rig: Rig) -> Iterator[Rig]:
    """The rig with both upstreams back to their normal answers and no recorded requests."""
    for upstream in rig.upstreams:
        upstream.reset()
    yield rig
    for upstream in rig.upstreams:
        upstream.reset()


def body(prompt: str = "A banana on a beach", **extra: Any) -> bytes:
    return orjson.dumps({"contents": [{"role": "user", "parts": [{"text": prompt}]}], **extra})


def new_key() -> str:
    return f"test-{uuid.uuid4()}"


async def burst(
    url: str | Sequence[str], headers: dict[str, str], content: bytes, n: int, path: str = GENERATE
) -> list[httpx.Response]:
    """`n` identical requests at once (alternating between the URLs given)."""
    urls = [url] if isinstance(url, str) else list(url)
    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        return await asyncio.gather(
            *(client.post(urls[i % len(urls)] + path, content=content, headers=headers) for i in range(n))
        )


def signed_answer(model: str, image: bytes, signature: bytes, text: str) -> dict[str, Any]:
    """A Gemini 3 style answer: a text part carrying a thoughtSignature, then the image."""
    answer = gemini_answer(model, image)
    sig = base64.b64encode(signature).decode()
    answer["candidates"][0]["content"]["parts"].insert(0, {"text": text, "thoughtSignature": sig})
    return answer


def signing(upstream: FakeGoogle) -> None:
    """Make `upstream` sign every answer with a signature naming itself and the request."""

    def reply(request: Recorded) -> Reply:
        signature = f"{upstream.name}:{len(upstream.requests)}".encode()
        answer = signed_answer(FakeGoogle.model_of(request), upstream.image, signature, f"by {upstream.name}")
        return Reply(200, orjson.dumps(answer))

    upstream.set_default(reply)


class Dying(list[bytes]):
    """Stream events that end with the upstream's connection dropping (no clean end, no error
    event): iterating them raises after the last one, which aborts the loopback response."""

    def __iter__(self) -> Iterator[bytes]:
        yield from super().__iter__()
        raise ConnectionResetError("upstream died mid-stream")


def image_event(model: str, image: bytes, finish: bool) -> bytes:
    answer = gemini_answer(model, image)
    if not finish:
        del answer["candidates"][0]["finishReason"]
        answer["usageMetadata"] = usage()
    return orjson.dumps(answer)


def dying_stream(events: list[bytes]) -> StreamReply:
    return StreamReply(Dying(events))
