"""The README's "OpenAI-compatible API" section: its examples run as written against a real
gateway, and its size tables say what the code does."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bananagate.protocol.catalog import MODELS
from bananagate.protocol.openai_sizes import OPENAI_SIZES, SIZE_TABLE
from tests.conftest import REPO, Gateway, start_gateway, stop_gateway
from tests.openai.conftest import decode

README = (REPO / "README.md").read_text()
TITLE = "## OpenAI-compatible API"


def section() -> str:
    start = README.index(TITLE)
    rest = README[start + len(TITLE) :]
    end = re.search(r"^## ", rest, flags=re.M)
    return rest[: end.start()] if end else rest


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", section(), flags=re.S)


def table_rows(header_start: str) -> list[list[str]]:
    text = section()
    lines = text[text.index(header_start) :].splitlines()
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip().strip("`") for cell in line.strip("|").split("|")])
    return rows


def test_section_sits_right_before_errors() -> None:
    # Only "Request guarantees" (which covers these routes too) may come between.
    after = README[README.index(TITLE) + len(TITLE) :]
    following = re.findall(r"^## .*$", after, flags=re.M)[:2]
    assert following[0] == "## Errors" or following == ["## Request guarantees", "## Errors"]


def test_openai_size_table_matches_the_code() -> None:
    documented = {size: tuple(cell.split(", ")) for size, cell in table_rows("| `size` | ratio, size |")}
    assert documented == OPENAI_SIZES


def test_gemini_size_table_matches_the_code() -> None:
    labels = ("1K", "512", "1K", "2K", "4K")
    documented: dict[str, tuple[str, str]] = {}
    for ratio, *cells in table_rows("| ratio | 2.5 Flash 1K |"):
        for label, cell in zip(labels, cells, strict=True):
            if cell != "–":
                documented[cell] = (ratio, label)
    entries = {f"{w}x{h}" for m in MODELS for by_label in m.sizes.values() for (w, h) in by_label.values()}
    assert set(documented) == entries
    assert all(SIZE_TABLE[size] == meaning for size, meaning in documented.items())


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Gateway]]:
    """A gateway on the default data dir of a fresh HOME, where the README reads the key from."""
    home = tmp_path_factory.mktemp("home")
    gateway = start_gateway(home / ".local/share/bananagate", env={"HOME": str(home)})
    try:
        yield home, gateway
    finally:
        stop_gateway(gateway)


def run(args: list[str], home: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BANANAGATE_", "OPENAI_", "XDG_"))}
    env["HOME"] = str(home)
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_python_example_runs(home: tuple[Path, Gateway], tmp_path: Path) -> None:
    home_dir, gateway = home
    (code,) = blocks("python")
    done = run([sys.executable, "-c", code.replace("http://127.0.0.1:8000", gateway.url)], home_dir, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "saved 2 images," in done.stdout
    assert f"link: {gateway.url}/v1/files/images/" in done.stdout
    assert "wizard hat" in done.stdout and "gemini-3.1-flash-image-preview" in done.stdout
    assert decode((tmp_path / "openai-kitten-1.png").read_bytes()).size == (1344, 768)
    assert decode((tmp_path / "openai-edited.jpg").read_bytes()).size == (1264, 848)
    assert decode((tmp_path / "openai-chat.jpg").read_bytes()).size == (1376, 768)  # follows the 16:9 kitten


def test_curl_example_runs(home: tuple[Path, Gateway], tmp_path: Path) -> None:
    home_dir, gateway = home
    (script,) = blocks("bash")
    script = script.replace("http://127.0.0.1:8000", gateway.url)
    done = run(["bash", "-euo", "pipefail", "-c", script], home_dir, tmp_path)
    assert done.returncode == 0, done.stderr + done.stdout
    assert decode((tmp_path / "curl-lighthouse.png").read_bytes()).size == (832, 1248)
