"""One request's way through the gateway once it is authenticated and validated:
meter (reserve) -> router (channels, retries, failover) -> meter (settle).

Routes call only this; metering and routing each live in their own module behind it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Protocol

from bananagate.providers.base import Answer, Call
from bananagate.server.auth import Principal
from bananagate.server.routing import ModelRouter


class Reservation(Protocol):
    """Money and limits held for one call until it is settled or released."""

    async def settle(
        self, answer_body: bytes | None, *, streamed_events: list[bytes] | None = None
    ) -> None: ...

    async def release(self, reason: str) -> None: ...


class Meter(Protocol):
    """Admission and accounting. `reserve` raises ApiError (429/403) when the call may not run."""

    async def reserve(self, call: Call, principal: Principal) -> Reservation: ...


class _NoReservation:
    async def settle(self, answer_body: bytes | None, *, streamed_events: list[bytes] | None = None) -> None:
        return None

    async def release(self, reason: str) -> None:
        return None


class NullMeter:
    """No limits, no ledger: the default until metering is configured."""

    async def reserve(self, call: Call, principal: Principal) -> Reservation:
        return _NoReservation()


class Pipeline:
    def __init__(self, router: ModelRouter, meter: Meter | None = None) -> None:
        self.router = router
        self.meter: Meter = meter or NullMeter()

    async def generate(self, call: Call, principal: Principal) -> Answer:
        reservation = await self.meter.reserve(call, principal)
        try:
            answer = await self.router.generate(call)
        except BaseException:
            await reservation.release("failed")
            raise
        await reservation.settle(answer.body)
        return answer

    async def stream(self, call: Call, principal: Principal) -> AsyncGenerator[bytes, None]:
        """Events of a streamed call; settles on the events seen once the stream ends."""
        reservation = await self.meter.reserve(call, principal)
        events: list[bytes] = []
        outcome = "completed"
        try:
            async for event in self.router.stream(call):
                events.append(event)
                yield event
        except (GeneratorExit, asyncio.CancelledError):
            outcome = "cancelled"
            raise
        except BaseException:
            outcome = "failed"
            raise
        finally:
            if outcome == "completed":
                await reservation.settle(None, streamed_events=events)
            else:
                await reservation.release(outcome)
