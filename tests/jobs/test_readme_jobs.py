"""The README's "Jobs and batches" commands, run as written against a gateway.

The curl lines run in bash; the `bananagate` lines run in process through Click's runner (same
command, same arguments), which spares a Python start-up per line on a loaded machine.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from bananagate.cli import cli
from tests.conftest import Gateway
from tests.test_readme import blocks, section

CLI = ".venv/bin/bananagate "


def test_readme_jobs_commands_run(gateway: Gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (script,) = blocks(section("## Jobs and batches"), "bash")
    port = gateway.url.rsplit(":", 1)[1]
    script = script.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    script = script.replace("$(cat ~/.local/share/bananagate/default.key)", gateway.key)
    shell = "\n".join(line for line in script.splitlines() if not line.startswith(CLI))
    commands = [
        shlex.split(line[len(CLI) :], comments=True) for line in script.splitlines() if line.startswith(CLI)
    ]
    assert [c[0] for c in commands] == ["submit", "batch"]

    env = {k: v for k, v in os.environ.items() if not k.startswith("BANANAGATE_")}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", shell],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads((tmp_path / "job.json").read_text())["name"].startswith("jobs/")
    batch = json.loads((tmp_path / "batch.json").read_text())
    assert batch["name"].startswith("batches/") and batch["metadata"]["batchStats"]["requestCount"] == "2"

    (tmp_path / "jobs.jsonl").write_text('"A lighthouse"\n')
    monkeypatch.chdir(tmp_path)
    runner = CliRunner(env={"BANANAGATE_BASE_URL": gateway.url, "BANANAGATE_API_KEY": gateway.key})
    for command in commands:
        result = runner.invoke(cli, command, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    assert (tmp_path / "lighthouse.png").is_file()
    assert '"status":"ok"' in (tmp_path / "results" / "manifest.jsonl").read_text()
