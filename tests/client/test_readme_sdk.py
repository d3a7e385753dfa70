"""The README's "Python SDK and CLI" blocks, run as a user would after `./scripts/serve`.

HOME points at a fresh directory holding the gateway's key where `serve` saves it by default, so
the examples exercise the out-of-the-box path (no key given); only the port differs from 8000,
via BANANAGATE_BASE_URL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import REPO, Gateway
from tests.test_readme import blocks, section

SECTION = section("## Python SDK and CLI")


@pytest.fixture
def user_env(gateway: Gateway, tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    key_dir = home / ".local/share/bananagate"
    key_dir.mkdir(parents=True)
    (key_dir / "default.key").write_text(gateway.key + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BANANAGATE_", "XDG_"))}
    return {**env, "HOME": str(home), "BANANAGATE_BASE_URL": gateway.url}


def test_python_example_runs(user_env: dict[str, str], tmp_path: Path) -> None:
    (code,) = blocks(SECTION, "python")
    work = tmp_path / "py"
    work.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=work, env=user_env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "saved sdk-kitten.png (1344, 768)" in done.stdout
    assert "collage answer (1024, 1024) STOP" in done.stdout
    assert "second turn (1024, 1024)" in done.stdout
    with Image.open(work / "sdk-kitten.png") as img:
        assert img.format == "PNG"


def test_cli_example_runs(user_env: dict[str, str], tmp_path: Path) -> None:
    (script,) = blocks(SECTION, "bash")
    work = tmp_path / "sh"
    work.mkdir()
    (work / ".venv").symlink_to(REPO / ".venv")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=work,
        env=user_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert "saved kitten.png  1344x768  image/png" in done.stdout
    for name in ("kitten.png", "hat.png", "row.png"):
        with Image.open(work / name) as img:
            assert img.format == "PNG"
    records = [json.loads(line) for line in (work / "results/manifest.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["ok", "ok"]
    assert (work / "results" / "older.png").exists()
