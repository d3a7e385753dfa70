"""Fixtures for job tests: fast queue settings, an in-process gateway, worker processes, and a
webhook receiver on loopback.

Leases, polls and backoffs are shortened (seconds, not minutes) so that crash recovery and
retries happen within a test. PostgreSQL and Redis are the real servers of tests/metering.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from bananagate.server import create_app
from bananagate.settings import Settings
from bananagate.store import Store

# Short enough for a test to watch a lease run out, long enough for a loaded 2-core machine.
FAST = {
    "jobs_lease_seconds": 2.0,
    "jobs_poll_interval": 0.2,
    "jobs_retry_backoff_seconds": 0.2,
    "jobs_sweep_interval_seconds": 0.5,
    "webhook_backoff_seconds": 0.2,
    "webhook_max_attempts": 3,
    "webhook_timeout": 5.0,
    "console": False,
}
WEBHOOK_SECRET = "whsec_test_secret_0123456789"
FLASH = "gemini-2.5-flash-image"
FLASH_PRICE = 39_000_000
# The cheapest image to render: 512 px JPEG.
SMALL = "gemini-3.1-flash-image-preview"
SMALL_PRICE = 45_000_000


def fast_env(**extra: str) -> dict[str, str]:
    """The FAST settings as BANANAGATE_* variables, for gateway and worker processes."""
    env = {
        f"BANANAGATE_{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v) for k, v in FAST.items()
    }
    env["BANANAGATE_WEBHOOK_SECRET"] = WEBHOOK_SECRET
    env["BANANAGATE_FETCH_ALLOW_PRIVATE"] = "true"  # webhooks to the loopback receiver
    return {**env, **extra}


def job_body(prompt: str, model: str = FLASH, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "contents": [{"parts": [{"text": prompt}]}], **extra}
    if model == SMALL:
        body["generationConfig"] = {"imageConfig": {"imageSize": "512"}}
    return body


def wait_until(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1) -> Any:
    """Poll `check` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {value!r})")
        time.sleep(interval)


@dataclass
class App:
    client: TestClient
    store: Store
    settings: Settings
    running: bool = True

    def stop(self) -> None:
        """Shut the app down (its lifespan's exit, as on SIGTERM); the store stays open."""
        if self.running:
            self.running = False
            self.client.__exit__(None, None, None)

    def headers(self, secret: str, emulate: str | None = None) -> dict[str, str]:
        out = {"x-goog-api-key": secret}
        if emulate:
            out["x-bananagate-emulate"] = emulate
        return out

    def wait_job(self, name: str, secret: str, timeout: float = 30.0) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            body: dict[str, Any] = self.client.get(f"/v1beta/{name}", headers=self.headers(secret)).json()
            return body if body.get("done") else None

        return dict(wait_until(done, timeout))


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Callable[..., App]]:
    """In-process gateways (embedded SQLite, embedded worker) with FAST settings."""
    opened: list[App] = []

    def make(**overrides: Any) -> App:
        data = tmp_path / f"app{len(opened)}"
        data.mkdir()
        values: dict[str, Any] = {
            **FAST,
            "data_dir": data,
            "redis_url": None,
            "database_url": None,
            "webhook_secret": WEBHOOK_SECRET,
            "fetch_allow_private": True,
            **overrides,
        }
        settings = Settings(**values)
        store = Store.open(settings.resolved_database_url())
        client = TestClient(create_app(settings, store=store))
        client.__enter__()
        app = App(client, store, settings)
        opened.append(app)
        return app

    yield make
    for app in opened:
        app.stop()
        app.store.close()


# --- webhook receiver --------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    url: str
    calls: list[Received] = field(default_factory=list)
    # Path -> HTTP status to answer with (default 200).
    statuses: dict[str, int] = field(default_factory=dict)

    def to(self, path: str) -> list[Received]:
        return [c for c in self.calls if c.path == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """An HTTP server on 127.0.0.1 that records every POST."""
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            state.calls.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(state.statuses.get(self.path, 200))
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


# --- worker processes ------------------------------------------------------------------------


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def spawn_worker(data_dir: Path, env: dict[str, str], *args: str) -> Worker:
    """`bananagate worker` as a subprocess (see `ready` to wait for it)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / f"worker-{time.monotonic_ns()}.log"
    full_env = {**os.environ, "BANANAGATE_DATA_DIR": str(data_dir), **env}
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "bananagate", "worker", *args],
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    return Worker(process, log_path)


def ready(worker: Worker) -> Worker:
    """Wait until the worker says it is running."""
    deadline = time.monotonic() + 30
    while "running queued jobs" not in worker.log():
        if worker.process.poll() is not None or time.monotonic() > deadline:
            worker.process.kill()
            raise RuntimeError(f"worker did not start:\n{worker.log()}")
        time.sleep(0.1)
    return worker


def start_worker(data_dir: Path, env: dict[str, str], *args: str) -> Worker:
    return ready(spawn_worker(data_dir, env, *args))


def stop_worker(worker: Worker) -> None:
    if worker.process.poll() is None:
        worker.process.terminate()
        try:
            worker.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()
