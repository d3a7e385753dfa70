"""Upstream keys never show: not in logs, CLI output, client errors, nor the database (acceptance 5)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from click.testing import CliRunner, Result

from bananagate.cli import cli
from tests.channels.conftest import FLASH_25, FLASH_31, PRO_3, GatewayFactory, simple_body, toml_channel
from tests.upstreams import FakeGoogle, FakeOpenAI, google_error

# Each is a key the upstream refuses or quotes back, so every error path gets exercised.
ECHOED = "AIzaSy-echoed-by-the-upstream-0123456789"
WRONG_GOOGLE = "AIzaSy-wrong-for-google-0123456789ab"
WRONG_OPENAI = "sk-proj-wrong-for-openai-0123456789abc"
CLI_KEY = "sk-added-with-the-cli-0123456789abcdef"
SECRETS = (ECHOED, WRONG_GOOGLE, WRONG_OPENAI, CLI_KEY)


def _cli(data_dir: Path, *args: str) -> Result:
    env = {
        "BANANAGATE_DATA_DIR": str(data_dir),
        "BANANAGATE_SECRET_KEY": None,
        "BANANAGATE_CONFIG_PATH": None,
    }
    return CliRunner().invoke(cli, ["channels", *args], env=env)


def test_no_upstream_key_leaks_anywhere(gateway_with: GatewayFactory, tmp_path: Path) -> None:
    with (
        FakeGoogle(keys=[ECHOED]) as echoing,
        FakeGoogle(keys=["AIzaSy-the-real-one-000"]) as google,
        FakeOpenAI(keys=["sk-the-real-one-000"]) as openai,
    ):
        # The echoing upstream accepts its key but quotes it in a 500 error, as careless relays do.
        echoing.set_default(google_error(500, f"internal error while using key {ECHOED} (try again)"))
        config = (
            "[routing]\nbackoff_base = 0.01\nbackoff_max = 0.02\n"
            + toml_channel(
                "echo", "gemini-compatible", echoing.url, keys=[ECHOED], auth="query", models=[FLASH_25]
            )
            + toml_channel("google", "gemini", google.url, keys=[WRONG_GOOGLE], models=[PRO_3])
            + toml_channel("openai", "openai-images", openai.url, keys=[WRONG_OPENAI], models=[FLASH_31])
        )
        gateway = gateway_with(config, args=("--log-level", "debug"))
        seen: list[str] = []
        with httpx.Client(
            base_url=gateway.url, headers={"x-goog-api-key": gateway.key}, timeout=30
        ) as client:
            for model, status in ((FLASH_25, 500), (PRO_3, 502), (FLASH_31, 502)):
                for method in ("generateContent", "streamGenerateContent?alt=sse"):
                    response = client.post(f"/v1beta/models/{model}:{method}", content=simple_body())
                    assert response.status_code == status, response.text
                    seen.append(response.text + json.dumps(dict(response.headers)))
        assert "[redacted]" in seen[0]  # the echoed message arrives, minus the key
        assert "rejected its key" in seen[2] and "API key not valid" not in seen[2]
        assert "Incorrect API key" not in seen[4]

        # The CLI: add with a key, list, list --json, test (the key is wrong upstream).
        data_dir = gateway.data_dir
        outputs = [
            _cli(data_dir, "add", "cli", "--kind", "gemini", "--base-url", google.url, "--key", CLI_KEY),
            _cli(data_dir, "list"),
            _cli(data_dir, "list", "--json"),
            _cli(data_dir, "test", "cli"),
        ]
        assert [o.exit_code for o in outputs] == [0, 0, 0, 1], [o.output for o in outputs]
        seen += [o.output for o in outputs]
        assert "rejected its key" in outputs[3].output

    log = gateway.log()
    assert "attempt 1 on channel echo" in log and "rejected its key" in log  # failures are logged...
    database = (data_dir / "bananagate.db").read_bytes() + b"".join(
        p.read_bytes() for p in data_dir.glob("bananagate.db*")
    )
    for secret in SECRETS:
        assert secret not in log  # ...without the key
        assert all(secret not in text for text in seen), secret
        assert secret.encode() not in database
