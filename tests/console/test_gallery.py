"""The gallery store (files + rows, size cap with oldest-first eviction) and the pipeline hook
that fills it from real answers, streamed and not."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from bananagate.console.recorder import answer_parts
from bananagate.store import NewImage, Store
from tests.conftest import Gateway


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(f"sqlite:///{tmp_path / 'g.db'}") as opened:
        opened.gallery.configure(tmp_path / "gallery", max_bytes=None)
        yield opened


def image(index: int, size: int = 100, key: str = "alice", model: str = "gemini-2.5-flash-image") -> NewImage:
    return NewImage(
        data=bytes([index % 256]) * size,
        mime_type="image/png",
        request_id=f"rid-{index}",
        image_index=0,
        key_id=1,
        key_name=key,
        model=model,
        prompt=f"prompt {index}",
        params={"aspect_ratio": "1:1"},
        cost_nanos=39_000_000,
    )


def test_add_read_filter_and_delete(store: Store, tmp_path: Path) -> None:
    gallery = store.gallery
    (first,) = gallery.add([image(1)])
    (second,) = gallery.add([image(2, key="bob", model="gemini-3-pro-image-preview")])
    entry = gallery.get(first)
    assert entry is not None and entry.prompt == "prompt 1" and entry.params == {"aspect_ratio": "1:1"}
    assert entry.extension == ".png" and entry.cost_nanos == 39_000_000
    assert gallery.read(entry) == bytes([1]) * 100
    assert entry.segment is not None and entry.segment_offset == 0
    segment = tmp_path / "gallery" / "segments" / entry.segment
    assert segment.read_bytes() == bytes([1]) * 100 + bytes([2]) * 100
    assert [e.id for e in gallery.page()] == [second, first]  # newest first
    assert [e.id for e in gallery.page(key_name="bob")] == [second]
    assert [e.id for e in gallery.page(model="gemini-2.5-flash-image")] == [first]
    assert [e.id for e in gallery.page(before_id=second)] == [first]
    assert gallery.facets() == (["alice", "bob"], ["gemini-2.5-flash-image", "gemini-3-pro-image-preview"])
    assert gallery.delete(first) == 1 and gallery.delete(first) == 0
    assert gallery.get(first) is None
    assert segment.read_bytes() == bytes(100) + bytes([2]) * 100  # its bytes are gone from the disk
    assert gallery.totals() == (1, 100)


def test_size_cap_evicts_the_oldest_first(store: Store) -> None:
    gallery = store.gallery
    gallery.configure(gallery.directory, max_bytes=350)  # type: ignore[arg-type]
    ids = [gallery.add([image(i)])[0] for i in range(5)]
    kept = [e.id for e in gallery.page()]
    assert kept == ids[:1:-1]  # the three newest fit in 350 bytes
    assert gallery.totals() == (3, 300)
    assert all(gallery.read(e) == bytes([i + 2]) * 100 for i, e in enumerate(reversed(gallery.page())))


def test_answer_parts_keeps_delivered_images_and_text_not_thoughts() -> None:
    def part(data: bytes, thought: bool = False) -> dict[str, object]:
        out: dict[str, object] = {
            "inlineData": {"mimeType": "image/jpeg", "data": base64.b64encode(data).decode()}
        }
        if thought:
            out["thought"] = True
        return out

    events = [
        orjson.dumps(
            {"candidates": [{"content": {"parts": [{"text": "draft", "thought": True}, part(b"d", True)]}}]}
        ),
        orjson.dumps({"candidates": [{"content": {"parts": [{"text": "Here "}]}}]}),
        orjson.dumps(
            {
                "candidates": [
                    {"content": {"parts": [part(b"final"), {"text": "it is"}]}, "finishReason": "STOP"}
                ]
            }
        ),
    ]
    images, text, finish = answer_parts(events)
    assert images == [("image/jpeg", b"final")] and text == "Here it is" and finish == "STOP"


def wait_for(store: Store, request_id: str) -> list[object]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        entries = store.gallery.by_request(request_id)
        if entries:
            return list(entries)
        time.sleep(0.05)
    raise AssertionError(f"no gallery entry for {request_id}")


def test_api_answers_land_in_the_gallery_streamed_and_not(console_gateway: Gateway) -> None:
    gw = console_gateway
    url = f"{gw.url}/v1beta/models/gemini-3-pro-image-preview"
    body = {
        "contents": [{"parts": [{"text": "A red bicycle"}]}],
        "generationConfig": {"imageConfig": {"aspectRatio": "3:2", "imageSize": "2K"}},
    }
    headers = {"x-goog-api-key": gw.key}
    plain = httpx.post(f"{url}:generateContent", json=body, headers=headers, timeout=60)
    assert plain.status_code == 200
    delivered = base64.b64decode(plain.json()["candidates"][0]["content"]["parts"][-1]["inlineData"]["data"])
    with httpx.stream(
        "POST", f"{url}:streamGenerateContent?alt=sse", json=body, headers=headers, timeout=60
    ) as s:
        s.read()
        streamed_id = s.headers["x-request-id"]
    with Store.open(f"sqlite:///{gw.data_dir / 'bananagate.db'}") as store:
        store.gallery.configure(gw.data_dir / "gallery", max_bytes=None)
        (entry,) = wait_for(store, plain.headers["x-request-id"])
        assert entry.key_name == "default" and entry.model == "gemini-3-pro-image-preview"  # type: ignore[attr-defined]
        assert entry.params["image_size"] == "2K" and entry.params["streamed"] is False  # type: ignore[attr-defined]
        assert entry.cost_nanos == 134_000_000 and entry.mime_type == "image/jpeg"  # type: ignore[attr-defined]
        assert store.gallery.read(entry) == delivered  # type: ignore[arg-type]
        (streamed,) = wait_for(store, streamed_id)
        assert streamed.params["streamed"] is True and streamed.cost_nanos == 134_000_000  # type: ignore[attr-defined]
