"""The gateway's own overhead, as it reports it: the `gateway` entry of `Server-Timing`.

    python -m bench.server_timing                     # 300 sequential 1.4 MB answers
    python -m bench.server_timing --idempotency       # each request with its own Idempotency-Key
    python -m bench.server_timing --requests 20 --answer-mb 0.2 --json

One `bananagate serve` (console and job worker off, one channel) in front of the fast fake
upstream (`bench.upstream`), requests sent one at a time so nothing queues: the `gateway` entry
is then the time the gateway spent on the request itself (auth, validation, metering with its
SQLite ledger row, routing, response headers), without the upstream's time. Prints p50/p90/p99
of it, the upstream entry and the client-measured latency.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from bench.payloads import MB, MODEL, answer_json, answer_sse, request_body
from bench.procs import ProcessGroup, free_port, read_ready_line, wait_http

TARGET_P50_MS = 2.0


@dataclass
class Result:
    requests: int
    answer_bytes: int
    idempotency: bool
    gateway_p50_ms: float
    gateway_p90_ms: float
    gateway_p99_ms: float
    upstream_p50_ms: float
    client_p50_ms: float


def _timing(header: str) -> dict[str, float]:
    """`gateway;dur=1.2, upstream;dur=3.4` -> {"gateway": 1.2, "upstream": 3.4}."""
    out: dict[str, float] = {}
    for entry in header.split(","):
        name, _, rest = entry.strip().partition(";dur=")
        if rest:
            out[name] = float(rest)
    return out


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(
    url: str, key: str, requests: int, warmup: int, idempotency: bool
) -> tuple[list[dict[str, float]], list[float]]:
    body = request_body("A kitten napping on a sunny windowsill", [])
    path = f"/v1beta/models/{MODEL}:generateContent"
    timings: list[dict[str, float]] = []
    latencies: list[float] = []
    with httpx.Client(base_url=url, headers={"x-goog-api-key": key}, timeout=60) as client:
        for index in range(warmup + requests):
            headers = {"Idempotency-Key": str(uuid.uuid4())} if idempotency else {}
            response = client.post(path, content=body, headers=headers)
            response.raise_for_status()
            if index >= warmup:
                timings.append(_timing(response.headers["server-timing"]))
                latencies.append(response.elapsed.total_seconds() * 1000)
    return timings, latencies


def run(requests: int, warmup: int, answer_mb: float, idempotency: bool) -> Result:
    answer_bytes = int(answer_mb * MB)
    with tempfile.TemporaryDirectory(prefix="bg-server-timing-") as tmp:
        root = Path(tmp)
        (root / "answer.json").write_bytes(answer_json(answer_bytes))
        (root / "answer.sse").write_bytes(answer_sse(answer_bytes))
        procs = ProcessGroup()
        try:
            upstream_log = root / "upstream.log"
            upstream = procs.spawn(
                "upstream",
                [
                    sys.executable,
                    "-m",
                    "bench.upstream",
                    "--answer",
                    str(root / "answer.json"),
                    "--stream",
                    str(root / "answer.sse"),
                ],
                upstream_log,
                stdout_pipe=True,
            )
            port = int(read_ready_line(upstream, upstream_log).split()[1])
            data_dir = root / "data"
            data_dir.mkdir()
            (data_dir / "bananagate.toml").write_text(
                f'[[channels]]\nname = "bench"\nkind = "gemini-compatible"\n'
                f'base_url = "http://127.0.0.1:{port}"\nkeys = ["bench-key"]\n'
            )
            env = {
                **os.environ,
                "BANANAGATE_DATA_DIR": str(data_dir),
                "BANANAGATE_CONSOLE": "false",
                "BANANAGATE_JOBS_WORKER": "false",
                "BANANAGATE_LOG_LEVEL": "warning",
            }
            gateway_port = free_port()
            gateway_log = root / "gateway.log"
            gateway = procs.spawn(
                "gateway",
                [sys.executable, "-m", "bananagate", "serve", "--port", str(gateway_port)],
                gateway_log,
                env=env,
            )
            url = f"http://127.0.0.1:{gateway_port}"
            wait_http(url + "/healthz", gateway, gateway_log)
            key = (data_dir / "default.key").read_text().strip()
            timings, latencies = measure(url, key, requests, warmup, idempotency)
        finally:
            procs.close()
    gateway_ms = [t["gateway"] for t in timings]
    return Result(
        requests=requests,
        answer_bytes=answer_bytes,
        idempotency=idempotency,
        gateway_p50_ms=statistics.median(gateway_ms),
        gateway_p90_ms=_quantile(gateway_ms, 0.9),
        gateway_p99_ms=_quantile(gateway_ms, 0.99),
        upstream_p50_ms=statistics.median(t.get("upstream", 0.0) for t in timings),
        client_p50_ms=statistics.median(latencies),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.server_timing", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--answer-mb", type=float, default=1.4, help="answer size in decimal MB")
    parser.add_argument(
        "--idempotency", action="store_true", help="send an Idempotency-Key with each request"
    )
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = parser.parse_args(argv)
    result = run(args.requests, args.warmup, args.answer_mb, args.idempotency)
    if args.json:
        print(json.dumps(asdict(result)))
    else:
        verdict = "ok" if result.gateway_p50_ms < TARGET_P50_MS else f"above the {TARGET_P50_MS} ms target"
        print(
            f"{result.requests} requests, {result.answer_bytes / MB:.1f} MB answers"
            f"{', Idempotency-Key on each' if result.idempotency else ''}\n"
            f"  Server-Timing gateway: p50 {result.gateway_p50_ms:.2f} ms ({verdict}), "
            f"p90 {result.gateway_p90_ms:.2f} ms, p99 {result.gateway_p99_ms:.2f} ms\n"
            f"  upstream p50 {result.upstream_p50_ms:.2f} ms, "
            f"client latency p50 {result.client_p50_ms:.2f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
