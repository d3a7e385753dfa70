"""The pipeline's image sink: keeps every delivered image in the gallery.

`submit` runs on the event loop and only schedules work: parsing the answer, Base64-decoding
its image parts and writing files happen in a worker thread, after the client has its answer,
so a gateway with a gallery answers as fast as one without. Images are never decoded to pixels
here (thumbnails are made later, when the console first shows them).
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import anyio.to_thread
import orjson

from bananagate.protocol import base64codec
from bananagate.providers.base import Call
from bananagate.server.auth import Principal
from bananagate.store import NewImage, Store

log = logging.getLogger("bananagate.console")

_IMAGE_MARKERS = (b'"inlineData"', b'"inline_data"')


def _blob(part: dict[str, Any]) -> dict[str, Any] | None:
    blob = part.get("inlineData") or part.get("inline_data")
    return blob if isinstance(blob, dict) else None


def answer_parts(bodies: list[bytes]) -> tuple[list[tuple[str, bytes]], str, str | None]:
    """(images as (MIME type, bytes), text, finish reason) of a response or of its stream events.

    Thought parts (a thinking model's drafts) are left out: the gallery keeps what was delivered
    as the answer.
    """
    images: list[tuple[str, bytes]] = []
    texts: list[str] = []
    finish: str | None = None
    for body in bodies:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(data, dict):
            continue
        for candidate in data.get("candidates") or []:
            if not isinstance(candidate, dict):
                continue
            finish = candidate.get("finishReason") or candidate.get("finish_reason") or finish
            content = candidate.get("content")
            parts = content.get("parts") if isinstance(content, dict) else None
            for part in parts if isinstance(parts, list) else []:
                if not isinstance(part, dict) or part.get("thought"):
                    continue
                blob = _blob(part)
                if blob is not None:
                    mime = str(blob.get("mimeType") or blob.get("mime_type") or "image/png")
                    raw = blob.get("data")
                    if isinstance(raw, str):
                        with contextlib.suppress(binascii.Error, ValueError):
                            images.append((mime, base64codec.decode(raw)))
                elif isinstance(part.get("text"), str):
                    texts.append(part["text"])
            break  # one candidate: image models answer with exactly one
    return images, "".join(texts).strip(), finish


class GalleryRecorder:
    """`ImageSink` for the pipeline. Work in flight is tracked by request id, so the playground
    can wait for its own images, and shutdown can wait for all of them."""

    def __init__(self, store: Callable[[], Store]) -> None:
        self._store = store
        self._tasks: dict[str, asyncio.Task[list[int]]] = {}

    def submit(
        self, call: Call, principal: Principal, bodies: list[bytes], cost_nanos: int | None, latency_ms: int
    ) -> None:
        # A byte search (no parse) decides whether there is anything to keep at all.
        if not any(marker in body for body in bodies for marker in _IMAGE_MARKERS):
            return
        try:
            task = asyncio.get_running_loop().create_task(
                self._record(call, principal, bodies, cost_nanos or 0, latency_ms)
            )
        except RuntimeError:  # no loop (a synchronous embedding): nothing is kept
            return
        rid = call.request_id
        self._tasks[rid] = task

        def forget(done: asyncio.Task[list[int]]) -> None:
            if self._tasks.get(rid) is done:
                del self._tasks[rid]

        task.add_done_callback(forget)

    async def _record(
        self, call: Call, principal: Principal, bodies: list[bytes], cost: int, latency_ms: int
    ) -> list[int]:
        try:
            return await anyio.to_thread.run_sync(self._write, call, principal, bodies, cost, latency_ms)
        except Exception as exc:  # the answer was delivered; a full disk must not matter to it
            log.error("gallery: could not keep the images of rid=%s: %s", call.request_id, exc)
            return []

    def _write(
        self, call: Call, principal: Principal, bodies: list[bytes], cost: int, latency_ms: int
    ) -> list[int]:
        images, text, finish = answer_parts(bodies)
        if not images:
            return []
        request = call.request
        params = {
            "model_id": call.model_id,
            "aspect_ratio": request.aspect_ratio,
            "image_size": request.image_size,
            "input_images": len(request.input_images()),
            "streamed": call.method == "streamGenerateContent",
            "channel": call.channel,
            "finish_reason": finish,
            "images_in_request": len(images),
        }
        new = [
            NewImage(
                data=data,
                mime_type=mime,
                request_id=call.request_id,
                image_index=index,
                key_id=principal.key_id,
                key_name=principal.key_name,
                model=call.model.id,
                prompt=request.prompt_text(),
                text=text or None,
                params=params,
                cost_nanos=cost,
                latency_ms=latency_ms,
            )
            for index, (mime, data) in enumerate(images)
        ]
        return self._store().gallery.add(new)

    async def wait(self, request_id: str) -> list[int]:
        """The gallery ids of a request's images, once they are written."""
        task = self._tasks.get(request_id)
        if task is not None:
            return await asyncio.shield(task)
        entries = await anyio.to_thread.run_sync(self._store().gallery.by_request, request_id)
        return [entry.id for entry in entries]

    async def drain(self) -> None:
        """Wait for every write in flight (at shutdown)."""
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
