"""Metering through the app, in process: costs, policies, limits, the admin and usage APIs."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import event, text
from starlette.testclient import TestClient

from bananagate.server import create_app
from bananagate.settings import Settings
from bananagate.store import KeyLimits, Store

ADMIN = "ak-test-admin-key"
FLASH = "/v1beta/models/gemini-2.5-flash-image"
BODY = {"contents": [{"parts": [{"text": "A kitten on a windowsill"}]}]}
PRICE = 39_000_000


@pytest.fixture
def app_store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(f"sqlite:///{tmp_path / 'bananagate.db'}") as store:
        yield store


@pytest.fixture
def client(app_store: Store, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path, admin_key=ADMIN, redis_url=None, database_url=None)
    with TestClient(create_app(settings, store=app_store)) as test_client:
        yield test_client


def _key(store: Store, name: str = "alice", **limits: Any) -> tuple[int, str]:
    record, secret = store.keys.create_key(name, limits=KeyLimits(**limits))
    return record.id, secret


def _generate(client: TestClient, secret: str, emulate: str | None = None, path: str = FLASH) -> Any:
    headers = {"x-goog-api-key": secret}
    if emulate:
        headers["x-bananagate-emulate"] = emulate
    return client.post(f"{path}:generateContent", json=BODY, headers=headers)


def test_cost_header_ledger_row_and_budget(client: TestClient, app_store: Store) -> None:
    key_id, secret = _key(app_store, budget_nanos=2 * PRICE)
    first = _generate(client, secret)
    assert first.status_code == 200 and first.headers["x-bananagate-cost-usd"] == "0.039"
    assert _generate(client, secret).status_code == 200
    refused = _generate(client, secret)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["status"] == "RESOURCE_EXHAUSTED" and "budget" in error["message"]
    row = app_store.ledger.get(first.headers["x-request-id"])
    assert row is not None
    assert (row.key_id, row.status, row.outcome, row.images, row.cost_nanos) == (key_id, 200, "ok", 1, PRICE)
    assert row.image_tokens == 1290 and row.attempts >= 1 and row.client_ip
    key = app_store.keys.get_key("alice")
    assert key is not None and key.spent_nanos == 2 * PRICE and key.reserved_nanos == 0
    assert app_store.ledger.summary()[0].requests == 2  # refusals are counted in metrics, not the ledger


@pytest.mark.parametrize("emulate", ["finish=IMAGE_SAFETY", "block=SAFETY", "finish=NO_IMAGE", "status=503"])
def test_answers_without_image_and_failures_cost_nothing(
    client: TestClient, app_store: Store, emulate: str
) -> None:
    _, secret = _key(app_store, budget_nanos=PRICE)
    response = _generate(client, secret, emulate)
    row = app_store.ledger.get(response.headers["x-request-id"])
    assert row is not None and row.cost_nanos == 0
    if emulate == "status=503":
        assert response.status_code == 503 and row.outcome == "error" and row.status == 503
    else:
        assert response.status_code == 200 and response.headers["x-bananagate-cost-usd"] == "0"
        assert row.outcome == "no_image"
    key = app_store.keys.get_key("alice")
    assert key is not None and key.spent_nanos == 0 and key.reserved_nanos == 0
    # The whole budget is still there for a real image.
    assert _generate(client, secret).status_code == 200


def test_charging_answers_without_image_is_configurable(app_store: Store, tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        admin_key=ADMIN,
        charge_without_image=True,
        prices={"gemini-2.5-flash-image": {"input_per_mtok": "1000"}},
    )
    _, secret = _key(app_store)
    with TestClient(create_app(settings, store=app_store)) as client:
        response = _generate(client, secret, "finish=IMAGE_SAFETY")
    assert response.status_code == 200
    row = app_store.ledger.get(response.headers["x-request-id"])
    assert row is not None and row.cost_nanos == row.prompt_tokens * 1_000_000 > 0


def test_stream_is_settled_before_its_last_event(client: TestClient, app_store: Store) -> None:
    _, secret = _key(app_store, budget_nanos=PRICE)
    with client.stream(
        "POST", f"{FLASH}:streamGenerateContent?alt=sse", json=BODY, headers={"x-goog-api-key": secret}
    ) as response:
        assert response.status_code == 200
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
        request_id = response.headers["x-request-id"]
    assert events and b"inlineData" in events[-1].encode()
    row = app_store.ledger.get(request_id)
    assert row is not None and row.streamed and row.cost_nanos == PRICE and row.images == 1
    assert _generate(client, secret).status_code == 429


def test_key_door_checks(client: TestClient, app_store: Store) -> None:
    _, only_pro = _key(app_store, "pro", models=("gemini-3-pro-image-preview",))
    denied = _generate(client, only_pro)
    assert denied.status_code == 403 and denied.json()["error"]["status"] == "PERMISSION_DENIED"
    assert _generate(client, only_pro, path="/v1beta/models/gemini-3-pro-image-preview").status_code == 200
    _, expired = _key(app_store, "old", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    assert _generate(client, expired).status_code == 401
    _, elsewhere = _key(app_store, "vpn", allow_cidrs=("10.0.0.0/8",))
    assert _generate(client, elsewhere).status_code == 403
    inside = TestClient(client.app, client=("10.1.2.3", 50000))
    assert _generate(inside, elsewhere).status_code == 200


def test_rpm_limit_answers_retry_info(client: TestClient, app_store: Store) -> None:
    _, secret = _key(app_store, rpm=1)
    assert _generate(client, secret).status_code == 200
    refused = _generate(client, secret)
    assert refused.status_code == 429
    details = refused.json()["error"]["details"]
    assert details[0]["@type"].endswith("google.rpc.RetryInfo") and details[0]["retryDelay"].endswith("s")
    assert int(refused.headers["retry-after"]) <= 60


def test_admin_api_auth(client: TestClient, app_store: Store) -> None:
    _, secret = _key(app_store)
    assert client.get("/admin/keys").status_code == 401
    assert client.get("/admin/keys", headers={"authorization": "Bearer wrong"}).status_code == 403
    assert client.get("/admin/keys", headers={"authorization": f"Bearer {secret}"}).status_code == 403
    assert client.get("/admin/usage", headers={"x-admin-key": secret}).status_code == 403
    assert client.post("/admin/keys", json={"name": "x"}).status_code == 401
    assert client.get("/admin/keys", headers={"authorization": f"Bearer {ADMIN}"}).status_code == 200
    assert client.get("/admin/openapi.json").json()["openapi"].startswith("3.")


def test_admin_api_manages_keys_and_reports_usage(
    client: TestClient, app_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    admin = {"authorization": f"Bearer {ADMIN}"}
    created = client.post(
        "/admin/keys",
        headers=admin,
        json={"name": "bob", "label": "Bob's app", "budget_usd": "0.1", "rpm": 5, "expires_at": "30d"},
    )
    assert created.status_code == 201
    secret = created.json()["key"]
    assert created.json()["budget_usd"] == "0.1" and created.json()["remaining_usd"] == "0.1"
    assert client.post("/admin/keys", headers=admin, json={"name": "bob"}).status_code == 409
    assert client.post("/admin/keys", headers=admin, json={"name": "c", "rpm": "x"}).status_code == 400
    assert _generate(client, secret).status_code == 200

    patched = client.patch("/admin/keys/bob", headers=admin, json={"rpm": None, "images_per_day": 9})
    assert (
        patched.status_code == 200 and patched.json()["rpm"] is None and patched.json()["images_per_day"] == 9
    )
    assert client.get("/admin/keys/nobody", headers=admin).status_code == 404
    shown = client.get("/admin/keys/bob", headers=admin).json()
    assert shown["spent_usd"] == "0.039" and shown["remaining_usd"] == "0.061"

    usage = client.get("/admin/usage?by=key", headers=admin).json()
    assert usage["rows"] == [usage["total"] | {"group": "bob"}] and usage["total"]["cost_usd"] == "0.039"
    assert client.get("/admin/usage?by=week", headers=admin).status_code == 400
    requests = client.get("/admin/usage/requests?key=bob&since=1h", headers=admin).json()["requests"]
    assert len(requests) == 1 and requests[0]["cost_usd"] == "0.039"

    rotated = client.post("/admin/keys/bob/rotate", headers=admin).json()
    assert _generate(client, secret).status_code == 401
    assert _generate(client, rotated["key"]).status_code == 200
    listing = client.get("/admin/keys", headers=admin).text
    revoked = client.post("/admin/keys/bob/revoke", headers=admin).json()
    assert revoked["status"] == "revoked"
    assert _generate(client, rotated["key"]).status_code == 401

    # Secrets: returned once at creation/rotation, never listed, logged or stored.
    for s in (secret, rotated["key"]):
        assert s not in listing and s not in caplog.text
        with app_store.engine.connect() as connection:
            for table in ("api_keys", "usage_ledger", "reservations"):
                assert s not in repr(connection.execute(text(f"SELECT * FROM {table}")).all())


def test_key_reads_its_own_usage(client: TestClient, app_store: Store) -> None:
    _, secret = _key(app_store, budget_nanos=10 * PRICE)
    _generate(client, secret)
    auth = {"authorization": f"Bearer {secret}"}
    usage = client.get("/v1beta/usage", headers=auth).json()
    assert usage["key"]["remaining_usd"] == "0.351" and usage["usage"]["today"]["images"] == 1
    assert "key" not in usage["key"]  # no secret in there
    subscription = client.get("/v1/dashboard/billing/subscription", headers=auth).json()
    assert (
        subscription["hard_limit_usd"] == pytest.approx(0.39) and subscription["spent_usd_exact"] == "0.039"
    )
    billing = client.get("/dashboard/billing/usage", headers=auth).json()
    assert billing["total_usage"] == pytest.approx(3.9) and billing["total_usage_usd_exact"] == "0.039"
    assert client.get("/v1beta/usage").status_code == 401


def test_metrics(client: TestClient, app_store: Store) -> None:
    _, secret = _key(app_store, budget_nanos=PRICE)
    _generate(client, secret)
    _generate(client, secret)  # refused: budget
    _generate(client, secret, "status=503")  # refused too (no budget left) - see below
    _, free = _key(app_store, "free")
    _generate(client, free, "status=503")
    body = client.get("/metrics").text
    assert (
        'bananagate_requests_total{channel="emulator",model="gemini-2.5-flash-image",outcome="ok",status="200"} 1.0'
        in body
    )
    assert 'bananagate_rejected_total{reason="budget"} 2.0' in body
    assert 'bananagate_images_total{model="gemini-2.5-flash-image"} 1.0' in body
    assert 'bananagate_cost_usd_total{model="gemini-2.5-flash-image"} 0.039' in body
    assert 'bananagate_upstream_errors_total{channel="emulator",status="503"} 1.0' in body
    assert "bananagate_request_latency_seconds_bucket" in body
    assert orjson.dumps(body)  # plain text


def test_known_keys_skip_the_database_and_changes_apply_at_once(app_store: Store, tmp_path: Path) -> None:
    """With a long key cache: one lookup per key, yet the admin API's changes and a key's expiry
    apply on the very next request."""
    settings = Settings(data_dir=tmp_path, admin_key=ADMIN, key_cache_seconds=60)
    admin = {"authorization": f"Bearer {ADMIN}"}
    _, secret = _key(app_store)
    soon = datetime.now(UTC) + timedelta(seconds=2)
    _, expiring = _key(app_store, "soon", expires_at=soon)
    lookups: list[str] = []

    def on_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "FROM api_keys" in statement and "secret_hash" in statement.split("WHERE")[-1]:
            lookups.append(statement)

    event.listen(app_store.engine, "before_cursor_execute", on_execute)
    try:
        with TestClient(create_app(settings, store=app_store)) as client:
            for _ in range(4):
                assert _generate(client, secret).status_code == 200
            assert len(lookups) == 1
            patched = client.patch(
                "/admin/keys/alice", headers=admin, json={"models": ["gemini-3-pro-image-preview"]}
            )
            assert patched.status_code == 200
            assert _generate(client, secret).status_code == 403  # the new allow-list, at once
            assert len(lookups) == 2
            assert _generate(client, expiring).status_code == 200
            while datetime.now(UTC) <= soon:
                time.sleep(0.1)
            # Remembered for a minute, but its expiry is checked on every request.
            refused = _generate(client, expiring)
            assert refused.status_code == 401 and "expired" in refused.json()["error"]["message"]
            assert client.post("/admin/keys/alice/revoke", headers=admin).status_code == 200
            assert _generate(client, secret).status_code == 401
    finally:
        event.remove(app_store.engine, "before_cursor_execute", on_execute)
