"""A peer Python gateway for comparison: the LiteLLM proxy on its native Gemini route
(`/v1beta/models/{model}:generateContent`, the one gemini-cli uses), with one model pointing at
the fake upstream. Installed into its own virtual environment under the cache directory (never
into the project's), only when `--peer litellm` asks for it."""

from __future__ import annotations

import os
from pathlib import Path

from bench.payloads import MODEL
from bench.procs import ProcessGroup, StartError, free_port, wait_http
from bench.targets import UPSTREAM_KEY, Skipped, Target
from bench.tools import command_version, ensure_venv

PEERS = ("litellm",)
LITELLM_REQUIREMENTS = ["litellm[proxy]"]
LITELLM_KEY = "sk-bench-litellm-master"


def litellm_config(upstream_url: str) -> str:
    return f"""# Written by `python -m bench`.
model_list:
  - model_name: {MODEL}
    litellm_params:
      model: gemini/{MODEL}
      api_key: {UPSTREAM_KEY}
      api_base: {upstream_url}
litellm_settings:
  drop_params: true
  telemetry: false
general_settings:
  master_key: {LITELLM_KEY}
"""


def start_litellm(
    group: ProcessGroup, workdir: Path, upstream: Target, *, allow_install: bool, log: list[str]
) -> Target:
    python = ensure_venv("litellm-venv", LITELLM_REQUIREMENTS, allow_install=allow_install, log=log)
    if python is None:
        raise Skipped("litellm: not installed (see the run's notes)")
    executable = python.parent / "litellm"
    if not executable.exists():
        raise Skipped(f"litellm: no `litellm` command in {python.parent}")
    config = workdir / "litellm.yaml"
    config.write_text(litellm_config(upstream.url))
    port = free_port()
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no network fetch of the price list at start
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
        "DISABLE_SCHEMA_UPDATE": "True",
    }
    for name in ("DATABASE_URL", "REDIS_URL", "REDIS_HOST"):
        env.pop(name, None)  # no database: the master key alone authenticates
    argv = [
        str(executable),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    log_path = workdir / "litellm.log"
    process = group.spawn("litellm", argv, log_path, env=env, cwd=workdir)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health/liveliness", process, log_path, timeout=180)
    except StartError as exc:
        raise Skipped(f"litellm: {exc}") from None
    version = command_version(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"]
    )
    return Target(
        name="litellm",
        label="LiteLLM proxy (native Gemini route)",
        url=url,
        pid=process.pid,
        headers={"x-goog-api-key": LITELLM_KEY},
        info={"version": version, "config": str(config)},
    )


def start_peer(
    name: str, group: ProcessGroup, workdir: Path, upstream: Target, *, allow_install: bool, log: list[str]
) -> Target:
    if name == "litellm":
        return start_litellm(group, workdir, upstream, allow_install=allow_install, log=log)
    raise Skipped(f"unknown peer {name!r} (known: {', '.join(PEERS)})")
