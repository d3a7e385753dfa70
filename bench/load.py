"""Driving a target: the same closed-loop load (N connections, each sending its next request as
soon as the previous answer is complete) from wrk when installed, else from `bench.pyload`.

Both report the same `LoadResult`: completed requests, failures, duration and latency
percentiles over every completed request.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.tools import find_executable


@dataclass
class LoadResult:
    generator: str
    requests: int  # completed with a 2xx status
    errors: int  # non-2xx answers, socket errors and timeouts
    duration_s: float
    bytes_read: int
    latency_ms: dict[str, float | None]  # p50, p90, p99, mean, max; None when nothing completed

    @property
    def throughput_rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["throughput_rps"] = round(self.throughput_rps, 3)
        return out


@dataclass(frozen=True)
class LoadSpec:
    url: str  # full URL: base + workload path (with its query)
    body_path: Path
    headers: dict[str, str]
    concurrency: int
    duration_s: float
    timeout_s: float = 120.0


def wrk_available() -> str | None:
    return find_executable("wrk")


def _lua_string(value: str) -> str:
    if any(ord(c) < 0x20 or ord(c) > 0x7E for c in value):
        raise ValueError(f"not a printable ASCII value: {value!r}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


WRK_DONE = """
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, ' ..
    '"write": %d, "status": %d, "timeout": %d, "p50": %d, "p90": %d, "p99": %d, "mean": %.1f, "max": %d}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
"""


def wrk_script(spec: LoadSpec) -> str:
    """The Lua script: POST the body file with the headers; print a JSON summary when done."""
    lines = [
        f"local f = assert(io.open({_lua_string(str(spec.body_path))}, 'rb'))",
        'wrk.method = "POST"',
        "wrk.body = f:read('*a')",
        "f:close()",
        'wrk.headers["Content-Type"] = "application/json"',
    ]
    for name, value in spec.headers.items():
        lines.append(f"wrk.headers[{_lua_string(name)}] = {_lua_string(value)}")
    return "\n".join(lines) + "\n" + WRK_DONE


def run_wrk(spec: LoadSpec, binary: str, threads: int | None = None) -> LoadResult:
    cpus = os.cpu_count() or 1
    threads = threads or max(1, min(spec.concurrency, cpus // 2 or 1))
    threads = min(threads, spec.concurrency)
    seconds = max(1, round(spec.duration_s))  # wrk counts whole seconds
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(wrk_script(spec))
    try:
        argv = [
            binary, "-t", str(threads), "-c", str(spec.concurrency), "-d", f"{seconds}s",
            "--timeout", f"{int(spec.timeout_s)}s", "-s", script.name, spec.url,
        ]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, timeout=seconds + spec.timeout_s + 30, check=False)
    finally:
        os.unlink(script.name)
    out = done.stdout.decode(errors="replace")
    line = next((ln for ln in out.splitlines() if ln.startswith("WRKJSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {out[-500:]} {done.stderr.decode()[-500:]}")
    data = json.loads(line[len("WRKJSON ") :])
    errors = data["connect"] + data["read"] + data["write"] + data["timeout"] + data["status"]
    total = data["requests"]
    return LoadResult(
        generator="wrk",
        requests=max(0, total - data["status"]),
        errors=errors,
        duration_s=data["duration_us"] / 1e6,
        bytes_read=data["bytes"],
        latency_ms=no_latency()
        if total == 0
        else {q: data[q] / 1000 for q in ("p50", "p90", "p99", "mean", "max")},
    )


def no_latency() -> dict[str, float | None]:
    return dict.fromkeys(("p50", "p90", "p99", "mean", "max"))


def run_load(spec: LoadSpec, generator: str) -> LoadResult:
    """`generator` is "wrk" or "python"."""
    if generator == "wrk":
        binary = wrk_available()
        if binary is None:
            raise RuntimeError("wrk is not installed")
        return run_wrk(spec, binary)
    from bench.pyload import run_python_load

    return run_python_load(spec)
