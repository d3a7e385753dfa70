"""The gateway's own request path, without sockets (`python -m bench.inprocess`).

`python -m bench` and `bench.ab` measure bananagate as a client sees it, through uvicorn and the
kernel, on a machine whose speed swings by a third within the hour. This drives the ASGI app
directly: each request is a scope, a receive that hands over the body at once and a send that
drops the answer, and the provider answers every call with the same `t2i` response from memory
(read into a fresh bytearray, as the upstream pool does). What is left is the gateway's own
work per request (middleware, routing, auth, checks, scans, metering and its ledger batch, the
gallery when on), in CPU microseconds, with `--profile` as a cProfile table.

    python -m bench.inprocess --requests 4000 --concurrency 8
    python -m bench.inprocess --profile --sort cumulative
    python -m bench.inprocess --workload i2i --callers b64decode   # who calls what matches
    PYTHONPATH=../main-before/src python -m bench.inprocess   # another build, same measure
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bench.payloads import answer_json
from bench.workloads import Sizes, workloads

MODEL_PATH = "/v1beta/models/gemini-2.5-flash-image:generateContent"
# Workloads whose request goes to `:generateContent` (the answer is always the t2i answer).
WORKLOADS = ("t2i", "i2i", "multi")


class MemoryProvider:
    """Answers every call with `answer`, checked and scanned as the Gemini HTTP provider does."""

    name = "memory"

    def __init__(self, answer: bytes) -> None:
        self.answer = answer

    async def generate(self, call: Any) -> Any:
        from bananagate.providers.base import scanned_answer

        # A fresh buffer per call, as the upstream pool reads each answer into its own.
        whole = scanned_answer(bytearray(self.answer))
        if whole is None:
            raise RuntimeError("the bench answer is not a JSON object")
        return whole

    async def stream(self, call: Any) -> AsyncIterator[bytes]:
        yield self.answer  # a stream of one event: the whole answer

    async def aclose(self) -> None:
        return None


class Lifespan:
    """The app's lifespan protocol, driven by hand (startup before the first request)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def _step(self, kind: str) -> None:
        await self.inbox.put({"type": f"lifespan.{kind}"})
        message = await self.outbox.get()
        if message["type"] != f"lifespan.{kind}.complete":
            raise RuntimeError(f"lifespan {kind} failed: {message}")

    async def __aenter__(self) -> Lifespan:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self.task = asyncio.create_task(self.app(scope, self.inbox.get, self.outbox.put))
        await self._step("startup")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._step("shutdown")
        if self.task is not None:
            await self.task


async def call(app: Any, headers: list[tuple[bytes, bytes]], body: bytes) -> int:
    """One POST through the app; its status."""
    answered = asyncio.Event()
    delivered = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await answered.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif not message.get("more_body", False):
            answered.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": MODEL_PATH,
        "raw_path": MODEL_PATH.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    await app(scope, receive, send)
    return status


async def measure(
    *,
    requests: int,
    concurrency: int,
    console: bool,
    profile: cProfile.Profile | None,
    workload: str = "t2i",
) -> dict[str, float]:
    """CPU and wall microseconds per request over `requests` calls, `concurrency` at a time."""
    from bananagate.server.app import create_app
    from bananagate.settings import Settings
    from bananagate.store import Store

    sizes = Sizes()
    body = workloads(sizes)[workload].body()
    with tempfile.TemporaryDirectory(prefix="bench-inprocess-") as tmp:
        data = Path(tmp)
        with Store.open(f"sqlite:///{data / 'bananagate.db'}") as store:
            _, secret = store.keys.create_key("bench")
            settings = Settings(
                data_dir=data, admin_key="ak-bench", redis_url=None, database_url=None, console=console
            )
            app = create_app(settings, store=store, provider=MemoryProvider(answer_json(sizes.answer)))
            headers = [
                (b"host", b"127.0.0.1:8000"),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-goog-api-key", secret.encode()),
            ]

            async def worker(count: int) -> None:
                for _ in range(count):
                    status = await call(app, headers, body)
                    if status != 200:
                        raise RuntimeError(f"the gateway answered {status}")

            async with Lifespan(app):
                warm = max(concurrency, requests // 10)
                await asyncio.gather(*(worker(warm // concurrency or 1) for _ in range(concurrency)))
                each = max(1, requests // concurrency)
                wall, cpu = time.perf_counter(), time.process_time()
                if profile is not None:
                    profile.enable()
                await asyncio.gather(*(worker(each) for _ in range(concurrency)))
                if profile is not None:
                    profile.disable()
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    served = each * concurrency
    return {"requests": served, "cpu_us": cpu * 1e6 / served, "wall_us": wall * 1e6 / served}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.inprocess", description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=4000)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--workload", choices=WORKLOADS, default="t2i", help="the request sent (default t2i)")
    p.add_argument("--console", action="store_true", help="with the gallery (default: off)")
    p.add_argument("--profile", action="store_true", help="print a cProfile table of the measured part")
    p.add_argument("--sort", default="tottime", help="cProfile sort key (default tottime)")
    p.add_argument(
        "--callers",
        metavar="PATTERN",
        help="with the profile (implied), which functions call those matching PATTERN (a regex)",
    )
    opts = p.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency of the server
        pass
    profile = cProfile.Profile() if opts.profile or opts.callers else None
    result = asyncio.run(
        measure(
            requests=opts.requests,
            concurrency=opts.concurrency,
            console=opts.console,
            profile=profile,
            workload=opts.workload,
        )
    )
    print(
        f"{result['requests']:.0f} {opts.workload} requests, c={opts.concurrency}: "
        f"{result['cpu_us']:.1f} µs CPU and {result['wall_us']:.1f} µs wall per request"
    )
    if profile is not None:
        stats = pstats.Stats(profile, stream=sys.stdout).sort_stats(opts.sort)
        stats.print_stats(40)
        if opts.callers:
            stats.print_callers(opts.callers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
