"""Metering for job runs: the pipeline's `Meter`, with the budget already held at submit.

A job goes through the same `Pipeline` as a synchronous request (routing, settle into the
ledger, gallery), with this meter in place of `GatewayMeter`'s `reserve`:

* the budget hold is the one taken at submit (a reservation whose id is the job id), so nothing
  is held twice and the hold survives the job waiting in the queue or a worker crash;
* rate, concurrency and daily-image limits are taken from the shared limiter as for any call,
  but a refusal does not fail the job: `JobDeferred` puts it back in the queue for later;
* the settle is `MeteredReservation.settle` unchanged, keyed on the request id `job-<id>`: the
  ledger's unique request id is what makes a job retried after a crash charged once;
* a failed attempt writes nothing yet: the worker either retries the job or ends it, and the
  ending writes the ledger row and releases the hold in the job's own transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import anyio
import anyio.to_thread

from bananagate.protocol.errors import ApiError
from bananagate.protocol.scan import Bytes
from bananagate.providers.base import Call, LimitState
from bananagate.server.auth import Principal
from bananagate.server.limits import Admission, LimitExceeded
from bananagate.server.metering import (
    GatewayMeter,
    MeteredReservation,
    budget_exhausted,
    expected_images,
    model_denied,
    token_bounds,
)
from bananagate.store import Hold, JobRecord, Store

# A key at its rate limit without a stated delay is tried again after this long (seconds).
DEFAULT_DEFER = 1.0


class JobDeferred(Exception):
    """A key limit says "not now": the job goes back to the queue for `retry_after` seconds."""

    def __init__(self, retry_after: float, reason: str) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def max_cost(meter: GatewayMeter, call: Call) -> int:
    """The most `call` can cost under the meter's prices (what a budget hold must cover)."""
    input_tokens, output_tokens = token_bounds(call)
    return meter.prices.max_cost(
        call.model,
        images=expected_images(call),
        image_size=call.request.image_size,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
    )


def check_model(meter: GatewayMeter, call: Call, principal: Principal) -> None:
    """403 when the key may not use the call's model (checked at submit and at run)."""
    models = principal.limits.models
    if models and call.model.id not in models and call.model_id not in models:
        meter._rejected("model")
        raise model_denied(call.model_id)


class JobReservation:
    """The pipeline's reservation for one job run (see the module docstring)."""

    def __init__(self, inner: MeteredReservation) -> None:
        self.inner = inner
        self.cost: int | None = None

    def observe(self, event: bytes) -> None:
        self.inner.observe(event)

    async def settle(self, answer_body: Bytes | None = None) -> int | None:
        self.cost = await self.inner.settle(answer_body)
        return self.cost

    def limit_state(self, cost_nanos: int | None = None) -> LimitState | None:
        return None  # a job run reports no limits: its answer reaches the client as a job result

    async def release(self, reason: str, *, status: int | None = None) -> None:
        # Whether this attempt was the job's last is the worker's decision; until then only the
        # limiter's slot is given back, and no ledger row is written.
        self.inner.done = True
        admission: Admission | None = self.inner.admission
        self.inner.admission = None
        if admission is not None:
            with anyio.CancelScope(shield=True):
                await self.inner.meter.limiter.finish(admission, 0)


@dataclass(slots=True)
class JobTicket:
    """What the worker tells the meter about a job before running it."""

    job: JobRecord
    reservation: JobReservation | None = None

    @property
    def cost(self) -> int | None:
        return None if self.reservation is None else self.reservation.cost


class JobMeter:
    """`Meter` for the job pipeline: `expect(job)` before the run, `forget` after."""

    def __init__(self, meter: GatewayMeter, store: Callable[[], Store], *, hold_ttl: float) -> None:
        self.meter = meter
        self._store = store
        self.hold_ttl = hold_ttl
        self._tickets: dict[str, JobTicket] = {}

    def expect(self, job: JobRecord) -> JobTicket:
        ticket = JobTicket(job)
        self._tickets[job.request_id] = ticket
        return ticket

    def forget(self, job: JobRecord) -> None:
        self._tickets.pop(job.request_id, None)

    async def reserve(self, call: Call, principal: Principal) -> JobReservation:
        ticket = self._tickets[call.request_id]
        job, limits = ticket.job, principal.limits
        check_model(self.meter, call, principal)
        hold: Hold | None = None
        if job.hold_nanos:
            hold = Hold(job.id, job.key_id, job.hold_nanos)
        elif limits.budget_nanos is not None:
            # Queued before the key had a budget: hold it now, with the job's long-lived hold.
            amount = max_cost(self.meter, call)
            try:
                with anyio.CancelScope(shield=True):
                    held = await anyio.to_thread.run_sync(
                        self._store().jobs.add_hold, job.id, job.key_id, amount, self.hold_ttl
                    )
            except Exception as exc:
                raise ApiError(503, f"The usage store is unavailable: {exc}", "UNAVAILABLE") from None
            if not held:
                self.meter._rejected("budget")
                raise budget_exhausted()
            hold = Hold(job.id, job.key_id, amount)
        admission: Admission | None = None
        if limits.limited_rate:
            try:
                admission = await self.meter.limiter.acquire(principal.key_id, limits, expected_images(call))
            except LimitExceeded as exc:
                raise JobDeferred(exc.retry_after or DEFAULT_DEFER, exc.message) from None
        reservation = JobReservation(MeteredReservation(self.meter, call, principal, admission, hold))
        ticket.reservation = reservation
        return reservation
