"""`bananagate channels add/list/remove/test`, and a running server picking up changes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from bananagate.cli import cli
from bananagate.store import Store
from tests.channels.conftest import FLASH_25, GOOGLE_KEY, simple_body, toml_channel
from tests.conftest import start_gateway, stop_gateway
from tests.upstreams import FakeGoogle

Invoke = Callable[..., Result]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def run(data_dir: Path) -> Invoke:
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None, env: dict[str, str | None] | None = None) -> Result:
        base: dict[str, str | None] = {
            "BANANAGATE_DATA_DIR": str(data_dir),
            "BANANAGATE_SECRET_KEY": None,
            "BANANAGATE_DATABASE_URL": None,
            "BANANAGATE_CONFIG_PATH": None,
        }
        return runner.invoke(cli, ["channels", *args], input=input, env={**base, **(env or {})})

    return invoke


def test_add_list_remove(run: Invoke, data_dir: Path, google: FakeGoogle) -> None:
    added = run(
        "add",
        "relay",
        "--kind",
        "gemini-compatible",
        "--base-url",
        google.url,
        "--key",
        GOOGLE_KEY,
        "--models",
        f"{FLASH_25},gemini-3-pro-image",
        "--auth",
        "query",
        "--priority",
        "5",
        "--weight",
        "2",
        "--model-map",
        f"{FLASH_25}=nano-banana",
    )
    assert added.exit_code == 0, added.output
    assert "Added channel relay (gemini-compatible, 1 key)" in added.output
    assert (data_dir / "secret.key").stat().st_mode & 0o777 == 0o600

    listed = run("list")
    assert listed.exit_code == 0, listed.output
    assert "relay" in listed.output and "query" in listed.output and "database" in listed.output
    (row,) = json.loads(run("list", "--json").output)
    assert row == {
        "name": "relay",
        "kind": "gemini-compatible",
        "source": "database",
        "base_url": google.url,
        "auth": "query",
        "models": [FLASH_25, "gemini-3-pro-image"],
        "priority": 5,
        "weight": 2,
        "model_map": {FLASH_25: "nano-banana"},
        "keys": 1,
    }

    duplicate = run("add", "relay", "--kind", "gemini", "--key", "x-key-123")
    assert duplicate.exit_code != 0 and "already exists" in duplicate.output

    assert run("remove", "relay").exit_code == 0
    assert json.loads(run("list", "--json").output) == []
    missing = run("remove", "relay")
    assert missing.exit_code != 0 and "no channel named 'relay'" in missing.output


def test_add_refuses_bad_channels_without_echoing_keys(run: Invoke) -> None:
    cases = [
        (("--kind", "gemini-compatible", "--key", "sk-secret-aaaa1111"), "needs base_url"),
        (("--kind", "gemini", "--key", "sk-secret-aaaa1111", "--models", "dall-e-3"), "unknown model"),
        (("--kind", "gemini"), "at least one non-empty key"),
        (("--kind", "gemini", "--key", "sk-secret-aaaa1111", "--base-url", "ftp://x"), "http:// or https://"),
    ]
    for args, message in cases:
        result = run("add", "bad", *args)
        assert result.exit_code != 0
        assert message in result.output, result.output
        assert "sk-secret-aaaa1111" not in result.output


def test_keys_from_stdin(run: Invoke, data_dir: Path) -> None:
    result = run("add", "two", "--kind", "gemini", "--key", "-", input="AIza-one-0000000\nAIza-two-0000000\n")
    assert result.exit_code == 0, result.output
    assert "2 keys" in result.output
    with Store.open(f"sqlite:///{data_dir / 'bananagate.db'}") as store:
        record = store.channels.get("two")
        assert record is not None and record.key_count == 2


def test_max_concurrent_is_stored_with_the_channel(run: Invoke, data_dir: Path) -> None:
    result = run("add", "capped", "--kind", "gemini", "--key", "AIza-one-0000000", "--max-concurrent", "3")
    assert result.exit_code == 0, result.output
    with Store.open(f"sqlite:///{data_dir / 'bananagate.db'}") as store:
        record = store.channels.get("capped")
        assert record is not None and record.options["max_concurrent"] == 3
    assert run("add", "bad", "--kind", "gemini", "--key", "k", "--max-concurrent", "0").exit_code != 0


def test_file_channels_are_listed_and_protected(run: Invoke, data_dir: Path) -> None:
    data_dir.mkdir(parents=True)
    (data_dir / "bananagate.toml").write_text(
        toml_channel("google", "gemini", keys=["${UNSET_GOOGLE_KEY_FOR_TEST}"], models=[FLASH_25])
    )
    (row,) = json.loads(run("list", "--json").output)
    assert row == {
        "name": "google",
        "kind": "gemini",
        "source": "file",
        "base_url": "https://generativelanguage.googleapis.com",
        "auth": "goog",
        "models": [FLASH_25],
        "priority": 0,
        "weight": 1,
        "keys": 1,
    }
    assert "google  gemini  file" in run("list").output
    clash = run("add", "google", "--kind", "gemini", "--key", "AIza-x-000000")
    assert clash.exit_code != 0 and "bananagate.toml" in clash.output
    removed = run("remove", "google")
    assert removed.exit_code != 0 and "edit that file" in removed.output
    tested = run("test", "google")
    assert tested.exit_code != 0 and "UNSET_GOOGLE_KEY_FOR_TEST is not set" in tested.output


def test_channel_test_reports_status_and_latency(run: Invoke, google: FakeGoogle) -> None:
    run(
        "add",
        "g",
        "--kind",
        "gemini",
        "--base-url",
        google.url,
        "--key",
        GOOGLE_KEY,
        "--key",
        "AIza-bad-key-0000",
    )
    result = run("test", "g")
    assert result.exit_code == 1, result.output
    first, second = result.output.strip().splitlines()
    assert first.startswith(f"g key 1/2 {FLASH_25}: 200 OK in ") and "finishReason STOP" in first
    assert second.startswith(f"g key 2/2 {FLASH_25}: FAILED in ") and "rejected its key" in second
    assert "AIza-bad-key-0000" not in result.output and GOOGLE_KEY not in result.output
    # The probe asks for text only: the cheapest request that proves key and route.
    assert json.loads(google.requests[0].body)["generationConfig"] == {"responseModalities": ["TEXT"]}

    wrong_secret = run("test", "g", env={"BANANAGATE_SECRET_KEY": "not-the-one-used"})
    assert wrong_secret.exit_code != 0 and "cannot be decrypted" in wrong_secret.output


def test_a_running_server_picks_up_database_changes(run: Invoke, data_dir: Path, google: FakeGoogle) -> None:
    gateway = start_gateway(data_dir)
    url = f"{gateway.url}/v1beta/models/{FLASH_25}:generateContent"
    headers = {"x-goog-api-key": gateway.key}

    def served_by() -> str:
        response = httpx.post(url, content=simple_body(), headers=headers, timeout=30)
        assert response.status_code == 200, response.text
        return response.headers["x-bananagate-channel"]

    def wait_for(channel: str) -> float:
        started = time.monotonic()
        while served_by() != channel:
            assert time.monotonic() - started < 10, f"still not {channel}"
            time.sleep(0.2)
        return time.monotonic() - started

    try:
        assert served_by() == "emulator"
        assert (
            run("add", "live", "--kind", "gemini", "--base-url", google.url, "--key", GOOGLE_KEY).exit_code
            == 0
        )
        assert wait_for("live") < 5  # polled every 2 s
        assert run("remove", "live").exit_code == 0
        assert wait_for("emulator") < 5
    finally:
        stop_gateway(gateway)
    assert "channels: live (database)" in gateway.log()
