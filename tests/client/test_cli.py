"""`bananagate generate | edit | compose` against the emulator."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from PIL import Image

from bananagate.cli import cli
from tests.client.conftest import FAST_MODEL
from tests.conftest import Gateway

FAST = ["-m", FAST_MODEL, "--size", "512"]
SAVED = re.compile(r"saved (\S+)  (\d+)x(\d+)  (image/\w+)  cost (\S+)  ([\d.]+)s")


@pytest.fixture
def run(gateway: Gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BANANAGATE_BASE_URL", gateway.url)
    monkeypatch.setenv("BANANAGATE_API_KEY", gateway.key)

    def invoke(*args: str, input: bytes | None = None) -> Result:
        return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)

    return invoke


def saved(result: Result) -> list[tuple[Path, tuple[int, int], str]]:
    """(path, size, mime) of every `saved` line, checked against the file on disk."""
    found = []
    for path, w, h, mime, _cost, _secs in SAVED.findall(result.stdout):
        size = (int(w), int(h))
        with Image.open(path) as img:
            assert img.size == size
            assert {"PNG": "image/png", "JPEG": "image/jpeg"}[img.format] == mime
        found.append((Path(path), size, mime))
    return found


def test_generate(run: Callable[..., Result]) -> None:
    result = run("generate", "A kitten napping on a sunny windowsill", "--aspect", "16:9", "-o", "kitten")
    assert result.exit_code == 0, result.output
    assert saved(result) == [(Path("kitten.png"), (1344, 768), "image/png")]
    pro = run("generate", "A kitten", "-m", "gemini-3-pro-image-preview", "--size", "2K", "-o", "out/pro.png")
    assert saved(pro) == [(Path("out/pro.jpg"), (2048, 2048), "image/jpeg")]  # named by its MIME type
    default_name = run("generate", "Two pears", *FAST)
    assert saved(default_name)[0][0] == Path("two-pears.jpg")


def test_edit_with_path_stdin_and_data_url(run: Callable[..., Result], sample_png: Path) -> None:
    data = sample_png.read_bytes()
    data_url = "data:image/png;base64," + base64.b64encode(data).decode()
    for name, arg, stdin in [("p", str(sample_png), None), ("s", "-", data), ("d", data_url, None)]:
        result = run("edit", arg, "-p", "Add a hat", "-o", name, *FAST, input=stdin)
        assert result.exit_code == 0, result.output
        assert saved(result) == [(Path(f"{name}.jpg"), (632, 424), "image/jpeg")]  # 3:2 input at 512


def test_compose_inline_and_collage(run: Callable[..., Result], sample_png: Path) -> None:
    three = [str(sample_png)] * 3
    inline = run("compose", *three, "-p", "All together", "--aspect", "1:1", "-o", "inline")
    assert saved(inline) == [(Path("inline.png"), (1024, 1024), "image/png")]
    too_many = run("compose", *three, str(sample_png), "-p", "All four")
    assert too_many.exit_code == 2
    assert "at most 3" in too_many.stderr and "--collage" in too_many.stderr
    collage = run("compose", *three, str(sample_png), "-p", "All four", "--collage", "--labels", "-o", "grid")
    assert collage.exit_code == 0, collage.output
    assert saved(collage)[0][0] == Path("grid.png")


def test_usage_errors_exit_2(run: Callable[..., Result]) -> None:
    assert run("edit", "missing.png", "-p", "x").exit_code == 2
    assert run("edit", "-p", "x").exit_code == 2  # no image
    assert run("generate", "x", "--aspect", "8:1", "-m", "gemini-2.5-flash-image").exit_code == 2
    assert run("generate", "x", "--auth", "telepathy").exit_code == 2


def test_failures_exit_1(run: Callable[..., Result], unique: Callable[[str], str]) -> None:
    blocked = run("generate", "A cat [emulate: finish=IMAGE_SAFETY]", *FAST)
    assert (
        blocked.exit_code == 1 and "SafetyBlockedError" in blocked.stderr and "IMAGE_SAFETY" in blocked.stderr
    )
    prompt = unique("A dog [emulate: status=429; retry-delay=1s; times=1]")
    limited = run("generate", prompt, *FAST, "--retries", "0")
    assert limited.exit_code == 1 and "429" in limited.stderr
    assert run("generate", prompt, *FAST, "--retries", "0").exit_code == 0


def test_explicit_connection_options(
    run: Callable[..., Result], gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BANANAGATE_API_KEY")
    monkeypatch.setenv("BANANAGATE_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    args = ["--base-url", gateway.url, "--api-key", gateway.key, "--auth", "raw", *FAST]
    assert run("generate", "A lemon", *args).exit_code == 0
    wrong = run("generate", "A lemon", "--base-url", gateway.url, "--api-key", "sk-nope", *FAST)
    assert wrong.exit_code == 1 and "401" in wrong.stderr


def test_report_prints_cost_when_known(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bananagate.cli.generate import report
    from bananagate.client.parse import parse_result
    from tests.client.test_request import OK_BODY

    result = parse_result(OK_BODY, {"x-bananagate-cost-usd": "0.039"})
    report(result, tmp_path / "priced", started=0.0)
    line = capsys.readouterr().out
    assert f"saved {tmp_path / 'priced.png'}  8x8  image/png  cost $0.0390" in line
