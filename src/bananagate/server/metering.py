"""Metering: admit a call against its key's limits and budget, then settle it into the ledger.

Per call, on the hot path:
1. `reserve`: model allow-list; rpm / concurrency / images-per-day through the `Limiter` (one
   Redis script or in memory); then, for a key with a budget, ONE conditional UPDATE that holds
   the call's maximum cost (`ReservationRepository.reserve`). Any refusal is a 429 (403 for a
   model the key may not use) and gives back what was already taken.
2. The router runs the call.
3. `settle`: usage is read from the answer's bytes (`protocol.scan`, no image decoding), priced,
   and written in ONE transaction with the money. `release` does the same with a zero cost when
   the call failed or the client went away.

The settle happens before the client gets the answer (or the stream's final event), so every
answer a client received has its ledger row. If the database cannot take the row, the client
gets a 503 instead of an unrecorded answer.

Ledger writes are group-committed (`LedgerWriter`): one batch in flight per process; the rows
of calls ending while it is written wait for it and go together in the next one, in ONE
transaction (`LedgerRepository.record_many`). Under load that is one commit for many calls
instead of one each; alone, a call still gets its own transaction at once. On the embedded
SQLite database a batch is written on the event loop itself when the database takes it at
once (`record_many_now`), in a worker thread otherwise and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread

from bananagate.protocol.errors import ERROR_INFO_TYPE, ApiError, resource_exhausted
from bananagate.protocol.pricing import PriceTable
from bananagate.protocol.response import Usage
from bananagate.protocol.scan import (
    Bytes,
    count_output_images,
    is_error_event,
    scan_finish_reason,
    scan_usage,
)
from bananagate.providers.base import Call, LimitState
from bananagate.server.auth import Principal
from bananagate.server.limits import Admission, Limiter, LimitExceeded
from bananagate.server.metrics import Metrics
from bananagate.server.timing import format_reset
from bananagate.store import Hold, LedgerRepository, LedgerRow, Store

log = logging.getLogger("bananagate.metering")

# Attempts at writing a ledger row before the answer is refused (the database is down).
SETTLE_ATTEMPTS = 3
SETTLE_BACKOFF = 0.25
# Most rows in one ledger transaction (keeps each one short; the rest go in the next).
MAX_BATCH = 256


def unavailable(message: str) -> ApiError:
    return ApiError(503, message, "UNAVAILABLE")


def model_denied(model_id: str) -> ApiError:
    return ApiError(
        403,
        f"This API key is not allowed to use models/{model_id}.",
        "PERMISSION_DENIED",
        [{"@type": ERROR_INFO_TYPE, "reason": "MODEL_NOT_ALLOWED", "domain": "bananagate"}],
    )


def budget_exhausted() -> ApiError:
    # No RetryInfo: waiting does not bring money back (settling calls may, but rarely enough).
    return resource_exhausted(
        "Your prepayment credits are depleted: this API key's budget does not cover this request."
    )


def expected_images(call: Call) -> int:
    """Images the call asks for: one, unless it wants text only."""
    modalities = {m.upper() for m in call.request.response_modalities}
    return 0 if modalities and "IMAGE" not in modalities else 1


def token_bounds(call: Call) -> tuple[int, int]:
    """Upper bounds of (input, output text) tokens, used only when token prices are set.

    Input: UTF-8 bytes of the prompt text (a token is never shorter than a byte) plus the
    model's tokens per input image. Output: `maxOutputTokens`, else the model's output limit.
    """
    request, model = call.request, call.model
    text_bytes = len(request.prompt_text().encode("utf-8"))
    input_tokens = text_bytes + len(request.input_images()) * model.input_image_tokens
    config = request.generation_config
    max_out = config.max_output_tokens if config is not None and config.max_output_tokens else None
    return input_tokens, max_out or model.output_token_limit


@dataclass(slots=True)
class Tally:
    """What a streamed answer delivered, kept as it flows (the events themselves are not kept)."""

    images: int = 0
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None
    error: bool = False

    def add(self, event: bytes) -> None:
        if is_error_event(event):
            self.error = True
            return
        self.images += count_output_images(event)
        usage = scan_usage(event)
        if usage.total_tokens:
            self.usage = usage  # each event's usageMetadata is cumulative; the last one is final
        self.finish_reason = scan_finish_reason(event) or self.finish_reason


async def _checkpoint(ledger: LedgerRepository) -> None:
    try:
        await anyio.to_thread.run_sync(ledger.checkpoint)
    except Exception as exc:  # the next one retries; the rows themselves are committed
        log.warning("ledger: WAL checkpoint failed: %s", exc)


@dataclass(slots=True)
class _Lane:
    """The writer's queue on one event loop, and its task while a batch is being written."""

    queue: list[tuple[LedgerRow, Hold | None, asyncio.Future[bool]]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    checkpoint: asyncio.Future[None] | None = None  # the WAL checkpoint running in a thread


class LedgerWriter:
    """Group commit of ledger rows: at most one batch in flight (per event loop).

    `record` queues the row and waits for its own outcome; whoever finds no batch in flight
    starts one. The batch takes every row queued so far and writes them in one transaction (on
    the loop where `record_many_now` can, else in a worker thread); rows queued meanwhile form
    the next batch. A failure of the database reaches every caller of the batch (each retries
    on its own); a duplicate request id only its own caller (`LedgerRepository.record_many`).
    """

    def __init__(self, ledger: Callable[[], LedgerRepository], *, max_batch: int = MAX_BATCH) -> None:
        self._ledger = ledger
        self.max_batch = max_batch
        # Per loop: a meter outlives the loop of a test client, and futures belong to one loop.
        self._lanes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Lane] = weakref.WeakKeyDictionary()

    async def record(self, row: LedgerRow, hold: Hold | None) -> bool:
        """`LedgerRepository.record`, batched with the rows of concurrent calls."""
        loop = asyncio.get_running_loop()
        lane = self._lanes.get(loop)
        if lane is None:
            lane = self._lanes[loop] = _Lane()
        future: asyncio.Future[bool] = loop.create_future()
        lane.queue.append((row, hold, future))
        if lane.task is None or lane.task.done():
            lane.task = loop.create_task(self._drain(lane))
        return await future

    async def _drain(self, lane: _Lane) -> None:
        while lane.queue:
            batch = lane.queue[: self.max_batch]
            del lane.queue[: self.max_batch]
            try:
                ledger = self._ledger()
                settles = [(row, hold) for row, hold, _ in batch]
                # On the loop when the database takes it at once (embedded SQLite), else in a thread.
                outcomes = ledger.record_many_now(settles)
                if outcomes is None:
                    outcomes = await anyio.to_thread.run_sync(ledger.record_many, settles)
                elif (lane.checkpoint is None or lane.checkpoint.done()) and ledger.claim_checkpoint():
                    lane.checkpoint = asyncio.ensure_future(_checkpoint(ledger))
                for (*_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if isinstance(outcome, Exception):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
            except Exception as exc:
                # Whatever went wrong, no caller is left waiting (they wait shielded).
                for *_, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            except BaseException:  # the loop is going away: nobody is left to wait
                for *_, future in batch + lane.queue:
                    future.cancel()
                lane.queue.clear()
                raise


class GatewayMeter:
    """The `Meter` of a gateway with a store (see module docstring)."""

    def __init__(
        self,
        store: Callable[[], Store],
        limiter: Limiter,
        prices: PriceTable,
        *,
        reservation_ttl: float = 120.0,
        metrics: Metrics | None = None,
    ) -> None:
        self._store = store
        self.limiter = limiter
        self.prices = prices
        self.reservation_ttl = reservation_ttl
        self.metrics = metrics
        self.live_holds: dict[str, Hold] = {}  # renewed by the maintenance loop
        self.writer = LedgerWriter(lambda: self._store().ledger)

    async def reserve(self, call: Call, principal: Principal) -> MeteredReservation:
        limits = principal.limits
        if limits.models and call.model.id not in limits.models and call.model_id not in limits.models:
            self._rejected("model")
            raise model_denied(call.model_id)
        images = expected_images(call)
        admission: Admission | None = None
        if limits.limited_rate:
            try:
                admission = await self.limiter.acquire(principal.key_id, limits, images)
            except LimitExceeded as exc:
                self._rejected(exc.reason)
                error = resource_exhausted(exc.message, exc.retry_after)
                if exc.reason == "rpm" and limits.rpm is not None:
                    # OpenAI's rate-limit headers on the refusal too (LiteLLM reads them there).
                    error.headers.update(
                        {
                            "x-ratelimit-limit-requests": str(limits.rpm),
                            "x-ratelimit-remaining-requests": "0",
                            "x-ratelimit-reset-requests": format_reset(exc.retry_after or 0.0),
                        }
                    )
                raise error from None
        hold: Hold | None = None
        max_cost = 0
        if limits.budget_nanos is not None:
            input_tokens, output_tokens = token_bounds(call)
            max_cost = self.prices.max_cost(
                call.model,
                images=images,
                image_size=call.request.image_size,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
            )
            try:
                # Shielded: a hold taken in the thread must reach the caller, who releases it.
                with anyio.CancelScope(shield=True):
                    hold = await anyio.to_thread.run_sync(
                        self._store().reservations.reserve,
                        principal.key_id,
                        max_cost,
                        call.request_id,
                        self.reservation_ttl,
                    )
            except Exception as exc:
                await self._undo(admission)
                log.error("cannot reserve budget: %s", exc)
                raise unavailable("The usage store is unavailable; please retry.") from None
            if hold is None:
                await self._undo(admission)
                self._rejected("budget")
                raise budget_exhausted()
            self.live_holds[hold.id] = hold
        return MeteredReservation(self, call, principal, admission, hold)

    async def _undo(self, admission: Admission | None) -> None:
        if admission is not None:
            with anyio.CancelScope(shield=True):
                await self.limiter.cancel(admission)

    def _rejected(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.rejected.labels(reason).inc()

    async def record(self, row: LedgerRow, hold: Hold | None, *, must: bool) -> bool:
        """Write the ledger row (and move the money); with `must`, retry, then raise a 503.

        Callers shield it (settle and release do): the row is being written in its thread anyway.
        """
        attempts = SETTLE_ATTEMPTS if must else 1
        try:
            for attempt in range(attempts):
                try:
                    written = await self.writer.record(row, hold)
                except Exception as exc:
                    log.warning(
                        "ledger write failed (attempt %d) rid=%s: %s", attempt + 1, row.request_id, exc
                    )
                    if attempt + 1 < attempts:
                        await anyio.sleep(SETTLE_BACKOFF * (attempt + 1))
                    continue
                if not written:
                    log.warning("ledger already has rid=%s; nothing charged twice", row.request_id)
                return True
        finally:
            # Settled, or given up on: either way stop renewing the hold. If it is still in the
            # database (the write failed), it expires and a sweeper gives the money back.
            if hold is not None:
                self.live_holds.pop(hold.id, None)
        if must:
            raise unavailable("The usage store is unavailable; the answer could not be recorded.")
        return False

    def observe(self, row: LedgerRow, streamed: bool) -> None:
        m = self.metrics
        if m is None:
            return
        channel = row.channel or "default"
        requests, latency, images, cost = m.record_request(
            row.model, channel, str(row.status), row.outcome, streamed
        )
        requests.inc()
        latency.observe(row.latency_ms / 1000)
        if row.images:
            images.inc(row.images)
        if row.cost_nanos:
            cost.inc(row.cost_nanos / 1e9)  # display only; the ledger is exact
        if row.outcome == "error":
            m.upstream_errors.labels(channel, str(row.status)).inc()

    async def maintain(self, *, sweep_interval: float) -> None:
        """Forever: renew this process's holds and leases, release holds of dead processes."""
        store = self._store()
        renew_every = max(self.reservation_ttl / 4, 0.5)
        last_sweep = 0.0
        while True:
            try:
                if self.live_holds:
                    await anyio.to_thread.run_sync(
                        store.reservations.extend, list(self.live_holds), self.reservation_ttl
                    )
                await self.limiter.heartbeat(self.reservation_ttl)
                if time.monotonic() - last_sweep >= sweep_interval:
                    last_sweep = time.monotonic()
                    released = await anyio.to_thread.run_sync(store.reservations.sweep)
                    if released:
                        log.warning(
                            "released %d expired budget reservation(s) of a stopped process", released
                        )
            except Exception as exc:  # the database may be down for a while: keep trying
                log.warning("metering maintenance failed: %s", exc)
            await anyio.sleep(min(renew_every, sweep_interval))


class MeteredReservation:
    """One admitted call's holds, until `settle` or `release` (each at most once)."""

    def __init__(
        self,
        meter: GatewayMeter,
        call: Call,
        principal: Principal,
        admission: Admission | None,
        hold: Hold | None,
    ) -> None:
        self.meter = meter
        self.call = call
        self.principal = principal
        self.admission = admission
        self.hold = hold
        self.started = time.monotonic()
        self.tally: Tally | None = None
        self.done = False

    def observe(self, event: bytes) -> None:
        """Feed one streamed event (in order)."""
        if self.tally is None:
            self.tally = Tally()
        self.tally.add(event)

    def _row(self, status: int, outcome: str, **values: Any) -> LedgerRow:
        call, principal = self.call, self.principal
        return LedgerRow(
            request_id=call.request_id,
            key_id=principal.key_id,
            key_name=principal.key_name,
            model=call.model.id,
            status=status,
            outcome=outcome,
            channel=call.channel,
            streamed=self.tally is not None,
            attempts=call.attempts,
            latency_ms=int((time.monotonic() - self.started) * 1000),
            client_ip=principal.client_ip,
            **values,
        )

    def limit_state(self, cost_nanos: int | None = None) -> LimitState | None:
        """What the key has left after this call (and its cost, once known), for the headers."""
        limits, admission, hold = self.principal.limits, self.admission, self.hold
        budget = None
        if hold is not None and hold.remaining_nanos is not None:
            # As of the reservation: what was left beside this hold, plus what the hold gives back.
            budget = hold.remaining_nanos + (hold.amount_nanos - cost_nanos if cost_nanos is not None else 0)
        rpm = admission is not None and admission.rpm_remaining is not None
        if budget is None and not rpm:
            return None
        return LimitState(
            rpm_limit=limits.rpm if rpm else None,
            rpm_remaining=admission.rpm_remaining if admission is not None else None,
            rpm_reset_seconds=admission.rpm_reset if admission is not None else None,
            budget_remaining_nanos=budget,
        )

    async def settle_partial(self, status: int) -> int | None:
        """A stream that broke off after some events reached the client: charge the images they
        carried, recorded with the failure's status (not a 200)."""
        return await self.settle(None, failed_status=status)

    async def settle(
        self, answer_body: Bytes | None = None, *, failed_status: int | None = None
    ) -> int | None:
        """Charge the answer (a body, or the observed stream); the nanos charged."""
        if self.done:
            return None
        self.done = True
        if answer_body is not None:
            usage = scan_usage(answer_body)
            images = count_output_images(answer_body)
            finish = scan_finish_reason(answer_body)
            error = False
        else:
            tally = self.tally or Tally()
            usage, images, finish, error = tally.usage, tally.images, tally.finish_reason, tally.error
        charge = self.meter.prices.cost(self.call.model, usage, images, self.call.request.image_size)
        cost = charge.nanos
        if self.hold is not None and cost > self.hold.amount_nanos:
            # Never past the hold: that is what keeps a budget from being overspent.
            log.warning(
                "cost %d above the hold %d rid=%s", cost, self.hold.amount_nanos, self.call.request_id
            )
            cost = self.hold.amount_nanos
        outcome = "error" if error else ("ok" if images else "no_image")
        status = 500 if error else 200
        if failed_status is not None:
            status, outcome = failed_status, ("cancelled" if failed_status == 499 else "error")
        row = self._row(
            status,
            outcome,
            finish_reason=finish,
            images=images,
            prompt_tokens=usage.prompt_tokens,
            output_tokens=usage.candidates_tokens,
            image_tokens=usage.candidates_image_tokens,
            thoughts_tokens=usage.thoughts_tokens,
            cost_nanos=cost,
        )
        with anyio.CancelScope(shield=True):
            try:
                # A broken-off stream's row is best effort: its client has its events already.
                await self.meter.record(row, self.hold, must=failed_status is None)
            finally:
                if self.admission is not None:
                    await self.meter.limiter.finish(self.admission, images)
        self.meter.observe(row, self.tally is not None)
        return cost

    async def release(self, reason: str, *, status: int | None = None) -> None:
        """The call produced no answer (upstream failure, cancelled): nothing is charged."""
        if self.done:
            return
        self.done = True
        outcome = "cancelled" if reason == "cancelled" else "error"
        row = self._row(status or (499 if outcome == "cancelled" else 500), outcome)
        with anyio.CancelScope(shield=True):
            try:
                # Not `must`: nothing was delivered, and an unrecorded hold expires by itself.
                await self.meter.record(row, self.hold, must=False)
            finally:
                if self.admission is not None:
                    await self.meter.limiter.finish(self.admission, 0)
        self.meter.observe(row, self.tally is not None)


def price_table(
    overrides: dict[str, dict[str, Any]], prices_file: Any = None, *, charge_without_image: bool = False
) -> PriceTable:
    """The defaults with the file's entries, then the inline ones, applied on top."""
    import json
    import tomllib
    from pathlib import Path

    table = PriceTable(charge_without_image=charge_without_image)
    if prices_file is not None:
        path = Path(prices_file)
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        table = table.with_overrides(data.get("models", data))
    return table.with_overrides(overrides)
