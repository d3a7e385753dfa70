"""What the load is sent to: the fake upstream itself ("direct"), bananagate in front of it, and
the reference proxies (nginx in `bench.nginx`, peer gateways in `bench.peer`).

Each `start_*` returns a running `Target` or raises `Skipped` with a reason the report shows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.payloads import MODEL
from bench.procs import ProcessGroup, StartError, free_port, process_tree, read_ready_line, wait_http
from bench.workloads import Workload

UPSTREAM_KEY = "bench-upstream-key"
CHANNEL_NAME = "bench-upstream"
GATEWAY_MAX_BODY = 64 * 1024 * 1024  # above the 21 MB workload (the default cap is 20 MiB)


class Skipped(Exception):
    """A target that cannot run here; the message says why."""


@dataclass
class Target:
    name: str
    label: str
    url: str
    pid: int | None
    headers: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def pids(self) -> list[int]:
        return process_tree(self.pid) if self.pid else []

    def path(self, workload: Workload) -> str:
        return workload.path


# --- the fake upstream -------------------------------------------------------------------------


def start_upstream(
    group: ProcessGroup, workdir: Path, answer: bytes, stream: bytes, *, delay: float = 0.0
) -> Target:
    answer_path = workdir / "upstream-answer.json"
    stream_path = workdir / "upstream-answer.sse"
    answer_path.write_bytes(answer)
    stream_path.write_bytes(stream)
    log_path = workdir / "upstream.log"
    argv = [
        sys.executable, "-m", "bench.upstream",
        "--answer", str(answer_path), "--stream", str(stream_path), "--delay", str(delay),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": _repo_pythonpath()}
    process = group.spawn("upstream", argv, log_path, env=env, stdout_pipe=True)
    try:
        line = read_ready_line(process, log_path)
    except StartError as exc:
        raise Skipped(f"fake upstream: {exc}") from None
    _, port, loop = line.split()
    return Target(
        name="direct",
        label="fake upstream, direct",
        url=f"http://127.0.0.1:{port}",
        pid=process.pid,
        info={"loop": loop, "answer_bytes": len(answer), "stream_bytes": len(stream), "delay_s": delay},
    )


def _repo_pythonpath() -> str:
    repo = str(Path(__file__).resolve().parent.parent)
    existing = os.environ.get("PYTHONPATH")
    return f"{repo}{os.pathsep}{existing}" if existing else repo


# --- bananagate ---------------------------------------------------------------------------------


def channel_support(python: str) -> tuple[bool, str]:
    """Whether this bananagate can forward to a `gemini-compatible` channel from `--config`."""
    probe = "from bananagate.config import KINDS\nprint('gemini-compatible' in KINDS)\n"
    try:
        kinds = subprocess.run([python, "-c", probe], capture_output=True, timeout=60, check=False)
        helptext = subprocess.run(
            [python, "-m", "bananagate", "serve", "--help"], capture_output=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"could not ask bananagate: {exc}"
    if kinds.returncode != 0 or kinds.stdout.strip() != b"True":
        return False, "bananagate.config has no gemini-compatible channel kind"
    if b"--config" not in helptext.stdout:
        return False, "`bananagate serve` has no --config option"
    return True, "gemini-compatible channel via --config"


def channel_toml(upstream_url: str) -> str:
    return (
        "# Written by `python -m bench`: one channel, the fake upstream.\n"
        "[[channels]]\n"
        f'name = "{CHANNEL_NAME}"\n'
        'kind = "gemini-compatible"\n'
        f'base_url = "{upstream_url}"\n'
        'auth = "goog"\n'
        f'keys = ["{UPSTREAM_KEY}"]\n'
        f'models = ["{MODEL}"]\n'
    )


def gateway_runtime(python: str) -> dict[str, Any]:
    """Which event loop and HTTP parser uvicorn's "auto" settings will pick in that interpreter."""
    probe = (
        "import importlib.util as u, json, sys\n"
        "import uvicorn\n"
        "print(json.dumps({'python': sys.version.split()[0], 'uvicorn': uvicorn.__version__,"
        " 'uvloop': bool(u.find_spec('uvloop')), 'httptools': bool(u.find_spec('httptools'))}))\n"
    )
    try:
        done = subprocess.run([python, "-c", probe], capture_output=True, timeout=60, check=True)
        info: dict[str, Any] = json.loads(done.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return {}
    info["loop"] = "uvloop" if info.get("uvloop") else "asyncio"
    info["http"] = "httptools" if info.get("httptools") else "h11"
    return info


def start_bananagate(
    group: ProcessGroup,
    workdir: Path,
    upstream: Target,
    *,
    python: str = sys.executable,
    force_emulator: bool = False,
    extra_env: dict[str, str] | None = None,
    name: str = "bananagate",
) -> Target:
    """`bananagate serve` (one worker) on a fresh data dir, with a channel to the fake upstream;
    on the built-in emulator (and labelled so) when this bananagate has no channels. `extra_env`
    sets `BANANAGATE_*` settings (a variant: `--variant noconsole:BANANAGATE_CONSOLE=false`)."""
    supported, why = (False, "emulator requested") if force_emulator else channel_support(python)
    workdir = workdir / name
    data_dir = workdir / "bananagate-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [python, "-m", "bananagate", "serve", "--port", str(port), "--data-dir", str(data_dir)]
    if supported:
        config = workdir / "bananagate.toml"
        config.write_text(channel_toml(upstream.url))
        argv += ["--config", str(config)]
    env = {
        **os.environ,
        "BANANAGATE_DATA_DIR": str(data_dir),
        "BANANAGATE_MAX_BODY_BYTES": str(GATEWAY_MAX_BODY),
        **(extra_env or {}),
    }
    env.pop("BANANAGATE_DATABASE_URL", None)  # the embedded SQLite in the data dir
    env.pop("BANANAGATE_REDIS_URL", None)
    log_path = workdir / "bananagate.log"
    process = group.spawn(name, argv, log_path, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/healthz", process, log_path)
    except StartError as exc:
        raise Skipped(f"{name}: {exc}") from None
    key_file = data_dir / "default.key"
    key = key_file.read_text().strip() if key_file.exists() else ""
    mode = "channel" if supported else "emulator"
    label = name if supported else f"{name} (EMULATOR path: no channels in this build)"
    info = {
        "mode": mode,
        "mode_reason": why,
        "runtime": gateway_runtime(python),
        "version": _version(python),
        "python": python,
        "env": dict(extra_env or {}),
    }
    return Target(
        name=name, label=label, url=url, pid=process.pid, headers={"x-goog-api-key": key}, info=info
    )


def _version(python: str) -> str | None:
    try:
        done = subprocess.run(
            [python, "-c", "import bananagate; print(bananagate.__version__)"],
            capture_output=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.decode().strip() or None
