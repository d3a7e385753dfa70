"""Wiring of the request guarantees for one gateway process: idempotency and affinity, built from
settings and started/stopped with the app (deadlines and answer headers need no state)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bananagate.server.affinity import Affinity, build_affinity
from bananagate.server.idempotency import Idempotency
from bananagate.server.metering import GatewayMeter
from bananagate.settings import Settings
from bananagate.store import LedgerRow, Store


@dataclass
class Guarantees:
    affinity: Affinity
    idempotency: Idempotency

    async def start(self) -> None:
        await self.idempotency.start()

    async def aclose(self) -> None:
        await self.idempotency.aclose()
        await self.affinity.aclose()


def build_guarantees(settings: Settings, store: Callable[[], Store], meter: GatewayMeter) -> Guarantees:
    async def record_replay(row: LedgerRow) -> None:
        # Like any answer: recorded before the client has it, or a 503 instead.
        await meter.record(row, None, must=True)
        meter.observe(row, False)

    idempotency = Idempotency(
        store,
        settings.resolved_idempotency_dir(),
        retention_seconds=settings.idempotency_retention_seconds,
        ledger=record_replay,
        redis_url=settings.redis_url,
        redis_prefix=settings.redis_prefix,
    )
    affinity = build_affinity(store, settings.redis_url, settings.redis_prefix, settings.affinity_ttl_seconds)
    return Guarantees(affinity, idempotency)
