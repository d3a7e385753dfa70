"""Deadlines: `X-Server-Timeout` bounds the whole request (acceptance 3), and the router starts no
attempt that could not finish in time."""

from __future__ import annotations

import random
import time

import pytest

from bananagate.config import RoutingConfig
from bananagate.protocol.errors import ApiError
from bananagate.server.deadlines import AttemptTimes, parse_timeout
from bananagate.server.selection import AttemptPlan, GiveUp, Try
from bananagate.server.upstream_health import Health
from tests.guarantees.conftest import GENERATE, PRICE, Rig, body
from tests.upstreams import Reply, google_error


def test_server_timeout_cuts_a_slow_upstream_off_with_504(fresh: Rig) -> None:
    key_id, secret = fresh.key(budget_nanos=10 * PRICE)
    for upstream in fresh.upstreams:
        upstream.set_default(
            lambda request, up=upstream: Reply(200, up.normal_reply(request).body, delay=5.0)
        )  # type: ignore[misc]
    with fresh.client(secret) as client:
        began = time.monotonic()
        response = client.post(GENERATE, content=body(), headers={"X-Server-Timeout": "2"})
        took = time.monotonic() - began
    assert response.status_code == 504
    assert response.json()["error"]["status"] == "DEADLINE_EXCEEDED"
    assert 1.9 <= took < 3.5
    assert fresh.upstream_calls() == 1  # no retry, no failover after the deadline
    assert "upstream;dur=" in response.headers["server-timing"]
    (row,) = fresh.store.ledger.rows(key_id=key_id)
    assert row.status == 504 and row.cost_nanos == 0
    (key,) = [k for k in fresh.store.keys.list_keys() if k.id == key_id]
    assert key.reserved_nanos == 0 and key.spent_nanos == 0  # the reservation was released


def test_no_retry_starts_that_cannot_finish_before_the_deadline(fresh: Rig) -> None:
    _, secret = fresh.key()
    for upstream in fresh.upstreams:
        upstream.set_default(google_error(503))
    with fresh.client(secret) as client:
        unbounded = client.post(GENERATE, content=body())
        assert unbounded.status_code == 503 and unbounded.headers["x-bananagate-attempts"] == "4"
        fresh.a.requests.clear()
        fresh.b.requests.clear()
        # Every attempt is assumed to need at least `min_attempt_time` (1 s): after the first
        # one fails, less than that is left, so the client gets the failure at once.
        began = time.monotonic()
        bounded = client.post(GENERATE, content=body(), headers={"X-Server-Timeout": "1"})
        took = time.monotonic() - began
    assert bounded.status_code == 503 and bounded.headers["x-bananagate-attempts"] == "1"
    assert fresh.upstream_calls() == 1 and took < 0.9


def test_timeout_header_must_be_a_positive_number(fresh: Rig) -> None:
    _, secret = fresh.key()
    with fresh.client(secret) as client:
        response = client.post(GENERATE, content=body(), headers={"X-Server-Timeout": "soon"})
    assert response.status_code == 400 and "X-Server-Timeout" in response.json()["error"]["message"]
    assert parse_timeout("2") == 2.0 and parse_timeout(" 1.5 ") == 1.5
    for bad in ("0", "-1", "nan", "inf", ""):
        with pytest.raises(ApiError):
            parse_timeout(bad)


class _Channel:
    def __init__(self, name: str) -> None:
        self.name, self.priority, self.weight, self.key_ids = name, 0, 1, [f"{name}:0"]

    def has_capacity(self) -> bool:
        return True


def _plan(deadline: float | None, expected: float, clock: list[float]) -> AttemptPlan:
    policy = RoutingConfig(backoff_base=0.5, backoff_max=0.5)
    health = Health(policy, lambda: clock[0])
    return AttemptPlan(
        [_Channel("a"), _Channel("b")],
        health,
        policy,
        random.Random(1),
        deadline=deadline,
        expected=lambda index: expected,
    )


def test_plan_skips_attempts_that_would_end_after_the_deadline() -> None:
    clock = [100.0]
    plan = _plan(deadline=104.0, expected=3.0, clock=clock)
    first = plan.next()
    assert isinstance(first, Try)  # the first attempt always starts
    clock[0] += 1.5
    plan.record(first, "failed")
    # 2.5 s left; a retry (0.25-0.5 s backoff) or a failover would need 3 s: give up now.
    assert isinstance(plan.next(), GiveUp)

    clock = [100.0]
    roomy = _plan(deadline=110.0, expected=3.0, clock=clock)
    step = roomy.next()
    assert isinstance(step, Try)
    clock[0] += 1.5
    roomy.record(step, "failed")
    assert isinstance(roomy.next(), Try)  # 8.5 s left: the retry fits

    clock = [100.0]
    unbounded = _plan(deadline=None, expected=3.0, clock=clock)
    step = unbounded.next()
    assert isinstance(step, Try)
    unbounded.record(step, "failed")
    assert isinstance(unbounded.next(), Try)


def test_attempt_times_learn_per_channel_with_a_floor() -> None:
    times = AttemptTimes(floor=1.0)
    assert times.expected("a", "generateContent") == 1.0
    times.observe("a", "generateContent", 10.0)
    assert times.expected("a", "generateContent") == 10.0
    times.observe("a", "generateContent", 0.0)
    assert times.expected("a", "generateContent") == pytest.approx(7.0)
    assert times.expected("b", "generateContent") == 1.0
    assert times.expected("a", "streamGenerateContent") == 1.0
