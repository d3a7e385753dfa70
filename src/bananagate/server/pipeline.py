"""One request's way through the gateway once it is authenticated and validated:
meter (reserve) -> router (channels, retries, failover) -> meter (settle) -> image sink (gallery).

Routes call only this; metering and routing each live in their own module behind it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from typing import Protocol

import anyio

from bananagate.protocol.errors import ApiError
from bananagate.protocol.pricing import format_usd
from bananagate.protocol.scan import scan_finish_reason
from bananagate.providers.base import Answer, Call, UpstreamError, UpstreamTimeout
from bananagate.server.auth import Principal
from bananagate.server.routing import ModelRouter

COST_HEADER = "x-bananagate-cost-usd"


class Reservation(Protocol):
    """Money and limits held for one call until it is settled or released (at most once)."""

    def observe(self, event: bytes) -> None:
        """A streamed event passed to the client (in order); settle then charges what they held."""
        ...

    async def settle(self, answer_body: bytes | None = None) -> int | None:
        """Charge the answer body (or the observed stream); the nano-dollars charged, None if unmetered."""
        ...

    async def release(self, reason: str, *, status: int | None = None) -> None: ...


class Meter(Protocol):
    """Admission and accounting. `reserve` raises ApiError (429/403) when the call may not run."""

    async def reserve(self, call: Call, principal: Principal) -> Reservation: ...


class ImageSink(Protocol):
    """Keeps the images of settled answers (the console's gallery).

    `submit` must return at once: the sink decodes Base64 and writes files off the event loop,
    after the client has its answer. `bodies` is the answer body, or a stream's events in order.
    """

    def submit(
        self, call: Call, principal: Principal, bodies: list[bytes], cost_nanos: int | None, latency_ms: int
    ) -> None: ...


class _NoReservation:
    def observe(self, event: bytes) -> None:
        return None

    async def settle(self, answer_body: bytes | None = None) -> int | None:
        return None

    async def release(self, reason: str, *, status: int | None = None) -> None:
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
        self, router: ModelRouter, meter: Meter | None = None, images: ImageSink | None = None
    ) -> None:
        self.router = router
        self.meter: Meter = meter or NullMeter()
        self.images = images

    def _keep(
        self, call: Call, principal: Principal, bodies: list[bytes], cost: int | None, started: float
    ) -> None:
        if self.images is not None:
            self.images.submit(call, principal, bodies, cost, int((time.monotonic() - started) * 1000))

    async def generate(self, call: Call, principal: Principal) -> Answer:
        started = time.monotonic()
        reservation = await self.meter.reserve(call, principal)
        try:
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
        self._keep(call, principal, [answer.body], cost, started)
        return answer

    async def stream(self, call: Call, principal: Principal) -> AsyncGenerator[bytes, None]:
        """Events of a streamed call. The event that carries `finishReason` (the last one) is held
        back until the call is settled, so a client that got the whole stream was recorded."""
        started = time.monotonic()
        reservation = await self.meter.reserve(call, principal)
        settled = False
        failure: BaseException | None = None
        # Only with an image sink: the events (references, no copies) until the call is settled.
        kept: list[bytes] | None = [] if self.images is not None else None
        try:
            async for event in self.router.stream(call):
                reservation.observe(event)
                if kept is not None and not settled:
                    kept.append(event)
                if not settled and scan_finish_reason(event) is not None:
                    cost = await reservation.settle()
                    settled = True
                    self._keep(call, principal, kept or [], cost, started)
                yield event
        except BaseException as exc:
            failure = exc
            raise
        finally:
            if not settled:
                with anyio.CancelScope(shield=True):
                    if failure is None:
                        cost = await reservation.settle()
                        self._keep(call, principal, kept or [], cost, started)
                    elif isinstance(failure, (GeneratorExit, asyncio.CancelledError)):
                        await reservation.release("cancelled", status=499)
                    else:
                        await reservation.release("failed", status=failure_status(failure))
