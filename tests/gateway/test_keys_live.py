"""`bananagate keys` run as its own process against the data dir of a running gateway."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from bananagate.settings import Settings
from tests.conftest import Gateway

from .helpers import FLASH_25, assert_envelope, generate_path, text_body, wait_for_log

SECRET_RE = re.compile(r"sk-[A-Za-z0-9_-]{20,}")
# A gateway may answer from its memory of a key this long after another process (here the CLI)
# revoked it (BANANAGATE_KEY_CACHE_SECONDS; README "Keys, limits and usage").
KEY_CACHE_SECONDS = float(Settings.model_fields["key_cache_seconds"].default)


def wait_out_key_cache() -> None:
    """Sleep past the bound: a revocation committed before this is now seen by the gateway."""
    time.sleep(KEY_CACHE_SECONDS + 0.05)


def bananagate(gateway: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed console script (as a user runs it), else `python -m bananagate`."""
    script = Path(sys.executable).with_name("bananagate")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "bananagate"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANANAGATE_")}
    env["BANANAGATE_DATA_DIR"] = str(gateway.data_dir)
    return subprocess.run([*command, *args], env=env, capture_output=True, text=True, timeout=60)


def _generate(gateway: Gateway, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(gateway.url + generate_path(FLASH_25), json=text_body(), headers=headers, timeout=60)


def test_created_key_works_at_once_and_revoked_key_fails_within_the_cache_bound(gateway: Gateway) -> None:
    name = f"live-{uuid.uuid4().hex[:8]}"
    created = bananagate(gateway, "keys", "create", "--name", name)
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert SECRET_RE.fullmatch(secret), created.stdout

    # Every way of sending the new key works on the very next request.
    for headers in (
        {"x-goog-api-key": secret},
        {"authorization": secret},
        {"authorization": f"Bearer {secret}"},
    ):
        response = _generate(gateway, headers)
        assert response.status_code == 200, response.text[:300]
    by_query = httpx.get(gateway.url + "/v1beta/models", params={"key": secret}, timeout=30)
    assert by_query.status_code == 200
    # The access line names the key, never its secret (not even when it came in the query string).
    log = wait_for_log(gateway, [f"rid={by_query.headers['x-request-id']}"])
    assert f"key={name}" in log and secret not in log

    listed = bananagate(gateway, "keys", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert name in listed.stdout

    revoked = bananagate(gateway, "keys", "revoke", name)
    assert revoked.returncode == 0, revoked.stderr
    wait_out_key_cache()
    assert_envelope(_generate(gateway, {"x-goog-api-key": secret}), 401, "UNAUTHENTICATED")
    assert_envelope(_generate(gateway, {"authorization": f"Bearer {secret}"}), 401, "UNAUTHENTICATED")

    # The gateway's own key was not touched.
    assert _generate(gateway, {"x-goog-api-key": gateway.key}).status_code == 200


def test_revocation_applies_on_a_kept_alive_connection(gateway: Gateway) -> None:
    """A revoked key is refused on a connection it already used; other keys keep working."""
    name = f"live-{uuid.uuid4().hex[:8]}"
    created = bananagate(gateway, "keys", "create", "--name", name, "--quiet")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        # Keep-alive connection: the same server connection sees the key appear and disappear.
        ok = client.post(generate_path(FLASH_25), json=text_body(), headers={"x-goog-api-key": secret})
        assert ok.status_code == 200
        assert bananagate(gateway, "keys", "revoke", name).returncode == 0
        wait_out_key_cache()
        refused = client.post(generate_path(FLASH_25), json=text_body(), headers={"x-goog-api-key": secret})
        assert_envelope(refused, 401, "UNAUTHENTICATED")
        again = client.post(
            generate_path(FLASH_25), json=text_body(), headers={"x-goog-api-key": gateway.key}
        )
        assert again.status_code == 200
