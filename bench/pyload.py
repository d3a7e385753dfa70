"""The Python load generator, for machines without wrk: N asyncio workers on keep-alive
connections, each timing its requests with `perf_counter` from the first byte sent to the last
byte of the answer read (Content-Length or chunked bodies, read in full and discarded).

A minimal HTTP/1.1 client on asyncio streams rather than httpx: at hundreds of megabytes per
second the client's own overhead would otherwise be what is measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from urllib.parse import urlsplit

from bench.load import LoadResult, LoadSpec, no_latency

READ_LIMIT = 1 << 20


class HttpError(Exception):
    pass


async def read_response(reader: asyncio.StreamReader) -> tuple[int, int, bool]:
    """(status, body bytes, keep-alive) of one response; the body is read and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].split(b"\r\n")
    status_line = lines[0].split(b" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/1."):
        raise HttpError(f"bad status line {lines[0][:80]!r}")
    status = int(status_line[1])
    keep_alive = status_line[0] == b"HTTP/1.1"
    length: int | None = None
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"connection":
            keep_alive = value.strip().lower() != b"close"
    size = 0
    if chunked:
        while True:
            size_line = await reader.readuntil(b"\r\n")
            chunk = int(size_line.split(b";", 1)[0].strip(), 16)
            if chunk == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers
                break
            await _discard(reader, chunk + 2)
            size += chunk
    elif length is not None:
        await _discard(reader, length)
        size = length
    else:
        while data := await reader.read(READ_LIMIT):
            size += len(data)
        keep_alive = False
    return status, size, keep_alive


async def _discard(reader: asyncio.StreamReader, n: int) -> None:
    while n > 0:
        data = await reader.read(min(n, READ_LIMIT))
        if not data:
            raise HttpError("connection closed mid-body")
        n -= len(data)


class _Stats:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors = 0
        self.bytes_read = 0


async def _worker(
    host: str, port: int, request: bytes, body: bytes, deadline: float, timeout: float, stats: _Stats
) -> None:
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    try:
        while time.perf_counter() < deadline:
            if connection is None:
                try:
                    connection = await asyncio.wait_for(
                        asyncio.open_connection(host, port, limit=READ_LIMIT), timeout
                    )
                except (OSError, TimeoutError):
                    stats.errors += 1
                    await asyncio.sleep(0.05)
                    continue
            reader, writer = connection
            started = time.perf_counter()
            try:
                writer.write(request)
                writer.write(body)
                await writer.drain()
                status, size, keep_alive = await asyncio.wait_for(read_response(reader), timeout)
            except (
                OSError,
                TimeoutError,
                asyncio.IncompleteReadError,
                asyncio.LimitOverrunError,
                HttpError,
                ValueError,
            ):
                stats.errors += 1
                writer.close()
                connection = None
                continue
            elapsed = time.perf_counter() - started
            stats.bytes_read += size
            if 200 <= status < 300:
                stats.latencies.append(elapsed)
            else:
                stats.errors += 1
            if not keep_alive:
                writer.close()
                connection = None
    finally:
        if connection is not None:
            connection[1].close()
            with contextlib.suppress(Exception):
                await connection[1].wait_closed()


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), math.ceil(pct / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


def request_head(spec: LoadSpec, body_length: int) -> tuple[str, int, bytes]:
    parts = urlsplit(spec.url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    headers = {
        "Host": f"{host}:{port}",
        "Content-Type": "application/json",
        "Content-Length": str(body_length),
        **spec.headers,
    }
    head = f"POST {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return host, port, head.encode("latin-1")


async def _run(spec: LoadSpec) -> LoadResult:
    body = spec.body_path.read_bytes()
    host, port, head = request_head(spec, len(body))
    stats = _Stats()
    started = time.perf_counter()
    deadline = started + spec.duration_s
    workers = [
        asyncio.create_task(_worker(host, port, head, body, deadline, spec.timeout_s, stats))
        for _ in range(spec.concurrency)
    ]
    await asyncio.gather(*workers)
    elapsed = time.perf_counter() - started
    values = sorted(stats.latencies)
    ms = [v * 1000 for v in values]
    return LoadResult(
        generator="python",
        requests=len(values),
        errors=stats.errors,
        duration_s=elapsed,
        bytes_read=stats.bytes_read,
        latency_ms={
            "p50": percentile(ms, 50),
            "p90": percentile(ms, 90),
            "p99": percentile(ms, 99),
            "mean": sum(ms) / len(ms),
            "max": ms[-1],
        }
        if ms
        else no_latency(),
    )


def run_python_load(spec: LoadSpec) -> LoadResult:
    return asyncio.run(_run(spec))
