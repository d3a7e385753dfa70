"""`Idempotency-Key` through a real gateway process (acceptance 1 and 2, single process)."""

from __future__ import annotations

import asyncio

import httpx

from tests.guarantees.conftest import GENERATE, PRICE, Rig, body, burst, new_key
from tests.upstreams import Reply, google_error


def test_five_racing_duplicates_make_one_call_and_one_charge(fresh: Rig) -> None:
    rig = fresh
    key_id, secret = rig.key(budget_nanos=PRICE)  # pays for exactly one image
    for upstream in rig.upstreams:  # slow enough that every duplicate arrives while it runs
        upstream.set_default(
            lambda request, up=upstream: Reply(200, up.normal_reply(request).body, delay=1.0)
        )  # type: ignore[misc]
    headers = {"x-goog-api-key": secret, "Idempotency-Key": new_key()}
    responses = asyncio.run(burst(rig.gateway.url, headers, body(), 5))

    assert [r.status_code for r in responses] == [200] * 5, [r.text[:200] for r in responses]
    assert len({r.content for r in responses}) == 1  # byte for byte the same answer
    assert rig.upstream_calls() == 1
    replayed = [r for r in responses if r.headers.get("idempotent-replayed") == "true"]
    assert len(replayed) == 4
    assert all(r.headers["x-bananagate-cost-usd"] == "0" for r in replayed)
    original = next(r for r in responses if "idempotent-replayed" not in r.headers)
    assert original.headers["x-bananagate-cost-usd"] == "0.039"
    assert {r.headers["x-bananagate-channel"] for r in responses} == {
        original.headers["x-bananagate-channel"]
    }

    rows = list(rig.store.ledger.rows(key_id=key_id))
    assert sorted(r.outcome for r in rows) == ["ok"] + ["replayed"] * 4
    assert sum(r.cost_nanos for r in rows) == PRICE
    assert {r.request_id for r in rows} == {r.headers["x-request-id"] for r in responses}
    (key,) = [k for k in rig.store.keys.list_keys() if k.id == key_id]
    assert key.spent_nanos == PRICE and key.reserved_nanos == 0

    # The budget is spent: a new key value is a new request, refused.
    with rig.client(secret) as client:
        again = client.post(GENERATE, content=body(), headers={"Idempotency-Key": new_key()})
        assert again.status_code == 429 and again.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
        # ...while the old key still replays its answer, at no cost.
        replay = client.post(
            GENERATE, content=body(), headers={"Idempotency-Key": headers["Idempotency-Key"]}
        )
    assert replay.status_code == 200 and replay.content == original.content
    assert rig.upstream_calls() == 1


def test_same_key_different_request_is_422_naming_the_header(fresh: Rig) -> None:
    _, secret = fresh.key()
    key = new_key()
    with fresh.client(secret) as client:
        assert client.post(GENERATE, content=body("one"), headers={"Idempotency-Key": key}).status_code == 200
        other = client.post(GENERATE, content=body("two"), headers={"Idempotency-Key": key})
        other_model = client.post(
            "/v1beta/models/gemini-3-pro-image-preview:generateContent",
            content=body("one"),
            headers={"Idempotency-Key": key},
        )
    assert other.status_code == 422 and other_model.status_code == 422
    error = other.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT" and "Idempotency-Key" in error["message"]
    assert error["details"][0]["fieldViolations"][0]["field"] == "Idempotency-Key"
    assert other.headers["content-type"].startswith("application/json")
    assert fresh.upstream_calls() == 1


def test_a_retryable_failure_is_not_kept_so_the_retry_is_served_anew(fresh: Rig) -> None:
    _, secret = fresh.key()
    for upstream in fresh.upstreams:
        upstream.set_default(google_error(503))
    key = new_key()
    with fresh.client(secret) as client:
        failed = client.post(GENERATE, content=body(), headers={"Idempotency-Key": key})
        assert failed.status_code == 503
        tried = fresh.upstream_calls()
        for upstream in fresh.upstreams:
            upstream.set_default(None)
        retried = client.post(GENERATE, content=body(), headers={"Idempotency-Key": key})
        assert retried.status_code == 200 and "idempotent-replayed" not in retried.headers
        assert fresh.upstream_calls() == tried + 1
        # Kept now: a third try is a replay.
        third = client.post(GENERATE, content=body(), headers={"Idempotency-Key": key})
    assert third.headers["idempotent-replayed"] == "true" and third.content == retried.content
    assert fresh.upstream_calls() == tried + 1


def test_a_client_error_from_upstream_is_kept(fresh: Rig) -> None:
    _, secret = fresh.key()
    fresh.a.set_default(google_error(400, "Request contains an invalid argument.", "INVALID_ARGUMENT"))
    fresh.b.set_default(google_error(400, "Request contains an invalid argument.", "INVALID_ARGUMENT"))
    key = new_key()
    with fresh.client(secret) as client:
        first = client.post(GENERATE, content=body(), headers={"Idempotency-Key": key})
        second = client.post(GENERATE, content=body(), headers={"Idempotency-Key": key})
    assert first.status_code == second.status_code == 400
    assert second.content == first.content and second.headers["idempotent-replayed"] == "true"
    assert fresh.upstream_calls() == 1


def test_openai_image_routes_replay_too(fresh: Rig) -> None:
    _, secret = fresh.key()
    key = new_key()
    payload = {"model": "gemini-2.5-flash-image", "prompt": "A lighthouse", "n": 2}
    with httpx.Client(base_url=fresh.gateway.url, timeout=30) as client:
        auth = {"Authorization": f"Bearer {secret}", "Idempotency-Key": key}
        first = client.post("/v1/images/generations", json=payload, headers=auth)
        second = client.post("/v1/images/generations", json=payload, headers=auth)
        changed = client.post("/v1/images/generations", json={**payload, "n": 1}, headers=auth)
        # Multipart: a new boundary on the retry is still the same request.
        png = fresh.a.image
        files = {"image": ("in.png", png, "image/png")}
        form = {"model": "gemini-2.5-flash-image", "prompt": "Add a hat"}
        edit_key = {"Authorization": f"Bearer {secret}", "Idempotency-Key": new_key()}
        edit = client.post("/v1/images/edits", data=form, files=files, headers=edit_key)
        edit_again = client.post("/v1/images/edits", data=form, files=files, headers=edit_key)
    assert first.status_code == 200 and len(first.json()["data"]) == 2
    assert second.content == first.content and second.headers["idempotent-replayed"] == "true"
    assert changed.status_code == 422 and changed.json()["error"]["message"].startswith(
        "This Idempotency-Key"
    )
    assert edit.status_code == 200 and edit_again.headers["idempotent-replayed"] == "true"
    assert edit_again.content == edit.content
    assert fresh.upstream_calls() == 3  # n=2, then one edit


def test_an_unusable_key_is_400(fresh: Rig) -> None:
    _, secret = fresh.key()
    with fresh.client(secret) as client:
        response = client.post(GENERATE, content=body(), headers={"Idempotency-Key": "x" * 300})
    assert response.status_code == 400 and "Idempotency-Key" in response.json()["error"]["message"]
    assert fresh.upstream_calls() == 0
