"""The gallery recorder on its own: a real SQLite store and real files, answers submitted as the
pipeline does, and its writer thread held at will (the store it asks for is handed over only
when the test says so) to see batching, draining and the bounded backlog."""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio.to_thread
import orjson
import pytest
from sqlalchemy import event

import bananagate.console.recorder as recorder_module
from bananagate.console.recorder import GalleryRecorder
from bananagate.protocol.catalog import find_model
from bananagate.protocol.validation import parse_and_check
from bananagate.providers.base import Call, Method
from bananagate.server.auth import Principal
from bananagate.store import Store

MODEL = "gemini-2.5-flash-image"
ALICE = Principal(key_id=1, key_name="alice")


class HeldStore:
    """The store factory the recorder calls: while held, the writer blocks in it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.entered = threading.Event()
        self.released = threading.Event()
        self.released.set()

    def hold(self) -> None:
        self.entered.clear()
        self.released.clear()

    def release(self) -> None:
        self.released.set()

    def __call__(self) -> Store:
        if not self.released.is_set():
            self.entered.set()
            assert self.released.wait(30), "the test never released the writer"
        return self.store

    async def writer_blocked(self) -> None:
        assert await anyio.to_thread.run_sync(self.entered.wait, 30)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(f"sqlite:///{tmp_path / 'g.db'}") as opened:
        opened.gallery.configure(tmp_path / "gallery", max_bytes=None)
        yield opened


@pytest.fixture
def held(store: Store) -> HeldStore:
    return HeldStore(store)


def make_call(request_id: str, prompt: str = "A red bicycle", method: Method = "generateContent") -> Call:
    model = find_model(MODEL)
    assert model is not None
    raw = orjson.dumps(
        {
            "contents": [{"parts": [{"text": prompt}]}],
            "generationConfig": {"imageConfig": {"aspectRatio": "3:2"}},
        }
    )
    return Call(
        model=model,
        model_id=MODEL,
        method=method,
        body=raw,
        request=parse_and_check(raw, model),
        request_id=request_id,
    )


def answer(*parts: dict[str, Any], finish: str | None = "STOP") -> bytes:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": list(parts)}}
    if finish:
        candidate["finishReason"] = finish
    return orjson.dumps({"candidates": [candidate], "usageMetadata": {"totalTokenCount": 1290}})


def image_part(data: bytes, mime: str = "image/png", thought: bool = False) -> dict[str, Any]:
    part: dict[str, Any] = {"inlineData": {"mimeType": mime, "data": base64.b64encode(data).decode()}}
    if thought:
        part["thought"] = True
    return part


def picture(seed: int, size: int = 50_000) -> bytes:
    return bytes([seed % 256]) * 16 + os.urandom(size)


def gallery_writes(store: Store) -> list[str]:
    """From now on: "insert" for each INSERT statement into gallery_images, "commit" for each
    commit (a list that fills up)."""
    seen: list[str] = []

    def on_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO GALLERY_IMAGES"):
            seen.append("insert")

    event.listen(store.engine, "before_cursor_execute", on_execute)
    event.listen(store.engine, "commit", lambda conn: seen.append("commit"))
    return seen


async def test_answers_are_written_in_batches_of_one_transaction(store: Store, held: HeldStore) -> None:
    recorder = GalleryRecorder(held)
    writes = gallery_writes(store)
    images = [picture(i) for i in range(5)]
    held.hold()
    recorder.submit(make_call("rid-0"), ALICE, [answer(image_part(images[0]))], 39_000_000, 1200)
    await held.writer_blocked()  # the writer has taken the first answer and waits in store()
    for i in range(1, 5):
        body = answer({"text": f"picture {i}"}, image_part(images[i], "image/jpeg"))
        recorder.submit(make_call(f"rid-{i}", prompt=f"prompt {i}"), ALICE, [body], 39_000_000, 1000 + i)
    waits = [asyncio.ensure_future(recorder.wait(f"rid-{i}")) for i in range(5)]
    held.release()
    ids = await asyncio.gather(*waits)
    assert [len(i) for i in ids] == [1] * 5
    # The four answers queued behind the first went in one INSERT, in one transaction.
    assert writes == ["insert", "commit", "insert", "commit"]
    for i, (image_id,) in enumerate(ids):
        entry = store.gallery.get(image_id)
        assert entry is not None and entry.request_id == f"rid-{i}" and entry.key_name == "alice"
        assert store.gallery.read(entry) == images[i]
        assert entry.mime_type == ("image/png" if i == 0 else "image/jpeg")
        assert entry.prompt == ("A red bicycle" if i == 0 else f"prompt {i}")
        assert entry.text == (None if i == 0 else f"picture {i}")
        assert entry.cost_nanos == 39_000_000 and entry.latency_ms == (1200 if i == 0 else 1000 + i)
        assert entry.params == {
            "model_id": MODEL,
            "aspect_ratio": "3:2",
            "image_size": None,
            "input_images": 0,
            "streamed": False,
            "channel": None,
            "finish_reason": "STOP",
            "images_in_request": 1,
        }
    assert await recorder.wait("rid-3") == ids[3]  # written: read back from the database
    # All five went into one segment, one after another, and nothing else is in the directory.
    entries = [store.gallery.get(i) for (i,) in ids]
    assert len({e.segment for e in entries if e}) == 1
    assert [e.segment_offset for e in entries if e] == [0, *itertools.accumulate(len(i) for i in images[:4])]
    gallery_dir = store.gallery.directory
    assert gallery_dir is not None and [p.name for p in gallery_dir.iterdir()] == ["segments"]


async def test_a_stream_keeps_its_final_images_and_text_not_its_thoughts(store: Store) -> None:
    recorder = GalleryRecorder(lambda: store)
    draft, first, second = picture(1), picture(2), picture(3, size=300)
    events = [
        answer({"text": "thinking", "thought": True}, image_part(draft, thought=True), finish=None),
        answer({"text": "Here "}, finish=None),
        answer(image_part(first), {"text": "they "}, finish=None),
        answer(image_part(second, "image/webp"), {"text": "are"}, {"inlineData": {"data": "%%"}}),
    ]
    recorder.submit(make_call("s1", method="streamGenerateContent"), ALICE, events, None, 5)
    ids = await recorder.wait("s1")
    entries = [store.gallery.get(i) for i in ids]
    assert [(e.mime_type, e.image_index, e.text) for e in entries if e] == [
        ("image/png", 0, "Here they are"),
        ("image/webp", 1, "Here they are"),
    ]
    assert [store.gallery.read(e) for e in entries if e] == [first, second]
    assert entries[0] is not None and entries[0].params["streamed"] is True
    assert entries[0].params["images_in_request"] == 2 and entries[0].cost_nanos == 0


async def test_answers_without_images_are_not_queued(store: Store) -> None:
    recorder = GalleryRecorder(lambda: store)
    recorder.submit(make_call("t1"), ALICE, [answer({"text": "no picture today"})], 1, 1)
    assert await recorder.wait("t1") == []
    await recorder.drain()
    assert store.gallery.totals() == (0, 0)


async def test_a_failing_disk_is_logged_and_the_writer_goes_on(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_bytes(b"")
    store.gallery.configure(blocker / "gallery", max_bytes=None)
    recorder = GalleryRecorder(lambda: store)
    with caplog.at_level(logging.ERROR, logger="bananagate.console"):
        recorder.submit(make_call("bad"), ALICE, [answer(image_part(picture(1)))], 1, 1)
        assert await recorder.wait("bad") == []
    assert any("rid=bad" in r.getMessage() for r in caplog.records)
    store.gallery.configure(tmp_path / "gallery", max_bytes=None)  # the disk is back
    recorder.submit(make_call("good"), ALICE, [answer(image_part(picture(2)))], 1, 1)
    assert len(await recorder.wait("good")) == 1
    assert store.gallery.totals()[0] == 1


async def test_drain_waits_for_everything_queued(store: Store, held: HeldStore) -> None:
    recorder = GalleryRecorder(held)
    await recorder.drain()  # nothing queued: returns at once
    held.hold()
    for i in range(3):
        recorder.submit(make_call(f"d{i}"), ALICE, [answer(image_part(picture(i)))], 1, 1)
    await held.writer_blocked()
    drained = asyncio.ensure_future(recorder.drain())
    await asyncio.sleep(0)
    assert not drained.done()  # the writer is still held
    held.release()
    await drained
    assert [len(store.gallery.by_request(f"d{i}")) for i in range(3)] == [1, 1, 1]


async def test_a_full_backlog_holds_submit_until_the_writer_makes_room(store: Store, held: HeldStore) -> None:
    body = answer(image_part(picture(1)))
    recorder = GalleryRecorder(held, max_backlog_bytes=len(body) + 100, stall_seconds=30)
    held.hold()
    recorder.submit(make_call("b1"), ALICE, [body], 1, 1)  # an empty queue takes any answer
    await held.writer_blocked()
    # The second does not fit: submit blocks (here in a thread) until the first is written.
    second = asyncio.ensure_future(
        anyio.to_thread.run_sync(
            recorder.submit, make_call("b2"), ALICE, [answer(image_part(picture(2)))], 1, 1
        )
    )
    await asyncio.sleep(0)
    assert not second.done()
    held.release()
    await second
    await recorder.drain()
    assert [len(store.gallery.by_request(r)) for r in ("b1", "b2")] == [1, 1]


async def writer_stuck_on(
    held: HeldStore, request_id: str, *, stall_seconds: float
) -> tuple[GalleryRecorder, list[bytes]]:
    """A recorder whose writer is stuck writing `request_id`'s answer, with a backlog that has no
    room for another; and another answer's bodies."""
    body = answer(image_part(picture(1)))
    recorder = GalleryRecorder(held, max_backlog_bytes=len(body) + 100, stall_seconds=stall_seconds)
    held.hold()
    recorder.submit(make_call(request_id), ALICE, [body], 1, 1)
    await held.writer_blocked()
    return recorder, [answer(image_part(picture(2)))]


async def test_room_holds_only_its_request_until_the_writer_makes_room(store: Store, held: HeldStore) -> None:
    recorder, second = await writer_stuck_on(held, "r1", stall_seconds=30)
    waiting = asyncio.ensure_future(recorder.room(second))
    for _ in range(5):  # the event loop goes on serving others meanwhile
        await asyncio.sleep(0.01)
    assert not waiting.done()
    held.release()
    await asyncio.wait_for(waiting, 10)
    recorder.submit(make_call("r2"), ALICE, second, 1, 1)  # fits now: queued without a wait
    await recorder.drain()
    assert [len(store.gallery.by_request(r)) for r in ("r1", "r2")] == [1, 1]
    await asyncio.wait_for(recorder.room([answer({"text": "no image"})]), 1)  # nothing to keep


async def test_waiting_for_room_is_logged_at_most_once_a_minute(
    store: Store, held: HeldStore, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under sustained load the backlog fills and empties many times a second: one warning (and
    its "caught up") per HOLD_LOG_SECONDS, then one that says how many episodes it stood for."""
    body = answer(image_part(picture(1)))
    recorder = GalleryRecorder(held, max_backlog_bytes=len(body) + 100, stall_seconds=30)

    async def episode(n: int) -> None:
        held.hold()
        recorder.submit(make_call(f"e{n}a"), ALICE, [body], 1, 1)
        await held.writer_blocked()
        waiting = asyncio.ensure_future(recorder.room([answer(image_part(picture(n)))]))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        held.release()
        await asyncio.wait_for(waiting, 10)
        await recorder.drain()

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    with caplog.at_level(logging.WARNING, logger="bananagate.console"):
        await episode(1)
        assert len(warnings()) == 2
        assert "the writer is behind" in warnings()[0] and "times" not in warnings()[0]
        assert "caught up" in warnings()[1]
        for n in range(2, 5):
            await episode(n)
        assert len(warnings()) == 2  # within the minute: counted, not logged
        monkeypatch.setattr(recorder_module, "HOLD_LOG_SECONDS", 0.0)
        await episode(5)
    assert len(warnings()) == 4
    assert "; 4 times in the last" in warnings()[2] and "caught up" in warnings()[3]


async def test_a_stuck_writer_gives_up_images_after_one_stall(
    store: Store, held: HeldStore, caplog: pytest.LogCaptureFixture
) -> None:
    body = answer(image_part(picture(1)))
    recorder = GalleryRecorder(held, max_backlog_bytes=len(body), stall_seconds=0.05)
    held.hold()
    recorder.submit(make_call("s1"), ALICE, [body], 1, 1)
    await held.writer_blocked()
    with caplog.at_level(logging.ERROR, logger="bananagate.console"):
        recorder.submit(make_call("s2"), ALICE, [answer(image_part(picture(2)))], 1, 1)  # waits, in vain
        recorder.submit(make_call("s3"), ALICE, [answer(image_part(picture(3)))], 1, 1)  # no second wait
        held.release()
        await recorder.drain()
        recorder.submit(make_call("s4"), ALICE, [answer(image_part(picture(4)))], 1, 1)  # moving again
        await recorder.drain()
    messages = [r.getMessage() for r in caplog.records]
    assert any("rid=s2" in m and "not kept" in m for m in messages)
    assert any("moves again; 2 answer(s)" in m for m in messages)
    assert [len(store.gallery.by_request(r)) for r in ("s1", "s2", "s3", "s4")] == [1, 0, 0, 1]


async def test_room_waits_on_the_writer_not_a_timer_and_gives_up_after_a_stall(
    store: Store, held: HeldStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    looks: list[float] = []  # each time a held request looks at the backlog again

    def monotonic() -> float:
        looks.append(time.monotonic())
        return looks[-1]

    monkeypatch.setattr(recorder_module, "time", SimpleNamespace(monotonic=monotonic))
    recorder, second = await writer_stuck_on(held, "w1", stall_seconds=0.3)
    waiting = [asyncio.ensure_future(recorder.room(second)) for _ in range(3)]
    await asyncio.sleep(0.1)
    # Parked on the writer: one look each, not one every few milliseconds.
    assert not any(w.done() for w in waiting) and len(looks) == 3
    await asyncio.wait_for(asyncio.gather(*waiting), 5)  # given up at the stall deadline
    assert len(looks) == 4 and looks[-1] - looks[0] >= 0.3  # one look marks the writer stalled
    held.release()
    await recorder.drain()
    recorder.submit(make_call("w2"), ALICE, second, 1, 1)  # the writer moves again: queued at once
    await recorder.drain()
    assert [len(store.gallery.by_request(r)) for r in ("w1", "w2")] == [1, 1]


async def test_snake_case_answers_are_kept(store: Store) -> None:
    recorder = GalleryRecorder(lambda: store)
    data = picture(7)
    body = orjson.dumps(
        {
            "candidates": [
                {
                    "content": {
                        "parts": [
                            {
                                "inline_data": {
                                    "mime_type": "image/jpeg",
                                    "data": base64.b64encode(data).decode(),
                                }
                            }
                        ]
                    },
                    "finish_reason": "STOP",
                }
            ]
        }
    )
    recorder.submit(make_call("snake"), ALICE, [body], 1, 1)
    (image_id,) = await recorder.wait("snake")
    entry = store.gallery.get(image_id)
    assert entry is not None and entry.mime_type == "image/jpeg" and entry.params["finish_reason"] == "STOP"
    assert store.gallery.read(entry) == data


def test_the_backlog_bound_comes_from_the_settings(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`BANANAGATE_GALLERY_BACKLOG_BYTES` sets the bound the gateway's recorder holds answers to
    (memory against throughput); by default 8 MiB."""
    from starlette.routing import Mount

    from bananagate.server.app import create_app
    from bananagate.settings import Settings

    def bound(settings: Settings) -> int:
        app = create_app(settings, store=store)
        console = next(r for r in app.routes if isinstance(r, Mount) and r.path == "/console").app
        while not hasattr(console, "state"):  # the console's own middleware wraps its app
            console = console.app
        return int(console.state.ctx.recorder.max_backlog_bytes)

    monkeypatch.setenv("BANANAGATE_DATA_DIR", str(tmp_path))
    assert bound(Settings()) == 8 * 1024 * 1024
    monkeypatch.setenv("BANANAGATE_GALLERY_BACKLOG_BYTES", str(32 * 1024 * 1024))
    assert bound(Settings()) == 32 * 1024 * 1024
