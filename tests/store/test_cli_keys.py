"""`bananagate keys` through Click's runner, and once through the installed command."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from bananagate.cli import cli
from bananagate.store import Store

SECRET_RE = re.compile(r"sk-[A-Za-z0-9_-]{48}")


Invoke = Callable[..., Result]


@pytest.fixture
def run(cli_env: dict[str, str | None]) -> Invoke:
    """Run `bananagate keys ARGS...` in-process against the test database."""
    runner = CliRunner(env=cli_env)

    def invoke(*args: str) -> Result:
        return runner.invoke(cli, ["keys", *args], catch_exceptions=False)

    return invoke


def test_create_prints_key_alone_on_stdout(run: Invoke, db_url: str) -> None:
    result = run("create", "--name", "ci")
    assert result.exit_code == 0, result.output
    assert SECRET_RE.fullmatch(result.stdout.strip())
    assert result.stdout == result.stdout.strip() + "\n"
    assert "ci" in result.stderr and "not be shown again" in result.stderr
    with Store.open(db_url) as store:
        record = store.keys.authenticate(result.stdout.strip())
        assert record is not None and record.name == "ci"


def test_create_quiet(run: Invoke) -> None:
    result = run("create", "--name", "ci", "--quiet")
    assert result.exit_code == 0
    assert SECRET_RE.fullmatch(result.stdout.strip())
    assert result.stderr == ""


def test_create_errors(run: Invoke) -> None:
    assert run("create", "--name", "ci", "-q").exit_code == 0
    duplicate = run("create", "--name", "ci")
    assert duplicate.exit_code == 1
    assert "already exists" in duplicate.stderr and duplicate.stdout == ""
    invalid = run("create", "--name", "has space")
    assert invalid.exit_code == 2
    assert "--name" in invalid.stderr and invalid.stdout == ""
    assert run("create").exit_code == 2
    assert run("nonsense").exit_code == 2


def test_list_table_and_json(run: Invoke) -> None:
    empty = run("list")
    assert empty.exit_code == 0 and "No API keys" in empty.stdout
    assert json.loads(run("list", "--json").stdout) == []
    secret = run("create", "--name", "alpha", "-q").stdout.strip()
    run("create", "--name", "beta", "-q")
    assert run("revoke", "beta").exit_code == 0

    table = run("list")
    assert table.exit_code == 0
    lines = table.stdout.splitlines()
    for heading in ("name", "prefix", "created", "last used", "status"):
        assert heading in lines[0]
    alpha = next(line for line in lines if line.split()[0] == "alpha")
    beta = next(line for line in lines if line.split()[0] == "beta")
    assert secret[:10] in alpha and "active" in alpha and "never" in alpha
    assert "revoked" in beta
    assert secret not in table.stdout

    data = json.loads(run("list", "--json").stdout)
    assert [k["name"] for k in data] == ["alpha", "beta"]
    assert [k["status"] for k in data] == ["active", "revoked"]
    assert data[0]["prefix"] == secret[:10] and data[0]["revoked_at"] is None
    assert data[1]["revoked_at"] is not None
    assert set(data[0]) == {"id", "name", "prefix", "created_at", "last_used_at", "revoked_at", "status"}
    assert secret not in json.dumps(data)
    assert [k["name"] for k in json.loads(run("list", "--json", "--active").stdout)] == ["alpha"]


def test_revoke(run: Invoke, db_url: str) -> None:
    secret = run("create", "--name", "ci", "-q").stdout.strip()
    result = run("revoke", "ci")
    assert result.exit_code == 0 and "Revoked" in result.stderr
    with Store.open(db_url) as store:
        assert store.keys.authenticate(secret) is None
    again = run("revoke", "ci")
    assert again.exit_code == 0 and "already revoked" in again.stderr
    missing = run("revoke", "nope")
    assert missing.exit_code == 1 and "no API key named 'nope'" in missing.stderr
    assert run("revoke").exit_code == 2


def test_data_dir_option(tmp_path: Path) -> None:
    runner = CliRunner(env={"BANANAGATE_DATA_DIR": str(tmp_path / "env"), "BANANAGATE_DATABASE_URL": None})
    one = tmp_path / "one"
    assert runner.invoke(cli, ["keys", "create", "--name", "a", "-q", "--data-dir", str(one)]).exit_code == 0
    # On the group too, and the environment's data dir stays untouched.
    listed = runner.invoke(cli, ["keys", "--data-dir", str(one), "list", "--json"])
    assert [k["name"] for k in json.loads(listed.stdout)] == ["a"]
    assert (one / "bananagate.db").exists()
    assert not (tmp_path / "env").exists()
    assert json.loads(runner.invoke(cli, ["keys", "list", "--json"]).stdout) == []


def test_unreachable_database_is_a_clean_error(tmp_path: Path) -> None:
    runner = CliRunner(
        env={"BANANAGATE_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/x?connect_timeout=2"}
    )
    result = runner.invoke(cli, ["keys", "list"])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error:") and "Traceback" not in result.output


def _installed_command() -> str | None:
    return shutil.which("bananagate", path=str(Path(sys.executable).parent)) or shutil.which("bananagate")


def test_real_command_alongside_an_open_store(
    db_url: str, cli_env: dict[str, str | None], tmp_path: Path
) -> None:
    """The installed `bananagate keys` works while another process (the server) has the store open."""
    command = _installed_command()
    if command is None:
        pytest.skip("`bananagate` is not installed (pip install -e .)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANANAGATE_")}
    env.update({k: v for k, v in cli_env.items() if v is not None})
    with Store.open(db_url) as server:
        _, server_secret = server.keys.create_key("server")
        created = subprocess.run(
            [command, "keys", "create", "--name", "ci", "--quiet"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert created.returncode == 0, created.stderr
        secret = created.stdout.strip()
        assert SECRET_RE.fullmatch(secret) and created.stdout == secret + "\n"
        record = server.keys.authenticate(secret)
        assert record is not None and record.name == "ci"
        server.keys.touch(record.id)
        listed = subprocess.run(
            [command, "keys", "list", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        data = {k["name"]: k for k in json.loads(listed.stdout)}
        assert set(data) == {"server", "ci"}
        assert data["ci"]["last_used_at"] is not None
        assert server.keys.authenticate(server_secret) is not None
