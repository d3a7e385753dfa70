"""One request's way through the gateway once it is authenticated and validated:
meter (reserve) -> router (channels, retries, failover) -> meter (settle) -> image sink (gallery).

Routes call only this; metering and routing each live in their own module behind it. Around
them it enforces the request's deadline (504 `DEADLINE_EXCEEDED`, the reservation released),
applies conversation affinity on routes with several channels, and leaves on the `Call` what
the answer's headers report (cost, the key's limits).
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncGenerator, Sequence
from typing import Protocol, runtime_checkable

import anyio

from bananagate.protocol.errors import ApiError
from bananagate.protocol.pricing import format_usd
from bananagate.protocol.scan import Bytes, scan_finish_reason
from bananagate.providers.base import Answer, Call, LimitState, UpstreamError, UpstreamTimeout
from bananagate.server.affinity import Affinity, answer_digests
from bananagate.server.auth import Principal
from bananagate.server.deadlines import bounded_by
from bananagate.server.routing import ModelRouter
from bananagate.server.timing import COST_HEADER as COST_HEADER  # re-exported: the console reads it


class Reservation(Protocol):
    """Money and limits held for one call until it is settled or released (at most once)."""

    def observe(self, event: bytes) -> None:
        """A streamed event passed to the client (in order); settle then charges what they held."""
        ...

    async def settle(self, answer_body: Bytes | None = None) -> int | None:
        """Charge the answer body (or the observed stream); the nano-dollars charged, None if unmetered."""
        ...

    async def release(self, reason: str, *, status: int | None = None) -> None: ...

    def limit_state(self, cost_nanos: int | None = None) -> LimitState | None:
        """What the key has left (for the `x-ratelimit-*` headers); None when nothing is limited."""
        ...


@runtime_checkable
class SettlesPartially(Protocol):
    """A reservation that can charge what a stream delivered before it broke off."""

    async def settle_partial(self, status: int) -> int | None: ...


class Meter(Protocol):
    """Admission and accounting. `reserve` raises ApiError (429/403) when the call may not run."""

    async def reserve(self, call: Call, principal: Principal) -> Reservation: ...


class ImageSink(Protocol):
    """Keeps the images of settled answers (the console's gallery).

    `submit` must return at once: the sink decodes Base64 and writes files off the event loop,
    after the client has its answer. `bodies` is the answer body, or a stream's events in order.
    """

    def submit(
        self,
        call: Call,
        principal: Principal,
        bodies: Sequence[Bytes],
        cost_nanos: int | None,
        latency_ms: int,
    ) -> None: ...

    async def room(self, bodies: Sequence[Bytes]) -> None:
        """Wait, without blocking the event loop, until `bodies` fit the sink's bounded backlog:
        backpressure on the requests that produce images faster than they are written."""
        ...


class _NoReservation:
    def observe(self, event: bytes) -> None:
        return None

    async def settle(self, answer_body: Bytes | None = None) -> int | None:
        return None

    async def release(self, reason: str, *, status: int | None = None) -> None:
        return None

    def limit_state(self, cost_nanos: int | None = None) -> LimitState | None:
        return None


class NullMeter:
    """No limits, no ledger: the default until metering is configured."""

    async def reserve(self, call: Call, principal: Principal) -> Reservation:
        return _NoReservation()


def failure_status(exc: BaseException) -> int:
    """The HTTP status the client sees for a failed call (for the ledger)."""
    if isinstance(exc, UpstreamError):
        return exc.error.code
    if isinstance(exc, ApiError):
        return exc.code
    if isinstance(exc, UpstreamTimeout):
        return 504
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        return 499
    return 500


class Pipeline:
    def __init__(
        self,
        router: ModelRouter,
        meter: Meter | None = None,
        images: ImageSink | None = None,
        *,
        affinity: Affinity | None = None,
        deadline_seconds: float | None = None,
    ) -> None:
        self.router = router
        self.meter: Meter = meter or NullMeter()
        self.images = images
        self.affinity = affinity
        # The deadline of requests whose client sends none (server/deadlines.py).
        self.deadline_seconds = deadline_seconds

    def with_images(self, images: ImageSink | None) -> Pipeline:
        """The same pipeline (router, meter, affinity, deadline) keeping images in `images`."""
        twin = copy.copy(self)
        twin.images = images
        return twin

    def _affine(self, call: Call) -> bool:
        """Affinity matters only where there is a choice of channel."""
        return self.affinity is not None and self.router.channel_count(call.model_id) > 1

    async def _keep(
        self, call: Call, principal: Principal, bodies: Sequence[Bytes], cost: int | None, started: float
    ) -> None:
        if self.images is not None:
            await self.images.room(bodies)
            # No await between `room` and `submit`: the room found is still there.
            self.images.submit(call, principal, bodies, cost, int((time.monotonic() - started) * 1000))

    async def generate(self, call: Call, principal: Principal) -> Answer:
        started = time.monotonic()
        affine = self._affine(call)
        if affine and self.affinity is not None:
            await self.affinity.prefer(call)
        reservation = await self.meter.reserve(call, principal)
        try:
            with bounded_by(call.deadline):
                answer = await self.router.generate(call)
        except BaseException as exc:
            # Shielded: under anyio a cancelled task would otherwise be cancelled again here.
            with anyio.CancelScope(shield=True):
                reason = "cancelled" if isinstance(exc, asyncio.CancelledError) else "failed"
                await reservation.release(reason, status=failure_status(exc))
            raise
        # Recorded before the client sees a byte: a delivered answer always has its ledger row.
        cost = await reservation.settle(answer.body)
        if cost is not None:
            answer.headers[COST_HEADER] = format_usd(cost)
        call.cost_nanos = cost
        call.limits = reservation.limit_state(cost)
        if affine and self.affinity is not None:
            await self.affinity.remember(call, answer_digests(answer.body))
        await self._keep(call, principal, [answer.body], cost, started)
        return answer

    async def stream(self, call: Call, principal: Principal) -> AsyncGenerator[bytes, None]:
        """Events of a streamed call. The event that carries `finishReason` (the last one) is held
        back until the call is settled, so a client that got the whole stream was recorded.

        Other events count as delivered once the client asked for the next one (it has this one),
        so a stream that breaks off (upstream failure, deadline, client gone) is charged for the
        images the client fully received, and nothing when it received none."""
        started = time.monotonic()
        affine = self._affine(call)
        if affine and self.affinity is not None:
            await self.affinity.prefer(call)
        reservation = await self.meter.reserve(call, principal)
        call.limits = reservation.limit_state()
        settled = False
        delivered = 0
        failure: BaseException | None = None
        digests: list[str] = []
        # Only with an image sink: the events (references, no copies) until the call is settled.
        kept: list[bytes] | None = [] if self.images is not None else None
        events = self.router.stream(call)
        try:
            while True:
                try:
                    # Each step bounded on its own: a deadline scope must not span a yield.
                    with bounded_by(call.deadline):
                        event = await events.__anext__()
                except StopAsyncIteration:
                    break
                if affine:
                    digests.extend(answer_digests(event))
                if kept is not None and not settled:
                    kept.append(event)
                if not settled and scan_finish_reason(event) is not None:
                    reservation.observe(event)
                    if affine and self.affinity is not None:
                        await self.affinity.remember(call, digests)
                    cost = await reservation.settle()
                    call.cost_nanos, settled = cost, True
                    await self._keep(call, principal, kept or [], cost, started)
                    yield event
                    continue
                yield event
                reservation.observe(event)
                delivered += 1
        except BaseException as exc:
            failure = exc
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await events.aclose()  # the upstream side closes at once, even when cancelled
                if not settled:
                    await self._end_stream(call, principal, reservation, failure, delivered, kept, started)

    async def _end_stream(
        self,
        call: Call,
        principal: Principal,
        reservation: Reservation,
        failure: BaseException | None,
        delivered: int,
        kept: list[bytes] | None,
        started: float,
    ) -> None:
        """Record a stream that ended without its final event being settled."""
        if failure is None:
            cost = await reservation.settle()
            await self._keep(call, principal, kept or [], cost, started)
            return
        cancelled = isinstance(failure, (GeneratorExit, asyncio.CancelledError))
        status = 499 if cancelled else failure_status(failure)
        if delivered and isinstance(reservation, SettlesPartially):
            # Part of the answer reached the client: charge what it holds, record the failure.
            call.cost_nanos = await reservation.settle_partial(status)
            await self._keep(call, principal, kept or [], call.cost_nanos, started)
            return
        await reservation.release("cancelled" if cancelled else "failed", status=status)
