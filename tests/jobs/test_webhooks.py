"""Webhooks: signed calls, retries with backoff, giving up on record, and the SSRF guard."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from sqlalchemy import text

from bananagate.server.fetch import FetchPolicy
from bananagate.server.webhooks import SIGNATURE_HEADER, WebhookSender, sign, verify
from bananagate.store import KeyCipher, SecretKeyMismatch
from bananagate.store.crypto import TOKEN_PREFIX
from tests.jobs.conftest import WEBHOOK_SECRET, App, Receiver, job_body, wait_until


def test_signature_round_trip_and_refusals() -> None:
    body = b'{"type": "job.succeeded"}'
    header = sign("s3cret", body, timestamp=1_700_000_000)
    assert header.startswith("t=1700000000,v1=")
    assert verify("s3cret", body, header, now=1_700_000_100)
    assert not verify("other", body, header, now=1_700_000_100)  # wrong secret
    assert not verify("s3cret", body + b" ", header, now=1_700_000_100)  # body changed
    assert not verify("s3cret", body, header, now=1_700_000_000 + 301)  # replayed too late
    assert not verify("s3cret", body, "v1=abc", now=1_700_000_000)


def test_job_webhook_is_signed(make_app: Any, receiver: Receiver) -> None:
    app: App = make_app()
    _, secret = app.store.keys.create_key("alice")
    body = job_body("A kite", webhook_url=f"{receiver.url}/hooks/job")
    job = app.client.post("/v1beta/jobs", json=body, headers=app.headers(secret)).json()
    (call,) = wait_until(lambda: receiver.to("/hooks/job"))
    assert verify(WEBHOOK_SECRET, call.body, call.headers[SIGNATURE_HEADER.lower()])
    assert call.headers["x-bananagate-event"] == "job.succeeded"
    event = call.json()
    assert event["type"] == "job.succeeded" and event["name"] == job["name"]
    assert event["data"]["state"] == "SUCCEEDED" and "result" not in event["data"]  # no images in hooks
    shown = wait_until(
        lambda: (
            (j := app.client.get(f"/v1beta/{job['name']}", headers=app.headers(secret)).json())["webhook"][
                "state"
            ]
            == "DELIVERED"
            and j
        )
    )
    assert shown["webhook"]["attempts"] == 1 and shown["webhook"]["lastStatus"] == 200

    # A job's own secret signs its calls instead of the gateway's.
    own = job_body("A kite", webhook_url=f"{receiver.url}/hooks/own", webhook_secret="tenant-secret-123456")
    app.client.post("/v1beta/jobs", json=own, headers=app.headers(secret))
    (mine,) = wait_until(lambda: receiver.to("/hooks/own"))
    assert verify("tenant-secret-123456", mine.body, mine.headers[SIGNATURE_HEADER.lower()])
    assert not verify(WEBHOOK_SECRET, mine.body, mine.headers[SIGNATURE_HEADER.lower()])


def job_secrets(app: App, table: str) -> list[str | None]:
    with app.store.engine.connect() as connection:
        return [r[0] for r in connection.execute(text(f"SELECT webhook_secret FROM {table}"))]


def webhook_rows(app: App) -> list[str | None]:
    with app.store.engine.connect() as connection:
        return [r[0] for r in connection.execute(text("SELECT secret FROM job_webhooks"))]


def test_a_jobs_own_secret_is_stored_sealed(make_app: Any, receiver: Receiver) -> None:
    app: App = make_app()
    _, secret = app.store.keys.create_key("alice")
    own = job_body(
        "A kite", webhook_url=f"{receiver.url}/hooks/sealed", webhook_secret="tenant-secret-sealed"
    )
    app.client.post("/v1beta/jobs", json=own, headers=app.headers(secret))
    (call,) = wait_until(lambda: receiver.to("/hooks/sealed"))
    assert verify("tenant-secret-sealed", call.body, call.headers[SIGNATURE_HEADER.lower()])
    stored = [*job_secrets(app, "jobs"), *webhook_rows(app)]
    assert len(stored) == 2
    for value in stored:
        assert value is not None and value.startswith(TOKEN_PREFIX)
        assert "tenant-secret-sealed" not in value
        opened = KeyCipher.load(app.settings.secret_key, app.settings.data_dir, create=False)
        assert opened.open_secret(value) == "tenant-secret-sealed"


def test_a_secret_stored_in_plain_text_before_sealing_still_signs() -> None:
    cipher = KeyCipher("a secret key of this installation")
    assert cipher.open_secret("legacy-plain-secret-1") == "legacy-plain-secret-1"
    sealed = cipher.seal_secret("tenant-secret-123456")
    assert sealed != "tenant-secret-123456" and cipher.open_secret(sealed) == "tenant-secret-123456"
    with pytest.raises(SecretKeyMismatch):
        KeyCipher("another installation's key").open_secret(sealed)


def test_a_secret_sealed_under_another_key_gives_the_delivery_up_at_once(
    make_app: Any, receiver: Receiver
) -> None:
    app: App = make_app()
    _, secret = app.store.keys.create_key("alice")
    foreign = KeyCipher("another installation's key").seal_secret("tenant-secret-123456")
    with app.store.engine.begin() as connection:  # every webhook row from now on: unreadable here
        connection.execute(
            text(
                "CREATE TRIGGER foreign_secret AFTER INSERT ON job_webhooks WHEN NEW.secret IS NOT NULL "
                f"BEGIN UPDATE job_webhooks SET secret = '{foreign}' WHERE id = NEW.id; END"
            )
        )
    own = job_body(
        "A kite", webhook_url=f"{receiver.url}/hooks/foreign", webhook_secret="tenant-secret-123456"
    )
    job = app.client.post("/v1beta/jobs", json=own, headers=app.headers(secret)).json()

    def given_up() -> dict[str, Any] | None:
        view: dict[str, Any] = app.client.get(f"/v1beta/{job['name']}", headers=app.headers(secret)).json()
        return view if view.get("webhook", {}).get("state") == "FAILED" else None

    view = wait_until(given_up, timeout=20)
    assert view["webhook"]["attempts"] == 1
    assert "decrypted" in view["webhook"]["lastError"]
    assert receiver.to("/hooks/foreign") == []  # nothing unsigned or wrongly signed went out


def test_failing_webhook_is_retried_then_given_up_and_recorded(make_app: Any, receiver: Receiver) -> None:
    app: App = make_app()  # 3 attempts, 0.2 s doubling backoff
    receiver.statuses["/down"] = 500
    _, secret = app.store.keys.create_key("alice")
    body = job_body("A kite", webhook_url=f"{receiver.url}/down")
    job = app.client.post("/v1beta/jobs", json=body, headers=app.headers(secret)).json()

    def given_up() -> dict[str, Any] | None:
        view: dict[str, Any] = app.client.get(f"/v1beta/{job['name']}", headers=app.headers(secret)).json()
        return view if view.get("webhook", {}).get("state") == "FAILED" else None

    view = wait_until(given_up, timeout=20)
    assert view["state"] == "SUCCEEDED"  # the job itself is unaffected
    assert view["webhook"]["attempts"] == 3 and view["webhook"]["lastStatus"] == 500
    assert "HTTP 500" in view["webhook"]["lastError"]
    calls = receiver.to("/down")
    assert len(calls) == 3
    # Each retry is the same delivery (same id) and re-signed.
    assert len({c.headers["x-bananagate-delivery"] for c in calls}) == 1
    assert all(verify(WEBHOOK_SECRET, c.body, c.headers[SIGNATURE_HEADER.lower()]) for c in calls)
    time.sleep(1.0)
    assert len(receiver.to("/down")) == 3  # given up: no fourth call


def test_batch_webhook_fires_once_when_the_last_item_ends(make_app: Any, receiver: Receiver) -> None:
    app: App = make_app()
    _, secret = app.store.keys.create_key("alice")
    requests = [{"request": {"contents": [{"parts": [{"text": f"b{i}"}]}]}} for i in range(4)]
    body = {
        "batch": {
            "displayName": "hooked",
            "inputConfig": {"requests": {"requests": requests}},
            "webhookConfig": {"uris": [f"{receiver.url}/batch"]},  # Google's field
        }
    }
    operation = app.client.post(
        "/v1beta/models/gemini-2.5-flash-image:batchGenerateContent", json=body, headers=app.headers(secret)
    ).json()
    (call,) = wait_until(lambda: receiver.to("/batch"))
    event = call.json()
    assert event["type"] == "batch.succeeded" and event["name"] == operation["name"]
    assert event["data"]["metadata"]["batchStats"]["successfulRequestCount"] == "4"
    time.sleep(0.5)
    assert len(receiver.to("/batch")) == 1


def test_private_targets_are_refused_unless_allowed(receiver: Receiver) -> None:
    async def send(policy: FetchPolicy) -> Any:
        sender = WebhookSender(policy, timeout=5)
        try:
            return await sender.post(
                f"{receiver.url}/x", b"{}", secret="s", event="job.succeeded", delivery="1"
            )
        finally:
            await sender.aclose()

    refused = asyncio.run(send(FetchPolicy()))
    assert not refused.ok and "non-public" in (refused.error or "")
    assert receiver.calls == []
    for target in ("http://169.254.169.254/latest", "http://[::1]:9/", "http://10.0.0.1/"):

        async def one(url: str = target) -> Any:
            sender = WebhookSender(FetchPolicy(), timeout=2)
            try:
                return await sender.post(url, b"{}", secret="s", event="e", delivery="1")
            finally:
                await sender.aclose()

        result = asyncio.run(one())
        assert not result.ok and "non-public" in (result.error or ""), target
    allowed = asyncio.run(send(FetchPolicy(allow_private=True)))
    assert allowed.ok and len(receiver.calls) == 1
