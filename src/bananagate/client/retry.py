"""When to try again and how long to wait: pure decisions, shared by the sync and async clients.

The clients own the loop and the sleeping; `RetryState` only answers "retry after N seconds?"
for each failed attempt, so both clients behave identically and tests can drive it with a fake
clock.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

# 408 and 429 are "come back later"; 5xx are the server's fault (501 means it never will work).
DEFAULT_RETRY_STATUSES: frozenset[int] = frozenset({408, 429} | (set(range(500, 600)) - {501}))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter.

    `max_attempts` counts every try (1 = never retry); `max_elapsed` caps the whole call,
    waiting included, in seconds (None = no cap). The wait before retry n is
    `min(max_delay, initial_delay * multiplier**(n-1))`, shortened by up to `jitter` of itself at
    random so many clients do not retry in lockstep, and never shorter than what the server asked
    for (`RetryInfo.retryDelay` or `Retry-After`).
    """

    max_attempts: int = 4
    initial_delay: float = 1.0
    multiplier: float = 2.0
    max_delay: float = 30.0
    jitter: float = 0.25
    max_elapsed: float | None = 600.0
    retry_statuses: frozenset[int] = DEFAULT_RETRY_STATUSES
    retry_timeouts: bool = True
    retry_connection_errors: bool = True

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be between 0 and 1")

    @classmethod
    def none(cls) -> RetryPolicy:
        """Exactly one attempt."""
        return cls(max_attempts=1)

    def backoff(self, retry_number: int, rand: float) -> float:
        """The jittered wait before retry `retry_number` (1-based), `rand` in [0, 1)."""
        base = min(self.max_delay, self.initial_delay * self.multiplier ** (retry_number - 1))
        return base * (1.0 - self.jitter * rand)


def is_retryable_exception(exc: BaseException, policy: RetryPolicy) -> bool:
    """Timeouts and dropped or refused connections; never local mistakes (bad URL, ...)."""
    if isinstance(exc, httpx.TimeoutException):
        return policy.retry_timeouts
    if isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError):
        return policy.retry_connection_errors
    return False


class RetryState:
    """One call's progress through its policy. Call `start_attempt` before each try."""

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.policy = policy
        self.attempts = 0
        self._clock = clock
        self._rand = rand
        self._started = clock()

    def start_attempt(self) -> None:
        self.attempts += 1

    @property
    def elapsed(self) -> float:
        return self._clock() - self._started

    def delay_after_status(self, status: int, retry_after: float | None = None) -> float | None:
        """Seconds to wait before retrying an HTTP error answer, or None to give up."""
        if status not in self.policy.retry_statuses:
            return None
        return self._next_delay(retry_after)

    def delay_after_exception(self, exc: BaseException) -> float | None:
        """Seconds to wait before retrying after a transport failure, or None to give up."""
        if not is_retryable_exception(exc, self.policy):
            return None
        return self._next_delay(None)

    def _next_delay(self, retry_after: float | None) -> float | None:
        if self.attempts >= self.policy.max_attempts:
            return None
        delay = self.policy.backoff(self.attempts, self._rand())
        if retry_after is not None:
            delay = max(delay, retry_after)
        cap = self.policy.max_elapsed
        # Give up now rather than sleep past the budget only to be cut off mid-request.
        if cap is not None and self.elapsed + delay > cap:
            return None
        return delay
