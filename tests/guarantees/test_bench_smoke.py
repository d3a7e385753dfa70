"""`bench/server_timing.py` runs end to end (its numbers are for people, not for assertions)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO


def test_server_timing_bench_runs() -> None:
    argv = [sys.executable, "-m", "bench.server_timing", "--requests", "4", "--warmup", "1"]
    argv += ["--answer-mb", "0.1", "--idempotency", "--json"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["requests"] == 4 and result["idempotency"] is True
    assert 0 < result["gateway_p50_ms"] <= result["gateway_p99_ms"]
    assert result["upstream_p50_ms"] > 0
