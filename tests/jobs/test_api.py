"""Jobs and batches through the HTTP API of an in-process gateway (embedded SQLite and worker)."""

from __future__ import annotations

from typing import Any

import pytest

from bananagate.store import KeyLimits
from tests.jobs.conftest import FLASH, FLASH_PRICE, App, job_body, wait_until

BATCH = f"/v1beta/models/{FLASH}:batchGenerateContent"


def _batch(n: int, **extra: Any) -> dict[str, Any]:
    requests = [
        {
            "request": {"contents": [{"parts": [{"text": f"Item number {i}"}]}]},
            "metadata": {"key": f"item-{i}"},
        }
        for i in range(n)
    ]
    return {"batch": {"displayName": "nightly", "inputConfig": {"requests": {"requests": requests}}}, **extra}


@pytest.fixture
def app(make_app: Any) -> App:
    return make_app()  # type: ignore[no-any-return]


def test_submit_poll_list_and_forget(app: App) -> None:
    key, secret = app.store.keys.create_key("alice")
    headers = app.headers(secret)
    submitted = app.client.post("/v1beta/jobs", json=job_body("A lighthouse at dusk"), headers=headers)
    assert submitted.status_code == 200
    job = submitted.json()
    assert job["name"].startswith("jobs/") and job["state"] == "PENDING" and job["done"] is False
    done = app.wait_job(job["name"], secret)
    assert done["state"] == "SUCCEEDED" and done["attempts"] == 1 and done["costUsd"] == "0.039"
    parts = done["result"]["candidates"][0]["content"]["parts"]
    assert any("inlineData" in p for p in parts)
    row = app.store.ledger.get(f"job-{job['name'][5:]}")
    assert row is not None and row.cost_nanos == FLASH_PRICE and row.outcome == "ok"
    listed = app.client.get("/v1beta/jobs", headers=headers).json()
    assert [j["name"] for j in listed["jobs"]] == [job["name"]] and "result" not in listed["jobs"][0]
    # Another key sees nothing of it.
    _, other = app.store.keys.create_key("bob")
    assert app.client.get(f"/v1beta/{job['name']}", headers=app.headers(other)).status_code == 404
    assert app.client.get("/v1beta/jobs", headers=app.headers(other)).json() == {"jobs": []}
    assert app.client.delete(f"/v1beta/{job['name']}", headers=headers).json() == {}
    assert app.client.get(f"/v1beta/{job['name']}", headers=headers).status_code == 404
    assert key.id


def test_refusals_happen_at_submit(app: App) -> None:
    _, secret = app.store.keys.create_key("alice")
    headers = app.headers(secret)
    no_model = app.client.post(
        "/v1beta/jobs", json={"contents": [{"parts": [{"text": "x"}]}]}, headers=headers
    )
    assert no_model.status_code == 400 and '"model" is required' in no_model.json()["error"]["message"]
    unknown = app.client.post("/v1beta/jobs", json=job_body("x", model="gemini-9-image"), headers=headers)
    assert unknown.status_code == 404
    bad_ratio = job_body("x", generationConfig={"imageConfig": {"aspectRatio": "7:3"}})
    assert app.client.post("/v1beta/jobs", json=bad_ratio, headers=headers).status_code == 400
    hook = app.client.post("/v1beta/jobs", json=job_body("x", webhook_url="ftp://h/x"), headers=headers)
    assert hook.status_code == 400 and "webhook_url" in hook.json()["error"]["message"]
    body = _batch(3)
    body["batch"]["inputConfig"]["requests"]["requests"][1]["request"]["contents"] = []
    refused = app.client.post(BATCH, json=body, headers=headers)
    assert refused.status_code == 400
    assert refused.json()["error"]["message"].startswith("batch.input_config.requests.requests[1].request:")
    assert app.client.post("/v1beta/jobs", json=job_body("x")).status_code == 401
    _, limited = app.store.keys.create_key(
        "limited", limits=KeyLimits(models=("gemini-3-pro-image-preview",))
    )
    assert (
        app.client.post("/v1beta/jobs", json=job_body("x"), headers=app.headers(limited)).status_code == 403
    )
    assert app.client.get("/v1beta/jobs", headers=headers).json() == {"jobs": []}  # nothing was queued


def test_batch_results_in_input_order_with_metadata(app: App) -> None:
    _, secret = app.store.keys.create_key("alice")
    headers = app.headers(secret)
    operation = app.client.post(BATCH, json=_batch(6), headers=headers).json()
    assert operation["done"] is False and operation["metadata"]["state"] == "BATCH_STATE_PENDING"
    assert operation["metadata"]["batchStats"]["requestCount"] == "6"

    def finished() -> dict[str, Any] | None:
        body: dict[str, Any] = app.client.get(f"/v1beta/{operation['name']}", headers=headers).json()
        return body if body["done"] else None

    done = wait_until(finished)
    assert done["metadata"]["state"] == "BATCH_STATE_SUCCEEDED"
    assert done["metadata"]["batchStats"]["successfulRequestCount"] == "6"
    responses = done["response"]["inlinedResponses"]["inlinedResponses"]
    assert [r["metadata"]["key"] for r in responses] == [f"item-{i}" for i in range(6)]
    assert done["metadata"]["output"]["inlinedResponses"]["inlinedResponses"] == responses
    listed = app.client.get("/v1beta/batches", headers=headers).json()["operations"]
    assert [o["name"] for o in listed] == [operation["name"]] and "response" not in listed[0]
    # The emulator draws the prompt: each answer belongs to its own request.
    assert len({r["response"]["responseId"] for r in responses}) == 6


def test_transient_failure_is_retried_and_permanent_one_fails_free(app: App) -> None:
    key, secret = app.store.keys.create_key("alice", limits=KeyLimits(budget_nanos=10 * FLASH_PRICE))
    flaky = app.client.post(
        "/v1beta/jobs", json=job_body("flaky"), headers=app.headers(secret, "status=503;times=1")
    ).json()
    broken = app.client.post(
        "/v1beta/jobs", json=job_body("broken"), headers=app.headers(secret, "status=400")
    ).json()
    flaky_done = app.wait_job(flaky["name"], secret)
    assert flaky_done["state"] == "SUCCEEDED" and flaky_done["attempts"] == 2
    broken_done = app.wait_job(broken["name"], secret)
    assert broken_done["state"] == "FAILED" and broken_done["error"]["code"] == 400
    row = app.store.ledger.get(f"job-{broken['name'][5:]}")
    assert row is not None and row.outcome == "error" and row.cost_nanos == 0
    record = app.store.keys.get_key_by_id(key.id)
    assert record is not None and record.spent_nanos == FLASH_PRICE and record.reserved_nanos == 0


def test_budget_is_held_at_submit(app: App) -> None:
    key, secret = app.store.keys.create_key("alice", limits=KeyLimits(budget_nanos=2 * FLASH_PRICE))
    headers = app.headers(secret)
    assert app.client.post(BATCH, json=_batch(3), headers=headers).status_code == 429  # all or nothing
    first = app.client.post(
        "/v1beta/jobs", json=job_body("one"), headers=app.headers(secret, "delay=1")
    ).json()
    second = app.client.post(
        "/v1beta/jobs", json=job_body("two"), headers=app.headers(secret, "delay=1")
    ).json()
    refused = app.client.post("/v1beta/jobs", json=job_body("three"), headers=headers)
    assert refused.status_code == 429 and "budget" in refused.json()["error"]["message"]
    for job in (first, second):
        assert app.wait_job(job["name"], secret)["state"] == "SUCCEEDED"
    record = app.store.keys.get_key_by_id(key.id)
    assert record is not None and record.spent_nanos == 2 * FLASH_PRICE and record.reserved_nanos == 0


def test_cancel_queued_and_running_jobs(app: App) -> None:
    # One job at a time for this key, so the second one waits in the queue.
    key, secret = app.store.keys.create_key(
        "alice", limits=KeyLimits(max_concurrent=1, budget_nanos=FLASH_PRICE * 5)
    )
    slow = app.client.post(
        "/v1beta/jobs", json=job_body("slow"), headers=app.headers(secret, "delay=5")
    ).json()
    wait_until(
        lambda: (
            app.client.get(f"/v1beta/{slow['name']}", headers=app.headers(secret)).json()["state"]
            == "RUNNING"
        )
    )
    queued = app.client.post("/v1beta/jobs", json=job_body("queued"), headers=app.headers(secret)).json()
    cancelled = app.client.delete(f"/v1beta/{queued['name']}", headers=app.headers(secret)).json()
    assert cancelled["state"] == "CANCELLED" and cancelled["error"]["status"] == "CANCELLED"
    flagged = app.client.delete(f"/v1beta/{slow['name']}", headers=app.headers(secret)).json()
    assert flagged["state"] == "RUNNING" and flagged["cancelRequested"] is True
    stopped = app.wait_job(slow["name"], secret, timeout=4)  # within a heartbeat, not the 5 s delay
    assert stopped["state"] == "CANCELLED"
    rows = {r.request_id: r for r in app.store.ledger.rows(key_id=key.id)}
    assert {r.outcome for r in rows.values()} == {"cancelled"} and len(rows) == 2
    record = app.store.keys.get_key_by_id(key.id)
    assert record is not None and record.spent_nanos == 0 and record.reserved_nanos == 0


def test_a_key_at_its_rate_limit_is_deferred_not_failed(app: App) -> None:
    _, secret = app.store.keys.create_key("alice", limits=KeyLimits(rpm=2))
    names = [
        app.client.post("/v1beta/jobs", json=job_body(f"n{i}"), headers=app.headers(secret)).json()["name"]
        for i in range(3)
    ]

    def views() -> list[dict[str, Any]]:
        return [app.client.get(f"/v1beta/{name}", headers=app.headers(secret)).json() for name in names]

    wait_until(lambda: sorted(v["state"] for v in views()) == ["PENDING", "SUCCEEDED", "SUCCEEDED"])
    (waiting,) = [v for v in views() if v["state"] == "PENDING"]
    assert waiting["attempts"] == 0  # back in the queue until the window allows it, uncounted


def test_idempotency_key_on_submit_queues_one_job(app: App) -> None:
    _, secret = app.store.keys.create_key("idem")
    headers = {**app.headers(secret), "Idempotency-Key": "submit-1"}
    body = job_body("One lighthouse only")
    first = app.client.post("/v1beta/jobs", json=body, headers=headers)
    again = app.client.post("/v1beta/jobs", json=body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.json()["name"] == first.json()["name"]
    assert again.headers.get("idempotent-replayed") == "true"
    listed = app.client.get("/v1beta/jobs", headers=app.headers(secret)).json()
    assert [j["name"] for j in listed["jobs"]] == [first.json()["name"]]
    other = app.client.post("/v1beta/jobs", json=job_body("Another"), headers=headers)
    assert other.status_code == 422
    assert "Idempotency-Key" in other.json()["error"]["message"]
