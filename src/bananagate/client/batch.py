"""Batch jobs: many prompts from a JSONL file, run concurrently, recorded in `manifest.jsonl`.

Each input line is a JSON string (a prompt) or an object
`{"prompt", "id"?, "model"?, "aspect_ratio"?, "image_size"?, "images"?: [paths], "collage"?}`;
image paths are relative to the JSONL file. An item's id is its `id`, else a slug of the prompt
plus a hash of the whole line, so a rerun of the same file finds the same ids and skips those the
manifest records as done (with their files still present). One item failing never stops the run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bananagate.client.aio import AsyncClient
from bananagate.client.base import ComposeMethod
from bananagate.client.errors import APIError, NoImageError, TransportError
from bananagate.client.result import GenerateResult

MANIFEST = "manifest.jsonl"
_KNOWN_KEYS = frozenset({"prompt", "id", "model", "aspect_ratio", "image_size", "images", "collage"})
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class BatchFileError(ValueError):
    """The JSONL input is malformed (a usage error: nothing has run)."""


@dataclass(frozen=True, slots=True)
class BatchItem:
    id: str
    line: int
    prompt: str
    input: dict[str, Any]
    model: str | None = None
    aspect_ratio: str | None = None
    image_size: str | None = None
    images: tuple[str, ...] = ()
    collage: bool = False


def slug(text: str, limit: int = 32) -> str:
    """A file-name-safe, lower-case fragment of `text` (drops `[emulate: ...]` blocks)."""
    text = re.sub(r"\[[^\]]*\]", " ", text)
    return _UNSAFE.sub("-", text.lower()).strip("-.")[:limit].rstrip("-.") or "item"


def _item(line_no: int, data: Any) -> BatchItem:
    where = f"line {line_no}"
    if isinstance(data, str):
        data = {"prompt": data}
    if not isinstance(data, dict):
        raise BatchFileError(f"{where}: expected a JSON object or string")
    unknown = set(data) - _KNOWN_KEYS
    if unknown:
        raise BatchFileError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
    prompt = data.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise BatchFileError(f"{where}: 'prompt' must be a non-empty string")
    images = data.get("images") or []
    if not isinstance(images, list) or not all(isinstance(p, str) for p in images):
        raise BatchFileError(f"{where}: 'images' must be a list of paths")
    for key in ("model", "aspect_ratio", "image_size"):
        if data.get(key) is not None and not isinstance(data[key], str | int):
            raise BatchFileError(f"{where}: {key!r} must be a string")
    if "id" in data and data["id"] is not None:
        item_id = _UNSAFE.sub("_", str(data["id"])).strip("._") or "item"
    else:
        digest = hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()[:8]
        item_id = f"{slug(prompt)}-{digest}"
    return BatchItem(
        id=item_id,
        line=line_no,
        prompt=prompt,
        input=data,
        model=data.get("model"),
        aspect_ratio=data.get("aspect_ratio"),
        image_size=None if data.get("image_size") is None else str(data["image_size"]),
        images=tuple(images),
        collage=bool(data.get("collage", False)),
    )


def parse_jsonl(text: str) -> list[BatchItem]:
    """Every item of a JSONL file; blank lines and `#` comments are skipped. Ids are unique."""
    items: list[BatchItem] = []
    counts: dict[str, int] = {}
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise BatchFileError(f"line {line_no}: not JSON ({exc})") from None
        item = _item(line_no, data)
        seen = counts.get(item.id, 0)
        counts[item.id] = seen + 1
        if seen:
            if "id" in item.input:
                raise BatchFileError(f"line {line_no}: duplicate id {item.id!r}")
            # The same line twice is two requests (real models differ run to run).
            item = dataclasses.replace(item, id=f"{item.id}-{seen + 1}")
        items.append(item)
    if not items:
        raise BatchFileError("no items in the input file")
    return items


# --- the manifest --------------------------------------------------------------------------------


def load_manifest(path: Path) -> dict[str, dict[str, Any]]:
    """Latest record per id (the file is append-only while a run goes; later lines win)."""
    records: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return records
    for line in path.read_text().splitlines():
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # a line cut short by a crash; that item simply runs again
        if isinstance(record, dict) and isinstance(record.get("id"), str):
            records[record["id"]] = record
    return records


def is_done(record: dict[str, Any] | None, out_dir: Path) -> bool:
    if not record or record.get("status") != "ok":
        return False
    outputs = record.get("outputs") or []
    return bool(outputs) and all((out_dir / name).exists() for name in outputs)


def write_manifest(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Replace the manifest atomically (so a crash never leaves half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    os.replace(tmp, path)


def _record(item: BatchItem, started: float) -> dict[str, Any]:
    # Keys in reading order: what happened first, the details after.
    return {
        "id": item.id,
        "line": item.line,
        "status": None,
        "outputs": [],
        "seconds": 0.0,
        "input": item.input,
        "_started": started,
    }


def _usage(record: dict[str, Any], result: GenerateResult) -> None:
    usage = result.usage
    record["tokens"] = {
        "prompt": usage.prompt_tokens,
        "candidates": usage.candidates_tokens,
        "thoughts": usage.thoughts_tokens,
        "total": usage.total_tokens,
    }
    record["cost"] = result.cost
    record["finish_reason"] = result.finish_reason
    record["request_id"] = result.request_id
    record["attempts"] = result.attempts


# --- running -----------------------------------------------------------------------------------


@dataclass(slots=True)
class BatchSummary:
    done: int = 0
    failed: int = 0
    skipped: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


async def run_item(client: AsyncClient, item: BatchItem, out_dir: Path, base_dir: Path) -> dict[str, Any]:
    """Run one item; every failure becomes a record with status "error"."""
    record = _record(item, time.monotonic())
    try:
        options: dict[str, Any] = {
            "model": item.model,
            "aspect_ratio": item.aspect_ratio,
            "image_size": item.image_size,
        }
        if item.images:
            paths = [base_dir / p for p in item.images]
            method: ComposeMethod = "collage" if item.collage else "inline"
            result = await client.compose(item.prompt, paths, method=method, **options)
        else:
            result = await client.generate(item.prompt, **options)
        saved = result.save(out_dir / item.id)
        _usage(record, result)
        record.update(status="ok", outputs=[p.name for p in saved])
    except Exception as exc:  # one bad item must not stop the others
        record.update(status="error", outputs=[], error=str(exc), error_type=type(exc).__name__)
        if isinstance(exc, APIError):
            record["http_status"] = exc.status
            record["request_id"] = exc.request_id
        if isinstance(exc, APIError | TransportError):
            record["attempts"] = exc.attempts
        if isinstance(exc, NoImageError):
            _usage(record, exc.result)
            record["block_reason"] = exc.block_reason
            record["text"] = exc.text
    record["seconds"] = round(time.monotonic() - record.pop("_started"), 3)
    return record


async def run_batch(
    client: AsyncClient,
    items: list[BatchItem],
    out_dir: Path,
    *,
    base_dir: Path,
    concurrency: int = 4,
    on_item: Callable[[BatchItem, dict[str, Any] | None], None] | None = None,
) -> BatchSummary:
    """Run the items not already done; `on_item(item, record)` after each (record None = skipped).

    Records are appended to the manifest as they finish (a crash loses nothing), then the
    manifest is rewritten with one line per item in input order.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / MANIFEST
    previous = load_manifest(manifest)
    summary = BatchSummary()
    todo: list[BatchItem] = []
    for item in items:
        if is_done(previous.get(item.id), out_dir):
            summary.skipped += 1
            if on_item:
                on_item(item, None)
        else:
            todo.append(item)

    gate = asyncio.Semaphore(max(1, concurrency))
    latest = dict(previous)

    async def one(item: BatchItem) -> None:
        async with gate:
            record = await run_item(client, item, out_dir, base_dir)
        latest[item.id] = record
        with manifest.open("ab") as fh:
            fh.write(orjson.dumps(record) + b"\n")
        if record["status"] == "ok":
            summary.done += 1
        else:
            summary.failed += 1
        if on_item:
            on_item(item, record)

    await asyncio.gather(*(one(item) for item in todo))
    ids = [item.id for item in items]
    ours = set(ids)
    summary.records = [latest[i] for i in ids if i in latest]
    # Items of other input files sharing this directory keep their records, after ours.
    write_manifest(manifest, summary.records + [r for k, r in latest.items() if k not in ours])
    return summary
