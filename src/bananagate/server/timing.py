"""The headers every answer carries about how it was served.

* `Server-Timing: gateway;dur=1.2, upstream;dur=830.5` (milliseconds): the gateway's own work,
  and the time spent waiting on upstream attempts; `backoff` (sleeping between attempts) and
  `idempotency` (waiting for a duplicate request in flight) appear when they happened.
* `x-bananagate-channel`, `x-bananagate-attempts`, `x-bananagate-affinity`: how it was routed.
* `x-bananagate-cost-usd`: what this request was charged (not on streams: their charge is only
  known at the end).
* `x-ratelimit-limit-requests`, `x-ratelimit-remaining-requests`, `x-ratelimit-reset-requests`
  and `x-bananagate-budget-remaining-usd`: the key's state after this request, in the names
  OpenAI's API uses (LiteLLM and others read them), only for keys that have those limits.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from starlette.requests import Request

from bananagate.protocol.pricing import format_usd
from bananagate.providers.base import Call

SERVER_TIMING = "server-timing"
COST_HEADER = "x-bananagate-cost-usd"


class Timing:
    """When the request arrived, and how long it waited on other requests (not its own work)."""

    __slots__ = ("started", "waited")

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.waited = 0.0

    def header(self, calls: Sequence[Call] = ()) -> str:
        """The `Server-Timing` value as of now. Fanned-out calls run in parallel, so the upstream
        time is the longest of them."""
        total = time.perf_counter() - self.started
        upstream = max((c.upstream_seconds for c in calls), default=0.0)
        backoff = max((c.backoff_seconds for c in calls), default=0.0)
        gateway = max(0.0, total - upstream - backoff - self.waited)
        entries = [f"gateway;dur={gateway * 1000:.1f}", f"upstream;dur={upstream * 1000:.1f}"]
        if backoff:
            entries.append(f"backoff;dur={backoff * 1000:.1f}")
        if self.waited:
            entries.append(f"idempotency;dur={self.waited * 1000:.1f}")
        return ", ".join(entries)


def timing_of(request: Request) -> Timing:
    """The request's Timing, started at the first call (the route's entry)."""
    state = request.scope.setdefault("state", {})
    timing = state.get("timing")
    if not isinstance(timing, Timing):
        timing = state["timing"] = Timing()
    return timing


def format_reset(seconds: float) -> str:
    """A duration the way OpenAI writes `x-ratelimit-reset-*`: `250ms`, `12.5s`, `1m0s`."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest}s"


def answer_headers(calls: Sequence[Call]) -> dict[str, str]:
    """Routing, cost and limit headers for an answer made of `calls` (one, or a fan-out)."""
    headers = {"x-bananagate-attempts": str(sum(max(c.attempts, 1) for c in calls))}
    channels = sorted({c.channel for c in calls if c.channel})
    if channels:
        headers["x-bananagate-channel"] = ",".join(channels)
    affinity = {c.affinity for c in calls if c.affinity}
    if affinity:
        headers["x-bananagate-affinity"] = "broken" if "broken" in affinity else "kept"
    costs = [c.cost_nanos for c in calls if c.cost_nanos is not None]
    if costs:
        headers[COST_HEADER] = format_usd(sum(costs))
    states = [c.limits for c in calls if c.limits is not None]
    rpm = [s for s in states if s.rpm_limit is not None and s.rpm_remaining is not None]
    if rpm:
        # The tightest state among the calls: each of them took a request from the window.
        last = min(rpm, key=lambda s: s.rpm_remaining or 0)
        headers["x-ratelimit-limit-requests"] = str(last.rpm_limit)
        headers["x-ratelimit-remaining-requests"] = str(max(0, last.rpm_remaining or 0))
        headers["x-ratelimit-reset-requests"] = format_reset(last.rpm_reset_seconds or 0.0)
    budgets = [s.budget_remaining_nanos for s in states if s.budget_remaining_nanos is not None]
    if budgets:
        headers["x-bananagate-budget-remaining-usd"] = format_usd(max(0, min(budgets)))
    return headers
