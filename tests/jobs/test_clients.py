"""The SDK (`submit`, `wait`, batches), the CLI (`submit`, `wait`, `batch --async`) and the
google-genai SDK's `client.batches`, against a real gateway process."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result

from bananagate.cli import cli
from bananagate.client import AsyncClient, Client, InvalidRequestError
from bananagate.client.jobs import Job
from tests.conftest import Gateway
from tests.jobs.conftest import FLASH


def test_sdk_submit_and_wait(gateway: Gateway, tmp_path: Path) -> None:
    with Client(gateway.key, base_url=gateway.url) as client:
        job = client.submit("A lighthouse at dusk", aspect_ratio="16:9")
        assert isinstance(job, Job) and job.name.startswith("jobs/") and job.state == "PENDING"
        result = client.wait(job, timeout=30, poll_interval=0.2)
        assert result.image is not None and result.image.size == (1344, 768)
        assert result.cost == pytest.approx(0.039)
        edit = client.submit("Add a moon", [result.image.data])
        assert client.wait(edit, timeout=30, poll_interval=0.2).image is not None
        failing = client.submit("x", headers={"x-bananagate-emulate": "status=400"})
        with pytest.raises(InvalidRequestError, match="failed"):
            client.wait(failing.name, timeout=30, poll_interval=0.2)
        assert client.get_job(job.name).state == "SUCCEEDED"


def test_async_sdk_batch_in_order(gateway: Gateway) -> None:
    async def run() -> None:
        async with AsyncClient(gateway.key, base_url=gateway.url) as client:
            requests = [
                client.build_request([{"role": "user", "parts": [{"text": f"Tile {i}"}]}], aspect_ratio="1:1")
                for i in range(3)
            ]
            batch = await client.submit_batch(requests, keys=["a", "b", "c"], display_name="tiles")
            assert batch.name.startswith("batches/") and not batch.done
            done = await client.wait_batch(batch, timeout=30, poll_interval=0.2)
            assert done.state == "BATCH_STATE_SUCCEEDED" and done.stats["successfulRequestCount"] == 3
            assert [item.key for item in done.items] == ["a", "b", "c"]
            assert all(item.result is not None and item.result.image is not None for item in done.items)

    asyncio.run(run())


def test_google_genai_batches(gateway: Gateway) -> None:
    from google import genai

    client = genai.Client(
        api_key=gateway.key, http_options={"base_url": gateway.url, "api_version": "v1beta"}
    )
    src = [
        {"contents": [{"role": "user", "parts": [{"text": f"Planet {i}"}]}], "metadata": {"key": f"p{i}"}}
        for i in range(2)
    ]
    job = client.batches.create(model=FLASH, src=src, config={"display_name": "planets"})
    assert job.name and job.name.startswith("batches/") and job.display_name == "planets"
    from tests.jobs.conftest import wait_until

    done = wait_until(lambda: (j := client.batches.get(name=job.name)).done and j, timeout=30, interval=0.2)
    assert done.state.name == "JOB_STATE_SUCCEEDED"
    responses = done.dest.inlined_responses
    assert [r.metadata for r in responses] == [{"key": "p0"}, {"key": "p1"}]
    assert all(r.response.parts[-1].inline_data.data for r in responses)
    assert job.name in [b.name for b in client.batches.list()]


def _run(gateway: Gateway, *args: str) -> Result:
    env = {"BANANAGATE_BASE_URL": gateway.url, "BANANAGATE_API_KEY": gateway.key}
    return CliRunner(env=env).invoke(cli, list(args), catch_exceptions=False)


def test_cli_submit_wait_and_async_batch(gateway: Gateway, tmp_path: Path) -> None:
    waited = _run(gateway, "submit", "A red bicycle", "--wait", "-o", str(tmp_path / "bike"))
    assert waited.exit_code == 0, waited.output
    assert (tmp_path / "bike.png").is_file()
    submitted = _run(gateway, "submit", "A blue bicycle")
    name = submitted.output.strip().splitlines()[0]
    assert name.startswith("jobs/")
    collected = _run(gateway, "wait", name, "-o", str(tmp_path / "blue"), "--poll", "0.2")
    assert collected.exit_code == 0, collected.output and (tmp_path / "blue.png").is_file()

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('"A lighthouse"\n{"id": "cat", "prompt": "A cat", "aspect_ratio": "16:9"}\n')
    out = tmp_path / "results"
    queued = _run(gateway, "batch", str(prompts), "--out", str(out), "--async", "--no-wait")
    assert queued.exit_code == 0, queued.output
    assert (out / "async-batches.json").is_file()  # in flight, remembered for the next run
    finished = _run(gateway, "batch", str(prompts), "--out", str(out), "--async")
    assert finished.exit_code == 0, finished.output
    assert not (out / "async-batches.json").exists()
    records = [orjson.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert {r["id"] for r in records} >= {"cat"} and all(r["status"] == "ok" for r in records)
    assert (out / "cat.png").is_file() and len(records) == 2
    again = _run(gateway, "batch", str(prompts), "--out", str(out), "--async")
    assert "2 already done" in again.output
