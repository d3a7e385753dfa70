"""Which upstream to try next for one request: the router's decisions, without any I/O.

* Order: highest priority first; among equal priorities a weighted random order (a channel of
  weight 3 comes first three times as often as one of weight 1).
* A channel gets `attempts_per_channel` tries: after a 5xx, timeout or connection error the same
  channel is retried after an exponential backoff with jitter (or the upstream's `RetryInfo`
  delay, when that is no longer than `backoff_max`); then the plan fails over to the next one.
* A 429 cools the key that got it for the upstream's `retryDelay`; the channel's next key is tried
  at once, or the next channel. A rejected key is set aside the same way, for longer.
* Channels whose circuit is open, or whose keys are all cooling, are skipped. When nothing is
  left, the plan waits for the soonest of them if that is within `max_cooldown_wait`.
* Budget: at most `max_attempts` tries, and none starts after `retry_window` seconds.
* Deadline: after the first try, none starts (and no wait begins) unless it can finish before
  the request's deadline, given how long a try on that channel is `expected` to take.
* Affinity: a `prefer`red channel (the one that produced the conversation's history) comes
  first whatever its priority; if it cannot serve, the plan fails over as usual.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from bananagate.config import RoutingConfig
from bananagate.server.upstream_health import Health

Outcome = Literal["ok", "client_error", "rate_limited", "key_rejected", "failed", "abandoned"]


class Candidate(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def priority(self) -> int: ...
    @property
    def weight(self) -> int: ...
    @property
    def key_ids(self) -> Sequence[str]: ...
    def has_capacity(self) -> bool: ...


# How often a call waiting for a channel at its `max_concurrent` looks again, in seconds.
BUSY_POLL = 0.05


@dataclass(frozen=True, slots=True)
class Try:
    channel: int  # index into the candidates
    key: int  # index into that channel's keys
    wait: float = 0.0  # sleep this long first (backoff)


@dataclass(frozen=True, slots=True)
class Wait:
    seconds: float


@dataclass(frozen=True, slots=True)
class GiveUp:
    # Why nothing could be tried, when no attempt was made at all (else the last error stands).
    reason: Literal["exhausted", "cooling", "circuit-open", "keys-rejected", "busy"]
    retry_after: float | None = None


def plan_order(candidates: Sequence[Candidate], rng: random.Random, prefer: int | None = None) -> list[int]:
    """Indices by priority (high first), weighted-shuffled within a priority (Efraimidis–Spirakis);
    `prefer` (an index) goes first whatever its priority."""

    def sort_key(index: int) -> tuple[bool, int, float]:
        weight = max(1, candidates[index].weight)
        return index != prefer, -candidates[index].priority, -(rng.random() ** (1.0 / weight))

    return sorted(range(len(candidates)), key=sort_key)


def backoff_delay(retry: int, policy: RoutingConfig, rng: random.Random) -> float:
    """Delay before the `retry`-th retry (1-based): half fixed, half jitter, capped."""
    ceiling = min(policy.backoff_max, policy.backoff_base * 2.0 ** (retry - 1))
    return float(ceiling / 2 + rng.uniform(0, ceiling / 2))


class AttemptPlan:
    """Feed it outcomes, ask it for the next step (see module docstring)."""

    def __init__(
        self,
        candidates: Sequence[Candidate],
        health: Health,
        policy: RoutingConfig,
        rng: random.Random,
        *,
        prefer: int | None = None,
        deadline: float | None = None,
        expected: Callable[[int], float] | None = None,
    ) -> None:
        self._candidates = candidates
        self._health = health
        self._policy = policy
        self._rng = rng
        self._clock = health.clock
        self._started = self._clock()
        self._order = plan_order(candidates, rng, prefer)
        self._deadline = deadline
        self._expected = expected or (lambda index: 0.0)
        self._tries = [0] * len(candidates)
        # After a failure with RetryInfo the channel is not retried before this (clock time).
        self._not_before = [0.0] * len(candidates)
        self.attempts = 0
        self._current: int | None = None
        self._last: Outcome | None = None
        self._retry_after: float | None = None

    # --- asking -------------------------------------------------------------------------------

    def next(self) -> Try | Wait | GiveUp:
        elapsed = self._clock() - self._started
        if self.attempts >= self._policy.max_attempts or (
            self.attempts and elapsed >= self._policy.retry_window
        ):
            return GiveUp("exhausted")
        stay = self._stay(elapsed)
        if stay is not None and self._fits(stay.channel, stay.wait):
            return self._begin(stay)
        for index in self._order:
            if self._tries[index] == 0 and self._fits(index) and (key := self._usable_key(index)) is not None:
                return self._begin(Try(index, key))
        now = self._clock()
        for index in self._order:  # channels left earlier that can be used again now
            ready = self._has_tries(index) and self._not_before[index] <= now and self._fits(index)
            if ready and (key := self._usable_key(index)) is not None:
                return self._begin(Try(index, key))
        return self._wait_or_give_up(elapsed)

    def _fits(self, index: int, wait: float = 0.0) -> bool:
        """Can a try on this channel, after `wait`, still finish before the deadline? The first
        try always may (the pipeline cuts it off at the deadline)."""
        if self._deadline is None or not self.attempts:
            return True
        return self._clock() + wait + self._expected(index) <= self._deadline

    def _stay(self, elapsed: float) -> Try | None:
        """Another try on the current channel, if its last outcome and budget allow one."""
        index = self._current
        if index is None or self._last not in ("failed", "rate_limited", "key_rejected"):
            return None
        if not self._has_tries(index):
            return None
        key = self._usable_key(index)
        if key is None:
            return None
        if self._last != "failed":
            return Try(index, key)  # another key of the same channel: no reason to wait
        delay = backoff_delay(self._tries[index], self._policy, self._rng)
        if self._retry_after is not None:
            if self._retry_after > self._policy.backoff_max:
                return None  # the upstream wants a long break: fail over instead
            delay = max(delay, self._retry_after)
        if elapsed + delay >= self._policy.retry_window:
            return None
        return Try(index, key, delay)

    def _has_tries(self, index: int) -> bool:
        return self._tries[index] < self._policy.attempts_per_channel

    def _usable_key(self, index: int) -> int | None:
        channel = self._candidates[index]
        if not channel.has_capacity() or not self._health.circuit(channel.name).allows():
            return None
        return self._health.pick_key(channel.name, channel.key_ids)

    def _wait_or_give_up(self, elapsed: float) -> Wait | GiveUp:
        waits: list[float] = []
        circuit_blocked = rate_limited = busy = False
        for index, channel in enumerate(self._candidates):
            if not self._has_tries(index):
                continue
            reopen = self._health.circuit(channel.name).reopens_in()
            circuit_blocked = circuit_blocked or reopen > 0
            rate_limited = rate_limited or not all(self._health.rejected(k) for k in channel.key_ids)
            backoff = self._not_before[index] - self._clock()
            wait = max(reopen, backoff, self._health.keys_ready_in(channel.key_ids))
            if not channel.has_capacity():
                busy = True
                wait = max(wait, BUSY_POLL)  # at its max_concurrent: look again shortly
            if math.isfinite(wait) and not self._fits(index, wait):
                continue  # waiting for it is pointless: it could not finish in time
            waits.append(wait)
        soonest = min(waits, default=math.inf)
        within = soonest <= self._policy.max_cooldown_wait and elapsed + soonest < self._policy.retry_window
        if math.isfinite(soonest) and within:
            return Wait(max(soonest, 0.001))
        if self.attempts:
            return GiveUp("exhausted")
        retry_after = soonest if math.isfinite(soonest) else None
        if circuit_blocked:
            return GiveUp("circuit-open", retry_after)
        if busy:
            return GiveUp("busy", BUSY_POLL)
        return GiveUp("cooling" if rate_limited else "keys-rejected", retry_after)

    def _begin(self, step: Try) -> Try:
        self._current = step.channel
        self._tries[step.channel] += 1
        self.attempts += 1
        self._health.circuit(self._candidates[step.channel].name).begin()
        return step

    # --- telling ------------------------------------------------------------------------------

    def record(self, step: Try, outcome: Outcome, retry_after: float | None = None) -> None:
        """What came of `step`."""
        channel = self._candidates[step.channel]
        circuit = self._health.circuit(channel.name)
        key_id = channel.key_ids[step.key]
        self._last, self._retry_after = outcome, retry_after
        if outcome in ("ok", "client_error"):
            circuit.succeeded()  # the upstream is healthy, whatever it thought of the request
        elif outcome == "failed":
            circuit.failed()
            self._not_before[step.channel] = self._clock() + (retry_after or 0.0)
        elif outcome == "rate_limited":
            circuit.abandoned()  # a quota says nothing about the channel's health
            self._health.cool(key_id, self._policy.default_cooldown if retry_after is None else retry_after)
        elif outcome == "key_rejected":
            circuit.abandoned()
            self._health.cool(key_id, self._policy.rejected_key_cooldown, rejected=True)
        else:
            circuit.abandoned()
