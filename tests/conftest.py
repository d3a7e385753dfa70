"""Shared fixtures: a real gateway process on a free port with its own data dir."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from hypothesis import settings

REPO = Path(__file__).resolve().parent.parent

# Property tests check behaviour, not speed: hypothesis's per-example deadline (200 ms) is a timed
# assertion, and a busy CI machine can stall one example that long. Tests' own @settings keep
# their other choices and inherit this.
settings.register_profile("bananagate", deadline=None)
settings.load_profile("bananagate")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Gateway:
    url: str
    key: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_gateway(
    data_dir: Path, *, env: dict[str, str] | None = None, args: tuple[str, ...] = ()
) -> Gateway:
    """Start `bananagate serve` as a subprocess and wait until /healthz answers."""
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / f"server-{port}.log"
    full_env = {**os.environ, "BANANAGATE_DATA_DIR": str(data_dir), **(env or {})}
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "bananagate", "serve", "--port", str(port), *args],
        env=full_env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"gateway exited early:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"gateway did not start:\n{log_path.read_text()}")
        time.sleep(0.1)
    key_file = data_dir / "default.key"
    key = key_file.read_text().strip() if key_file.exists() else ""
    return Gateway(url=url, key=key, data_dir=data_dir, process=process, log_path=log_path)


def stop_gateway(gateway: Gateway) -> None:
    gateway.process.terminate()
    try:
        gateway.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        gateway.process.kill()
        gateway.process.wait()


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """One gateway for the whole session, on the embedded defaults."""
    gw = start_gateway(tmp_path_factory.mktemp("gateway"))
    try:
        yield gw
    finally:
        stop_gateway(gw)


@pytest.fixture
def api(gateway: Gateway) -> Iterator[httpx.Client]:
    """An httpx client for the session gateway, authenticated with its default key."""
    with httpx.Client(base_url=gateway.url, headers={"x-goog-api-key": gateway.key}, timeout=60) as client:
        yield client
