"""The pipeline's image sink: keeps every delivered image in the gallery.

`submit` runs on the event loop and only queues the answer (its bodies by reference, plus the
few request fields a gallery row needs). One writer thread drains the queue in batches: it finds
each answer's images by byte scan (protocol/scan.py: the Base64 is never parsed into strings),
decodes them with SIMD straight from slices of the body, appends each to a segment file, and
inserts the whole batch's rows in one transaction. Per answer that is well under a millisecond
of GIL time, where a parse, a stdlib Base64 decode and an ORM commit per answer in a worker
thread each took the GIL from the event loop for ~3 ms. Images are never decoded to pixels here
(thumbnails are made later, when the console first shows them).

The queue holds answer bodies that would otherwise be freed, so its size is bounded (see
`GalleryRecorder`): the writer keeps up with the network on any ordinary disk, and when it
cannot, the gateway slows down to the disk's pace instead of growing without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread

from bananagate.protocol.scan import Bytes, InlineImage, inline_image_bytes, scan_answer
from bananagate.providers.base import Call
from bananagate.server.auth import Principal
from bananagate.settings import GALLERY_BACKLOG_BYTES
from bananagate.store import GalleryRepository, NewImage, Store

log = logging.getLogger("bananagate.console")

# Both spellings of the key start so: one search that stops at the first, where a miss for
# `"inlineData"` in a snake_case answer would walk all of its megabytes first.
_IMAGE_MARKER = b'"inline'
# How long `submit` waits for room in a full backlog before it gives the answer's images up as
# it would on a failed write (a disk this stuck is a failing disk; the gateway must go on).
STALL_SECONDS = 5.0
# Answers per transaction: enough to amortise the commit, small enough to keep `wait` prompt.
_BATCH_ANSWERS = 64
# A writer with nothing to do for this long ends; the next answer starts another.
_IDLE_SECONDS = 30.0
# Under sustained load the backlog fills and empties many times a second: that new answers wait
# for room is logged at most this often (with how many times it happened since), not each time.
HOLD_LOG_SECONDS = 60.0


def answer_parts(bodies: Sequence[Bytes]) -> tuple[list[tuple[str, bytes]], str, str | None]:
    """(images as (MIME type, bytes), text, finish reason) of a response or of its stream events.

    Thought parts (a thinking model's drafts) are left out: the gallery keeps what was delivered
    as the answer. Images whose data is not Base64 are left out too.
    """
    found, text, finish = _scan(bodies)
    images: list[tuple[str, bytes]] = []
    for body, image in found:
        with contextlib.suppress(ValueError):
            images.append((image.mime_type, inline_image_bytes(body, image)))
    return images, text, finish


def _scan(bodies: Sequence[Bytes]) -> tuple[list[tuple[Bytes, InlineImage]], str, str | None]:
    images: list[tuple[Bytes, InlineImage]] = []
    texts: list[str] = []
    finish: str | None = None
    for body in bodies:
        parts = scan_answer(body)
        if parts is None:
            continue
        images += ((body, image) for image in parts.images)
        texts += parts.texts
        finish = parts.finish_reason or finish
    return images, "".join(texts).strip(), finish


@dataclass(slots=True)
class _Answer:
    """A queued answer: its bodies and what the gallery rows need of its request."""

    request_id: str
    bodies: Sequence[Bytes]
    size: int
    key_id: int | None
    key_name: str
    model: str
    prompt: str
    params: dict[str, Any]
    cost_nanos: int
    latency_ms: int


@dataclass(slots=True)
class _Flush:
    """Queued by `drain`: resolved once everything queued before it is written."""

    done: asyncio.Future[list[int]]


@dataclass(slots=True)
class _Pending:
    """A request whose answer is queued or being written, and who waits for its ids."""

    answers: int = 0
    ids: list[int] = field(default_factory=list)
    waiters: list[asyncio.Future[list[int]]] = field(default_factory=list)


def _resolve(results: list[tuple[asyncio.Future[list[int]], list[int]]]) -> None:
    for future, ids in results:
        if not future.done():  # a waiter may have been cancelled
            future.set_result(list(ids))


class GalleryRecorder:
    """`ImageSink` for the pipeline. Answers in flight are tracked by request id, so the
    playground can wait for its own images, and shutdown can wait for all of them.

    The queue holds at most `max_backlog_bytes` of answer bodies (one answer alone may be
    bigger). When it is full, the pipeline's `await room(...)` holds that request (only it, not
    the event loop) until the writer has made room: backpressure, so every delivered image is
    still kept and memory stays bounded. If no room appears within `stall_seconds`, that
    answer's images are dropped and logged, as for any failed write, and so are those of every
    answer that does not fit until the writer finishes its batch: a stuck disk costs one stall,
    not one per answer. A caller that does not await `room` first gets the same wait inside
    `submit`, blocking.
    """

    def __init__(
        self,
        store: Callable[[], Store],
        *,
        max_backlog_bytes: int = GALLERY_BACKLOG_BYTES,
        stall_seconds: float = STALL_SECONDS,
    ) -> None:
        self._store = store
        self._max_backlog = max_backlog_bytes
        self._stall_seconds = stall_seconds
        self._lock = threading.Lock()
        self._has_work = threading.Condition(self._lock)
        self._has_room = threading.Condition(self._lock)
        self._queue: deque[_Answer | _Flush] = deque()
        self._backlog = 0  # body bytes of the answers queued or being written
        self._pending: dict[str, _Pending] = {}
        self._writer: threading.Thread | None = None
        self._held_back = False  # submit has waited for room since the queue last ran empty
        self._holds = 0  # such episodes since the last one logged
        self._hold_logged_at: float | None = None
        self._hold_logged = False  # this episode's start was logged: its end is too
        # The writer let a submit wait `stall_seconds` in vain: until it finishes a batch, answers
        # that do not fit are given up at once (counted in `_dropped`).
        self._stalled = False
        self._dropped = 0
        # Requests waiting in `room` (futures on their event loops), woken when room is made.
        self._room_waiters: list[asyncio.Future[list[int]]] = []

    @property
    def max_backlog_bytes(self) -> int:
        """How many bytes of answers may wait for the writer before new ones wait for room."""
        return self._max_backlog

    # --- the event loop's side ------------------------------------------------------------

    async def room(self, bodies: Sequence[Bytes]) -> None:
        """Return once `bodies` fit the backlog (or the writer is stalled: `submit` then gives
        them up at once), holding only the calling request, never the event loop."""
        if not any(_IMAGE_MARKER in body for body in bodies):
            return
        size = sum(len(body) for body in bodies)
        deadline: float | None = None
        while True:
            with self._lock:
                if self._stalled or not self._backlog or self._backlog + size <= self._max_backlog:
                    return
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self._stall_seconds
                    self._note_hold(now)
                elif now >= deadline:
                    self._stalled = True
                    return
                # Woken by the writer when it frees room (`_finish`), not by a timer: a request
                # held here costs the event loop nothing until then.
                freed: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
                self._room_waiters.append(freed)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(freed, deadline - now)

    def submit(
        self,
        call: Call,
        principal: Principal,
        bodies: Sequence[Bytes],
        cost_nanos: int | None,
        latency_ms: int,
    ) -> None:
        # A byte search (no parse) decides whether there is anything to keep at all; the key
        # precedes its Base64, so an image answer is recognised within its first bytes.
        if not any(_IMAGE_MARKER in body for body in bodies):
            return
        request = call.request
        answer = _Answer(
            request_id=call.request_id,
            bodies=bodies,
            size=sum(len(body) for body in bodies),
            key_id=principal.key_id,
            key_name=principal.key_name,
            model=call.model.id,
            prompt=request.prompt_text(),
            params={
                "model_id": call.model_id,
                "aspect_ratio": request.aspect_ratio,
                "image_size": request.image_size,
                "input_images": len(request.input_images()),
                "streamed": call.method == "streamGenerateContent",
                "channel": call.channel,
            },
            cost_nanos=cost_nanos or 0,
            latency_ms=latency_ms,
        )
        with self._lock:
            if not self._wait_for_room(answer.size):
                self._dropped += 1
                if self._dropped == 1:
                    log.error(
                        "gallery: the writer made no room for %.0f s (disk stuck?); images are not "
                        "kept until it moves again, starting with those of rid=%s",
                        self._stall_seconds,
                        answer.request_id,
                    )
                return
            if not self._start_writer():
                return
            self._queue.append(answer)
            self._backlog += answer.size
            self._pending.setdefault(answer.request_id, _Pending()).answers += 1
            self._has_work.notify()

    def _wait_for_room(self, size: int) -> bool:
        """With the lock held: True once `size` more bytes fit (an empty queue takes anything)."""
        if not self._backlog or self._backlog + size <= self._max_backlog:
            return True
        if self._stalled:
            return False  # one stall per stuck writer, not one per answer
        now = time.monotonic()
        self._note_hold(now)
        deadline = now + self._stall_seconds
        while self._backlog and self._backlog + size > self._max_backlog:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._stalled = True
                return False
            self._has_room.wait(remaining)
        return True

    def _note_hold(self, now: float) -> None:
        """With the lock held: new answers start to wait for room. Counted once per episode (until
        the queue runs empty), and logged unless one was within `HOLD_LOG_SECONDS`."""
        if self._held_back:
            return
        self._held_back = True
        self._holds += 1
        last = self._hold_logged_at
        if last is not None and now - last < HOLD_LOG_SECONDS:
            return
        since = f"; {self._holds} times in the last {now - last:.0f} s" if last is not None else ""
        log.warning(
            "gallery: the writer is behind (%d MB of answers wait to be written): new answers wait "
            "for room%s (logged at most every %.0f s)",
            self._backlog >> 20,
            since,
            HOLD_LOG_SECONDS,
        )
        self._hold_logged_at = now
        self._holds = 0
        self._hold_logged = True

    def _start_writer(self) -> bool:
        """With the lock held: make sure a writer thread runs; False if none can be started."""
        if self._writer is not None:
            return True
        writer = threading.Thread(target=self._run, name="bananagate-gallery", daemon=True)
        try:
            writer.start()
        except RuntimeError as exc:  # interpreter shutdown
            log.error("gallery: no writer thread (%s); images are not kept", exc)
            return False
        self._writer = writer
        return True

    async def wait(self, request_id: str) -> list[int]:
        """The gallery ids of a request's images, once they are written."""
        future: asyncio.Future[list[int]] | None = None
        with self._lock:
            pending = self._pending.get(request_id)
            if pending is not None:
                future = asyncio.get_running_loop().create_future()
                pending.waiters.append(future)
        if future is not None:
            return await future
        entries = await anyio.to_thread.run_sync(self._store().gallery.by_request, request_id)
        return [entry.id for entry in entries]

    async def drain(self) -> None:
        """Wait until every answer submitted so far is written (at shutdown)."""
        with self._lock:
            if self._writer is None:
                return  # a writer ends only with an empty queue
            flush = _Flush(asyncio.get_running_loop().create_future())
            self._queue.append(flush)
            self._has_work.notify()
        await flush.done

    # --- the writer thread ----------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._drain_queue()
        finally:
            with self._lock:
                if self._writer is threading.current_thread():  # ended by a bug, not idleness
                    log.error("gallery: the writer thread stopped; the next answer starts another")
                    self._writer = None

    def _drain_queue(self) -> None:
        while True:
            with self._lock:
                while not self._queue:
                    if not self._has_work.wait(_IDLE_SECONDS) and not self._queue:
                        self._writer = None
                        return
                batch: list[_Answer | _Flush] = []
                while self._queue and len(batch) < _BATCH_ANSWERS:
                    batch.append(self._queue.popleft())
                    if isinstance(batch[-1], _Flush):
                        break  # resolved after what came before it, not after what follows
            answers = [item for item in batch if isinstance(item, _Answer)]
            ids: list[list[int]] = [[] for _ in answers]
            try:
                if answers:
                    ids = self._write(answers)
            except Exception as exc:  # the answers were delivered: nothing here may matter to them
                log.error("gallery: could not keep the images of %d answer(s): %s", len(answers), exc)
            finally:
                self._finish(batch, answers, ids)

    def _write(self, answers: list[_Answer]) -> list[list[int]]:
        """Files of every answer, then all their rows in one transaction; each answer's ids."""
        gallery = self._store().gallery
        when = datetime.now(UTC)
        groups: list[list[dict[str, Any]]] = []
        for answer in answers:
            try:
                groups.append(self._files(gallery, answer, when))
            except Exception as exc:
                log.error("gallery: could not keep the images of rid=%s: %s", answer.request_id, exc)
                groups.append([])
        if not any(groups):
            return [[] for _ in answers]
        results = gallery.insert(groups)
        out: list[list[int]] = []
        added = 0
        for answer, group, result in zip(answers, groups, results, strict=True):
            if isinstance(result, Exception):
                log.error("gallery: could not keep the images of rid=%s: %s", answer.request_id, result)
                out.append([])
            else:
                out.append(result)
                added += sum(row["size_bytes"] for row in group)
        try:
            gallery.note_added(added)  # eviction, throttled by the repository
        except Exception as exc:
            log.error("gallery: eviction failed: %s", exc)
        return out

    @staticmethod
    def _files(gallery: GalleryRepository, answer: _Answer, when: datetime) -> list[dict[str, Any]]:
        """Decode and write one answer's images; their rows' values."""
        images, text, finish = answer_parts(answer.bodies)
        params = {**answer.params, "finish_reason": finish, "images_in_request": len(images)}
        rows: list[dict[str, Any]] = []
        try:
            for index, (mime, data) in enumerate(images):
                image = NewImage(
                    data=data,
                    mime_type=mime,
                    request_id=answer.request_id,
                    image_index=index,
                    key_id=answer.key_id,
                    key_name=answer.key_name,
                    model=answer.model,
                    prompt=answer.prompt,
                    text=text or None,
                    params=params,
                    cost_nanos=answer.cost_nanos,
                    latency_ms=answer.latency_ms,
                )
                row = gallery.write(image, when)
                if row is not None:
                    rows.append(row)
        except BaseException:
            gallery.discard(rows)  # no row will name them
            raise
        return rows

    def _finish(self, batch: list[_Answer | _Flush], answers: list[_Answer], ids: list[list[int]]) -> None:
        """Release the batch's backlog and hand waiters their ids (on their own loops)."""
        results: list[tuple[asyncio.Future[list[int]], list[int]]] = []
        with self._lock:
            for answer, answer_ids in zip(answers, ids, strict=True):
                self._backlog -= answer.size
                pending = self._pending.get(answer.request_id)
                if pending is None:
                    continue
                pending.ids += answer_ids
                pending.answers -= 1
                if pending.answers <= 0:
                    del self._pending[answer.request_id]
                    results += ((waiter, pending.ids) for waiter in pending.waiters)
            results += ((item.done, []) for item in batch if isinstance(item, _Flush))
            if self._stalled:
                self._stalled = False
                log.error("gallery: the writer moves again; %d answer(s) had images not kept", self._dropped)
                self._dropped = 0
            if not self._backlog and self._held_back:
                self._held_back = False
                if self._hold_logged:
                    self._hold_logged = False
                    log.warning("gallery: the writer has caught up")
            self._has_room.notify_all()
            results += ((waiter, []) for waiter in self._room_waiters)
            self._room_waiters = []
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[list[int]], list[int]]]] = {}
        for future, future_ids in results:
            by_loop.setdefault(future.get_loop(), []).append((future, future_ids))
        for loop, pairs in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_resolve, pairs)
