"""CI smoke run of the benchmark harness: `python -m bench --quick` runs end to end and writes a
results file of the expected shape. Nothing here asserts a timing; nginx and wrk are used when
installed and skipped (with a note) when not."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

LOAD_KEYS = {"generator", "requests", "errors", "duration_s", "bytes_read", "latency_ms", "throughput_rps"}


def test_quick_run_writes_results(tmp_path: Path) -> None:
    results_dir = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--results-dir", str(results_dir), "--markdown"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    files = list(results_dir.glob("*.json"))
    assert len(files) == 1, files
    results = json.loads(files[0].read_text())

    for key in ("schema", "started_at", "finished_at", "machine", "git", "loadgen", "options", "workloads",
                "targets", "measurements", "skipped", "profile", "notes"):  # fmt: skip
        assert key in results, key
    assert results["quick"] is True
    assert results["loadgen"] in ("wrk", "python")
    assert set(results["workloads"]) == {"t2i", "i2i", "multi", "stream"}

    targets = results["targets"]
    assert targets["direct"]["started"] is True
    assert targets["bananagate"]["started"] is True, targets["bananagate"]
    assert targets["bananagate"]["mode"] in ("channel", "emulator")
    if not targets["nginx"]["started"]:
        assert targets["nginx"]["reason"]  # skipped, and says why

    measured = {(m["target"], m["workload"]) for m in results["measurements"] if "load" in m}
    for workload in ("t2i", "i2i", "multi", "stream"):
        assert ("direct", workload) in measured
        assert ("bananagate", workload) in measured, results["skipped"]
    for m in results["measurements"]:
        assert "error" not in m, m
        assert set(m["load"]) >= LOAD_KEYS
        assert {"p50", "p99"} <= set(m["load"]["latency_ms"])
        assert m["load"]["requests"] > 0
        assert "peak_rss_bytes" in m
        # Every process of the target, over the measured load: something, and not absurd.
        assert m["cpu_ms_per_request"] is None or 0 < m["cpu_ms_per_request"] < 10_000
        if m["target"] != "direct":
            assert "vs_direct" in m["ratios"]
            assert {"p50", "p99"} == set(m["added_latency_ms"])
        if m["target"] == "bananagate" and targets["nginx"]["started"]:
            assert {"throughput", "p50", "p99", "peak_rss", "cpu_per_request"} == set(m["ratios"]["vs_nginx"])
        if m["target"] == "bananagate":
            assert m["cpu_ms_per_request"] is not None and m["cpu_ms_per_request"] > 0
    assert "| target |" in done.stdout  # the Markdown table for the README
