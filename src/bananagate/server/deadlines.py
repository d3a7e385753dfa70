"""Request deadlines: how long the client will wait, and what may still start before then.

A request's deadline is the client's own, sent as `X-Server-Timeout: <seconds>` (the header the
`google-genai` SDK derives from `http_options.timeout`; OpenAI's SDKs send theirs as
`X-Stainless-Timeout`), else the server's default. The pipeline cuts the call off when it
passes (504 `DEADLINE_EXCEEDED`, reservation released), and the router starts no retry or
failover attempt that cannot finish before it: `AttemptTimes` remembers how long attempts on
each channel usually take, so a retry that would be cut off anyway is not sent at all.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import anyio
from starlette.requests import Request

from bananagate.protocol.errors import ApiError, FieldViolation, invalid_argument

TIMEOUT_HEADERS = ("x-server-timeout", "x-stainless-timeout")
DEADLINE_STATE = "deadline"
# Weight of the newest sample in a channel's running mean of attempt durations.
EWMA_WEIGHT = 0.3

Clock = Callable[[], float]


def deadline_exceeded() -> ApiError:
    return ApiError(504, "The request did not complete within its deadline.", "DEADLINE_EXCEEDED")


def parse_timeout(value: str, header: str = "X-Server-Timeout") -> float:
    """Seconds from a timeout header; a 400 naming the header when it is not a positive number."""
    try:
        seconds = float(value.strip())
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        message = f"Invalid {header} header {value[:40]!r}: expected a positive number of seconds."
        raise invalid_argument(message, [FieldViolation(header, message)])
    return seconds


def request_deadline(
    request: Request, default_seconds: float | None, clock: Clock = time.monotonic
) -> float | None:
    """The monotonic time by which `request` must be answered (None: no deadline at all).

    Computed once per request, at its first call (the route's entry), and kept in the request's
    state so every call it fans out to shares it.
    """
    state = request.scope.setdefault("state", {})
    if DEADLINE_STATE in state:
        cached: float | None = state[DEADLINE_STATE]
        return cached
    seconds = default_seconds if default_seconds and default_seconds > 0 else None
    for header in TIMEOUT_HEADERS:
        raw = request.headers.get(header)
        if raw is not None:
            seconds = parse_timeout(raw, "X-Server-Timeout" if header == "x-server-timeout" else header)
            break
    deadline = None if seconds is None else clock() + seconds
    state[DEADLINE_STATE] = deadline
    return deadline


def remaining(deadline: float | None, clock: Clock = time.monotonic) -> float:
    """Seconds left before `deadline` (infinite without one, never negative)."""
    return math.inf if deadline is None else max(0.0, deadline - clock())


@contextmanager
def bounded_by(deadline: float | None) -> Iterator[None]:
    """Cancel the block when `deadline` passes, raising the 504 the client gets.

    Must not span a `yield` of an async generator (the scope belongs to one task): callers
    wrap each step of a stream instead.
    """
    if deadline is None:
        yield
        return
    left = remaining(deadline)
    if left <= 0:
        raise deadline_exceeded()
    try:
        with anyio.fail_after(left):
            yield
    except TimeoutError:
        raise deadline_exceeded() from None


class AttemptTimes:
    """How long one attempt on a channel usually takes: a running mean of successful attempts,
    per channel and method (a stream's attempt ends with its first event), never below `floor`
    (the minimum any attempt is assumed to need, also used before a channel has a history)."""

    def __init__(self, floor: float) -> None:
        self.floor = floor
        self._mean: dict[tuple[str, str], float] = {}

    def observe(self, channel: str, method: str, seconds: float) -> None:
        key = (channel, method)
        old = self._mean.get(key)
        self._mean[key] = seconds if old is None else old + EWMA_WEIGHT * (seconds - old)

    def expected(self, channel: str, method: str) -> float:
        return max(self.floor, self._mean.get((channel, method), 0.0))
