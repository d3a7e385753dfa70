"""Streams pass through event by event, as the upstream sends them (acceptance 3)."""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.channels.conftest import FLASH_25, GOOGLE_KEY, client_for, simple_body, toml_channel
from tests.conftest import Gateway, start_gateway, stop_gateway
from tests.upstreams import FakeGoogle, StreamReply, gemini_answer, sse_events

STREAM = f"/v1beta/models/{FLASH_25}:streamGenerateContent"


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeGoogle]:
    with FakeGoogle(keys=[GOOGLE_KEY]) as google:
        yield google  # type: ignore[misc]


@pytest.fixture(scope="module")
def gateway(upstream: FakeGoogle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    data_dir: Path = tmp_path_factory.mktemp("stream-gw")
    config = data_dir / "bananagate.toml"  # found in the data dir without --config
    config.write_text(toml_channel("google", "gemini", upstream.url, keys=[GOOGLE_KEY]))
    gateway = start_gateway(data_dir)
    yield gateway
    stop_gateway(gateway)


def test_first_event_reaches_the_client_before_the_upstream_finishes(
    gateway: Gateway, upstream: FakeGoogle
) -> None:
    gate = threading.Event()
    events = sse_events(FLASH_25, upstream.image, "thinking about bananas")
    reply = StreamReply(events, gate=gate, gate_after=1)
    upstream.enqueue(reply)
    with (
        client_for(gateway, timeout=10) as client,
        client.stream("POST", STREAM + "?alt=sse", content=simple_body()) as r,
    ):
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-bananagate-channel"] == "google"
        received = b""
        chunks = r.iter_raw()
        while b"\r\n\r\n" not in received:
            received += next(chunks)  # a gateway that buffered would time out here
        assert received == b"data: " + events[0] + b"\r\n\r\n"
        assert not reply.finished.is_set()  # the upstream is still holding its second event
        gate.set()
        rest = b"".join(chunks)
    assert rest == b"data: " + events[1] + b"\r\n\r\n"
    assert reply.finished.is_set()


def test_a_30_mb_event_passes_intact(gateway: Gateway, upstream: FakeGoogle) -> None:
    big_image = os.urandom(22 * 1024 * 1024)  # 22 MiB of image bytes ~ 30 MB of Base64
    big = orjson.dumps(gemini_answer(FLASH_25, big_image))
    assert len(big) > 30_000_000
    small = sse_events(FLASH_25, upstream.image, "first")[0]
    upstream.enqueue(StreamReply([small, big], chunk_size=256 * 1024))
    with (
        client_for(gateway) as client,
        client.stream("POST", STREAM + "?alt=sse", content=simple_body()) as r,
    ):
        assert r.status_code == 200
        raw = r.read()
    frames = raw.split(b"\r\n\r\n")
    assert frames[-1] == b"" and len(frames) == 3
    assert frames[0] == b"data: " + small
    assert hashlib.sha256(frames[1]).digest() == hashlib.sha256(b"data: " + big).digest()
    parts = orjson.loads(frames[1][len(b"data: ") :])["candidates"][0]["content"]["parts"]
    assert base64.b64decode(parts[-1]["inlineData"]["data"]) == big_image


def test_without_alt_sse_the_events_come_as_one_json_array(gateway: Gateway, upstream: FakeGoogle) -> None:
    with client_for(gateway) as client:
        response = client.post(STREAM, content=simple_body())
    assert response.status_code == 200
    assert upstream.requests[-1].query == {"alt": "sse"}  # upstream asked for SSE all the same
    answers = response.json()
    assert [orjson.dumps(a) for a in answers] == upstream.requests[-1].reply_events
