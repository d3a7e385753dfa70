"""A bad `BANANAGATE_*` value stops a command with one line naming it, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from bananagate.cli import cli


@pytest.mark.parametrize("command", [["serve"], ["keys", "list"]])
def test_bad_settings_are_named_in_one_usage_error(tmp_path: Path, command: list[str]) -> None:
    env = {
        "BANANAGATE_DATA_DIR": str(tmp_path),
        "BANANAGATE_GALLERY": "everything",
        "BANANAGATE_PORT": "eighty",
        "BANANAGATE_GALLERY_BACKLOG_BYTES": "1000",
    }
    result = CliRunner(env=env).invoke(cli, command, catch_exceptions=False)
    assert result.exit_code == 2
    assert "BANANAGATE_GALLERY: Input should be 'all' or 'playground' (got 'everything')" in result.output
    assert (
        "BANANAGATE_PORT: Input should be a valid integer" in result.output
        and "(got 'eighty')" in result.output
    )
    assert (
        "BANANAGATE_GALLERY_BACKLOG_BYTES: Input should be greater than or equal to 1048576" in result.output
    )
    assert "Traceback" not in result.output and "pydantic" not in result.output


def test_serve_with_an_unreachable_database_says_so_in_one_line(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "BANANAGATE_DATA_DIR": str(tmp_path),
        "BANANAGATE_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
    }
    done = subprocess.run(
        [sys.executable, "-m", "bananagate", "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("Error: cannot use the database at postgresql"), done.stderr
    assert "Traceback" not in done.stderr
