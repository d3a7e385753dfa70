"""`bananagate batch --async`: the JSONL items as server-side batches, collected when done.

Items are grouped by model (a batch runs on one model) and queued with `:batchGenerateContent`;
each item's id travels as its `metadata.key`. The names of batches queued but not yet collected
are kept in `DIR/async-batches.json`, so an interrupted run (or `--no-wait`) picks them up
again next time instead of queueing (and paying for) the same items twice. Collected items go
to `DIR/manifest.jsonl` exactly as synchronous runs record them, so both kinds of run resume
each other.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bananagate.client import Client
from bananagate.client.base import ComposeMethod
from bananagate.client.batch import (
    MANIFEST,
    BatchItem,
    BatchSummary,
    _usage,
    is_done,
    load_manifest,
    slug,
    write_manifest,
)
from bananagate.client.errors import APIError, BananagateError, NoImageError
from bananagate.client.jobs import Batch
from bananagate.client.parse import require_image
from bananagate.client.request import HttpRequest

STATE_FILE = "async-batches.json"
Progress = Callable[[int, int], None]  # (items collected, items in flight)


def _load_state(out_dir: Path) -> list[dict[str, Any]]:
    path = out_dir / STATE_FILE
    if not path.exists():
        return []
    data = orjson.loads(path.read_bytes())
    return [entry for entry in data if isinstance(entry, dict) and isinstance(entry.get("name"), str)]


def _save_state(out_dir: Path, entries: list[dict[str, Any]]) -> None:
    path = out_dir / STATE_FILE
    if not entries:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(orjson.dumps(entries, option=orjson.OPT_INDENT_2))
    tmp.replace(path)


def item_request(client: Client, item: BatchItem, base_dir: Path, model: str | None) -> HttpRequest:
    """The generateContent request `batch` would send for `item`."""
    options: dict[str, Any] = {
        "model": item.model or model,
        "aspect_ratio": item.aspect_ratio,
        "image_size": item.image_size,
    }
    if item.images:
        method: ComposeMethod = "collage" if item.collage else "inline"
        paths = [base_dir / p for p in item.images]
        return client._prepare_compose(
            item.prompt, paths, method=method, labels=None, columns=None, **options
        )
    return client._prepare_generate(item.prompt, **options)


def batch_records(
    batch: Batch, out_dir: Path, inputs: dict[str, BatchItem], seconds: float
) -> list[dict[str, Any]]:
    """Save each item's images; one manifest record per item, as synchronous runs write them."""
    records: list[dict[str, Any]] = []
    for entry in batch.items:
        item_id = slug(entry.key or str(entry.index), 64) if entry.key not in inputs else str(entry.key)
        source = inputs.get(item_id)
        record: dict[str, Any] = {
            "id": item_id,
            "line": source.line if source else None,
            "status": "error",
            "outputs": [],
            "seconds": round(seconds, 3),
            "input": source.input if source else None,
            "batch": batch.name,
        }
        try:
            if entry.error is not None:
                raise entry.error
            assert entry.result is not None
            result = require_image(entry.result)
            saved = result.save(out_dir / item_id)
            _usage(record, result)
            record.update(status="ok", outputs=[p.name for p in saved])
        except BananagateError as exc:
            record.update(error=str(exc), error_type=type(exc).__name__)
            if isinstance(exc, APIError):
                record["http_status"] = exc.status
            if isinstance(exc, NoImageError):
                _usage(record, exc.result)
                record["block_reason"] = exc.block_reason
        records.append(record)
    return records


def _record_all(out_dir: Path, records: list[dict[str, Any]]) -> None:
    latest = load_manifest(out_dir / MANIFEST)
    for record in records:
        latest[record["id"]] = record
    write_manifest(out_dir / MANIFEST, list(latest.values()))


def collect(
    client: Client,
    name: str,
    out_dir: Path,
    inputs: dict[str, BatchItem] | None = None,
    poll: float = 2.0,
    timeout: float | None = None,
) -> list[dict[str, Any]]:
    """Wait for one batch, save its images and record its items in the manifest."""
    started = time.monotonic()
    batch = client.wait_batch(name, poll_interval=poll, timeout=timeout)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = batch_records(batch, out_dir, inputs or {}, time.monotonic() - started)
    _record_all(out_dir, records)
    return records


def run_async(
    client: Client,
    items: list[BatchItem],
    base_dir: Path,
    out_dir: Path,
    *,
    model: str | None,
    wait: bool = True,
    on_submit: Callable[[str, int], None] | None = None,
    on_collect: Callable[[list[dict[str, Any]]], None] | None = None,
    poll: float = 2.0,
) -> tuple[BatchSummary, list[str]]:
    """Queue the items not done yet (collecting earlier batches first); with `wait`, collect.

    Returns the summary of this run's items and the names of batches left in flight.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    inputs = {item.id: item for item in items}
    summary = BatchSummary()
    pending = _load_state(out_dir)
    queued_ids = {i for entry in pending for i in entry.get("ids", [])}
    previous = load_manifest(out_dir / MANIFEST)
    todo = [i for i in items if not is_done(previous.get(i.id), out_dir) and i.id not in queued_ids]
    summary.skipped = len(items) - len(todo) - len(queued_ids & set(inputs))
    by_model: dict[str, list[BatchItem]] = {}
    for item in todo:
        by_model.setdefault(item.model or model or client.config.default_model, []).append(item)
    for group in by_model.values():
        requests = [item_request(client, item, base_dir, model) for item in group]
        batch = client.submit_batch(
            requests, keys=[item.id for item in group], display_name=f"bananagate {out_dir.name}"
        )
        pending.append({"name": batch.name, "ids": [item.id for item in group]})
        _save_state(out_dir, pending)  # before waiting: an interrupted run finds it next time
        if on_submit is not None:
            on_submit(batch.name, len(group))
    if not wait:
        return summary, [entry["name"] for entry in pending]
    for entry in list(pending):
        records = collect(client, entry["name"], out_dir, inputs, poll)
        pending.remove(entry)
        _save_state(out_dir, pending)
        mine = [r for r in records if r["id"] in inputs]
        summary.done += sum(1 for r in mine if r["status"] == "ok")
        summary.failed += sum(1 for r in mine if r["status"] != "ok")
        if on_collect is not None:
            on_collect(records)
    latest = load_manifest(out_dir / MANIFEST)
    summary.records = [latest[i.id] for i in items if i.id in latest]
    return summary, []
