"""A bad `BANANAGATE_*` value stops a command with one line naming it, not a traceback."""

from __future__ import annotations

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
    }
    result = CliRunner(env=env).invoke(cli, command, catch_exceptions=False)
    assert result.exit_code == 2
    assert "BANANAGATE_GALLERY: Input should be 'all' or 'playground' (got 'everything')" in result.output
    assert (
        "BANANAGATE_PORT: Input should be a valid integer" in result.output
        and "(got 'eighty')" in result.output
    )
    assert "Traceback" not in result.output and "pydantic" not in result.output
