"""The router's decisions without any I/O: order, backoff, cooldowns, circuits, the attempt plan."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

import pytest

from bananagate.config import RoutingConfig
from bananagate.server.selection import AttemptPlan, GiveUp, Try, Wait, backoff_delay, plan_order
from bananagate.server.upstream_health import Circuit, Health


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Chan:
    name: str
    priority: int = 0
    weight: int = 1
    key_ids: list[str] = field(default_factory=list)

    full: bool = False

    def __post_init__(self) -> None:
        self.key_ids = self.key_ids or [f"{self.name}:k1"]

    def has_capacity(self) -> bool:
        return not self.full


POLICY = RoutingConfig(backoff_base=0.5, backoff_max=8, circuit_failures=3, circuit_cooloff=30)


def plan(
    channels: list[Chan], clock: FakeClock, health: Health | None = None, **policy: object
) -> AttemptPlan:
    routing = POLICY.model_copy(update=policy)
    return AttemptPlan(channels, health or Health(routing, clock), routing, random.Random(7))


def test_priority_first_then_weighted_shuffle() -> None:
    channels = [Chan("low", priority=0), Chan("a", priority=5, weight=3), Chan("b", priority=5, weight=1)]
    rng = random.Random(1)
    firsts = Counter(channels[plan_order(channels, rng)[0]].name for _ in range(4000))
    lasts = Counter(channels[plan_order(channels, rng)[-1]].name for _ in range(200))
    assert lasts == {"low": 200}
    assert set(firsts) == {"a", "b"}
    assert 0.72 < firsts["a"] / 4000 < 0.78  # weight 3 of 4


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    rng = random.Random(3)
    for retry, (low, high) in {1: (0.25, 0.5), 2: (0.5, 1.0), 3: (1.0, 2.0), 10: (4.0, 8.0)}.items():
        delays = [backoff_delay(retry, POLICY, rng) for _ in range(200)]
        assert low <= min(delays) and max(delays) <= high


def test_circuit_opens_half_opens_and_closes() -> None:
    clock = FakeClock()
    circuit = Circuit(failures_to_open=2, cooloff=10, clock=clock)
    circuit.failed()
    assert circuit.state == "closed" and circuit.allows()
    circuit.failed()
    assert circuit.state == "open" and not circuit.allows() and circuit.reopens_in() == 10
    clock.advance(10)
    assert circuit.state == "half-open" and circuit.allows()
    circuit.begin()  # the one trial request
    assert not circuit.allows()
    circuit.failed()  # trial failed: open again for a full cool-off
    assert circuit.state == "open" and circuit.reopens_in() == 10
    clock.advance(10)
    circuit.begin()
    circuit.abandoned()  # a cancelled trial lets the next request be the trial
    assert circuit.allows()
    circuit.begin()
    circuit.succeeded()
    assert circuit.state == "closed" and circuit.failures == 0


def test_key_cooldowns_and_round_robin() -> None:
    clock = FakeClock()
    health = Health(POLICY, clock)
    keys = ["k1", "k2", "k3"]
    assert [health.pick_key("c", keys) for _ in range(4)] == [0, 1, 2, 0]
    health.cool("k2", 2.0)
    assert [health.pick_key("c", keys) for _ in range(3)] == [2, 0, 2]
    health.cool("k1", 5.0)
    health.cool("k3", 1.0)
    assert health.pick_key("c", keys) is None
    assert health.keys_ready_in(keys) == 1.0
    clock.advance(2.0)
    assert health.pick_key("c", keys) in (1, 2)


def test_plan_retries_a_channel_with_backoff_then_fails_over() -> None:
    clock = FakeClock()
    attempt = plan([Chan("a", priority=1), Chan("b")], clock)
    first = attempt.next()
    assert first == Try(0, 0, 0.0)
    attempt.record(first, "failed")
    second = attempt.next()
    assert isinstance(second, Try) and second.channel == 0 and 0.25 <= second.wait <= 0.5
    attempt.record(second, "failed")
    third = attempt.next()
    assert third == Try(1, 0, 0.0) and attempt.attempts == 3  # failover is immediate


def test_plan_honours_retry_info_or_moves_on() -> None:
    clock = FakeClock()
    attempt = plan([Chan("a", priority=1), Chan("b")], clock)
    step = attempt.next()
    assert isinstance(step, Try)
    attempt.record(step, "failed", retry_after=3.0)
    again = attempt.next()
    assert isinstance(again, Try) and again.channel == 0 and again.wait == 3.0
    attempt.record(again, "failed", retry_after=60.0)  # longer than backoff_max: don't wait, go
    assert attempt.next() == Try(1, 0, 0.0)


def test_a_429_tries_the_next_key_at_once_and_cools_the_limited_one() -> None:
    clock = FakeClock()
    health = Health(POLICY, clock)
    channel = Chan("a", key_ids=["a:1", "a:2"])
    attempt = plan([channel], clock, health)
    step = attempt.next()
    assert isinstance(step, Try)
    attempt.record(step, "rate_limited", retry_after=2.0)
    other = attempt.next()
    assert isinstance(other, Try) and other.key != step.key and other.wait == 0
    assert health.cooling_for(channel.key_ids[step.key]) == 2.0
    assert health.circuit("a").failures == 0  # quotas say nothing about health


def test_all_keys_cooling_waits_if_short_else_gives_up_with_the_delay() -> None:
    clock = FakeClock()
    health = Health(POLICY, clock)
    health.cool("a:k1", 3.0)
    assert plan([Chan("a")], clock, health).next() == Wait(3.0)
    health.cool("a:k1", 30.0)
    assert plan([Chan("a")], clock, health).next() == GiveUp("cooling", 30.0)
    health.cool("b:k1", 300.0, rejected=True)
    assert plan([Chan("b")], clock, health).next() == GiveUp("keys-rejected", 300.0)


def test_open_circuits_are_skipped_and_reported() -> None:
    clock = FakeClock()
    health = Health(POLICY, clock)
    for _ in range(3):
        health.circuit("a").failed()
    assert plan([Chan("a", priority=1), Chan("b")], clock, health).next() == Try(1, 0, 0.0)
    assert plan([Chan("a")], clock, health).next() == GiveUp("circuit-open", 30.0)
    clock.advance(30)
    assert plan([Chan("a")], clock, health).next() == Try(0, 0, 0.0)  # the half-open trial


@pytest.mark.parametrize("outcome", ["ok", "client_error"])
def test_answers_close_the_circuit(outcome: str) -> None:
    clock = FakeClock()
    health = Health(POLICY, clock)
    health.circuit("a").failed()
    attempt = plan([Chan("a")], clock, health)
    step = attempt.next()
    assert isinstance(step, Try)
    attempt.record(step, outcome)  # type: ignore[arg-type]
    assert health.circuit("a").failures == 0


def test_budget_bounds_attempts_and_time() -> None:
    clock = FakeClock()
    attempt = plan([Chan(f"c{i}") for i in range(10)], clock, max_attempts=3)
    for _ in range(3):
        step = attempt.next()
        assert isinstance(step, Try)
        attempt.record(step, "failed")
    assert attempt.next() == GiveUp("exhausted")
    attempt = plan([Chan("a"), Chan("b")], clock, retry_window=5)
    step = attempt.next()
    assert isinstance(step, Try)
    clock.advance(6)  # the first attempt took longer than the window
    attempt.record(step, "failed")
    assert attempt.next() == GiveUp("exhausted")


def test_a_channel_at_its_max_concurrent_is_skipped_then_waited_for() -> None:
    from bananagate.server.selection import BUSY_POLL

    clock = FakeClock()
    health = Health(POLICY, clock)
    # The preferred channel is full: the other one serves.
    assert plan([Chan("a", priority=1, full=True), Chan("b")], clock, health).next() == Try(1, 0, 0.0)
    # Everything full: wait a moment and look again, rather than fail.
    waiting = plan([Chan("a", full=True)], clock, health)
    assert waiting.next() == Wait(BUSY_POLL)
    # ...but not past the retry window.
    clock.advance(POLICY.retry_window + 1)
    assert waiting.next() == GiveUp("busy", BUSY_POLL)
