"""`bananagate batch`: manifest, per-item failures, exit codes and resume, against the emulator."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from bananagate.cli import cli
from bananagate.client import AsyncClient
from bananagate.client.batch import BatchFileError, parse_jsonl, run_batch
from tests.client.conftest import FAST_MODEL, png_bytes
from tests.client.test_request import OK_BODY
from tests.conftest import Gateway

# Faults that hit the first identical request only: the first run fails these, a rerun passes.
FAULTS = {
    3: "status=500; times=1",
    7: "status=503; times=1",
    11: "status=429; retry-delay=1s; times=1",
    15: "finish=IMAGE_SAFETY; times=1",
    19: "finish=NO_IMAGE; times=1",
    23: "status=500; times=1",
    27: "block=SAFETY; times=1",
}


@pytest.fixture
def run(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    monkeypatch.setenv("BANANAGATE_BASE_URL", gateway.url)
    monkeypatch.setenv("BANANAGATE_API_KEY", gateway.key)
    return lambda *args: CliRunner().invoke(cli, ["batch", *args], catch_exceptions=False)


def manifest(out: Path) -> dict[str, dict[str, Any]]:
    lines = (out / "manifest.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    by_id = {r["id"]: r for r in records}
    assert len(by_id) == len(records)  # one line per item once a run ends
    return by_id


def write_jobs(tmp_path: Path) -> Path:
    tag = uuid.uuid4().hex[:8]
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "ref.png").write_bytes(png_bytes())
    lines: list[Any] = []
    for i in range(30):
        prompt = f"Item {i} a small still life #{tag}"
        if i in FAULTS:
            prompt += f" [emulate: {FAULTS[i]}]"
        if i % 5 == 0:
            lines.append(prompt)  # a bare string line is a prompt
            continue
        item: dict[str, Any] = {"prompt": prompt, "id": f"item-{i:02d}", "image_size": "512"}
        if i % 5 == 2:
            item["aspect_ratio"] = "16:9"
        if i == 4:
            item["images"] = ["inputs/ref.png"]
        if i == 9:
            item |= {"images": ["inputs/ref.png"] * 4, "collage": True, "model": "gemini-2.5-flash-image"}
            del item["image_size"]
        lines.append(item)
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return jobs


def test_batch_of_30_with_faults_then_resume(run: Callable[..., Result], tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path)
    out = tmp_path / "out"
    args = [str(jobs), "--out", str(out), "--concurrency", "8", "--retries", "0", "-m", FAST_MODEL]

    first = run(*args)
    assert first.exit_code == 1, first.output
    assert "30 items: 23 done, 7 failed, 0 already done" in first.stderr
    records = manifest(out)
    assert len(records) == 30
    by_line = {r["line"]: r for r in records.values()}
    failed_lines = {line - 1 for line, r in by_line.items() if r["status"] == "error"}
    assert failed_lines == set(FAULTS)
    assert by_line[4]["http_status"] == 500 and by_line[4]["error_type"] == "ServerError"
    assert by_line[12]["error_type"] == "RateLimitError" and by_line[12]["attempts"] == 1  # --retries 0
    assert (
        by_line[16]["error_type"] == "SafetyBlockedError" and by_line[16]["finish_reason"] == "IMAGE_SAFETY"
    )
    assert by_line[20]["error_type"] == "NoImageError" and by_line[20]["text"]
    assert by_line[28]["block_reason"] == "SAFETY"
    for record in records.values():
        assert record["input"]["prompt"].startswith("Item ")
        assert record["seconds"] >= 0
        if record["status"] == "ok":
            (name,) = record["outputs"]
            assert record["tokens"]["total"] > 0
            assert record["cost"] is None or record["cost"] > 0  # reported once the gateway prices calls
            with Image.open(out / name) as img:
                assert name.endswith({"PNG": ".png", "JPEG": ".jpg"}[img.format])
        else:
            assert record["outputs"] == [] and record["error"]
    # Per-item settings were honoured.
    with Image.open(out / by_line[3]["outputs"][0]) as img:  # item 2: 16:9 at 512
        assert img.size == (688, 384)
    assert by_line[10]["outputs"] == ["item-09.png"]  # the collage item ran on 2.5 Flash: PNG

    second = run(*args)
    assert second.exit_code == 0, second.output
    assert "30 items: 7 done, 0 failed, 23 already done" in second.stderr
    again = manifest(out)
    assert all(r["status"] == "ok" for r in again.values())
    for item_id, record in records.items():
        if record["status"] == "ok":
            assert again[item_id] == record  # done items were not sent again
        else:
            assert again[item_id]["request_id"] != record.get("request_id")

    # A file that went missing is redone; everything else is skipped.
    missing = out / again["item-01"]["outputs"][0]
    missing.unlink()
    third = run(*args)
    assert third.exit_code == 0 and "1 done, 0 failed, 29 already done" in third.stderr
    assert missing.exists()


def test_item_ids_and_input_validation(tmp_path: Path) -> None:
    items = parse_jsonl(
        '"A cat [emulate: text-only]"\n\n# comment\n"A cat [emulate: text-only]"\n{"prompt": "x", "id": "a/b c"}\n'
    )
    assert items[0].id.startswith("a-cat-") and items[1].id == items[0].id + "-2"
    assert items[2].id == "a_b_c" and [i.line for i in items] == [1, 4, 5]
    for bad, message in [
        ("{not json", "line 1: not JSON"),
        ('{"id": 1}', "'prompt'"),
        ('{"prompt": "x", "colour": "red"}', "unknown keys colour"),
        ('{"prompt": "x", "images": "a.png"}', "list of paths"),
        ('{"prompt": "a", "id": 1}\n{"prompt": "b", "id": 1}', "duplicate id"),
        ("", "no items"),
    ]:
        with pytest.raises(BatchFileError, match=message):
            parse_jsonl(bad)


def test_usage_errors_exit_2(run: Callable[..., Result], tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('"ok"\n{oops\n')
    result = run(str(bad), "--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and "line 2" in result.stderr
    assert not (tmp_path / "o").exists()  # nothing ran
    assert run(str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o")).exit_code == 2
    assert run(str(bad)).exit_code == 2  # --out is required


def test_missing_image_is_an_item_failure(run: Callable[..., Result], tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"prompt": "edit it", "id": "e", "images": ["nope.png"]}) + "\n")
    result = run(str(jobs), "--out", str(tmp_path / "out"))
    assert result.exit_code == 1
    record = manifest(tmp_path / "out")["e"]
    assert (
        record["status"] == "error"
        and record["error_type"] == "InvalidInputError"
        and "nope.png" in record["error"]
    )


async def test_cost_reported_by_the_server_is_recorded(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json=OK_BODY, headers={"x-bananagate-cost-usd": "0.039", "x-request-id": "r1"}
        )

    items = parse_jsonl('{"prompt": "a", "id": "a"}\n')
    async with AsyncClient("k", base_url="http://gw", transport=httpx.MockTransport(handler)) as client:
        summary = await run_batch(client, items, tmp_path, base_dir=tmp_path)
    assert summary.exit_code == 0
    (record,) = summary.records
    assert (record["cost"], record["request_id"], record["outputs"]) == (0.039, "r1", ["a.png"])
