"""The README's commands, executed as a user would paste them (host port swapped for a free one)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.conftest import REPO, free_port

README = (REPO / "README.md").read_text()


def section(title: str) -> str:
    start = README.index(title)
    rest = README[start + len(title) :]
    end = re.search(r"^##+ ", rest, flags=re.M)
    return rest[: end.start()] if end else rest


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def test_readme_names_the_two_setup_commands() -> None:
    setup = blocks(section("## Set-up: two commands"), "bash")
    assert setup == [
        "./scripts/serve    # start the gateway at http://127.0.0.1:8000 (embedded defaults: SQLite + emulator)\n"
        "./scripts/test     # run the whole test suite\n"
    ]
    ci = (REPO / ".ci" / "run").read_text()
    assert "scripts/test" in ci  # CI runs the README's test command


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    """`./scripts/serve` exactly as the README says, with HOME pointed at a fresh directory."""
    home = tmp_path_factory.mktemp("home")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BANANAGATE_", "XDG_"))}
    env["HOME"] = str(home)
    log = (home / "serve.log").open("wb")
    proc = subprocess.Popen(
        ["./scripts/serve", "--port", str(port)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (home / "serve.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (home / "serve.log").read_text()
            time.sleep(0.2)
        yield home, port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def run_bash(script: str, cwd: Path, home: Path, port: int) -> subprocess.CompletedProcess[str]:
    script = script.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BANANAGATE_", "XDG_"))}
    env["HOME"] = str(home)
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_banner_printed_the_default_key(served: tuple[Path, int]) -> None:
    home, _ = served
    key_file = home / ".local/share/bananagate/default.key"
    key = key_file.read_text().strip()
    assert key.startswith("sk-") and len(key) >= 35
    assert key in (home / "serve.log").read_text()
    assert key_file.stat().st_mode & 0o777 == 0o600


def test_guide_flows_run_as_written(served: tuple[Path, int], tmp_path: Path) -> None:
    home, port = served
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    script = "\n".join(blocks(section("## The guide's three flows"), "bash"))
    done = run_bash(script, tmp_path, home, port)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "saved kitten.png" in done.stdout
    with Image.open(tmp_path / "kitten.png") as img:
        assert img.format == "PNG" and img.size == (1344, 768)  # 16:9 on gemini-2.5-flash-image
    with Image.open(tmp_path / "collage.png") as img:
        assert img.width > 1000
    for name in ("edited.json", "multi-out.json", "collage-out.json"):
        answer = json.loads((tmp_path / name).read_text())
        parts = answer["candidates"][0]["content"]["parts"]
        assert any("inlineData" in p for p in parts), name
    # The edit had no aspectRatio: it follows its 16:9 input.
    edited = json.loads((tmp_path / "edited.json").read_text())
    assert edited["candidates"][0]["finishReason"] == "STOP"


def test_sdk_example_runs(served: tuple[Path, int], tmp_path: Path) -> None:
    home, port = served
    (code,) = blocks(section("### The same with the official `google-genai` SDK"), "python")
    code = code.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BANANAGATE_", "GOOGLE_", "GEMINI_"))}
    env["HOME"] = str(home)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "saved sdk-kitten.png image/png" in done.stdout
    assert "STOP" in done.stdout
    with Image.open(tmp_path / "sdk-kitten.png") as img:
        assert img.size == (1344, 768)


def test_keys_commands_run(served: tuple[Path, int], tmp_path: Path) -> None:
    home, port = served
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    (script,) = blocks(section("## Keys"), "bash")
    done = run_bash(script.replace("#", "; #", 0), tmp_path, home, port)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "alice" in done.stdout
