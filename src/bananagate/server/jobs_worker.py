"""The job worker: claims due jobs, runs them through the metering pipeline, delivers webhooks.

One worker per process (`serve` embeds one unless `BANANAGATE_JOBS_WORKER=false`; `bananagate
worker` runs one alone). It runs up to `jobs_concurrency` jobs at once and keeps their leases
alive; a job whose worker dies is claimed again by any worker once its lease runs out (see
`store/jobs.py`). Ending a job:

* success: the pipeline settled it (ledger row keyed `job-<id>`), then the answer is stored;
* a retryable failure (upstream 429/5xx, timeout, store briefly down) with attempts left: back to
  the queue after an exponential backoff (or the upstream's RetryInfo, if longer);
* a key limit saying "not now": back to the queue, the attempt not counted;
* otherwise, or out of attempts: FAILED, its ledger row written and its hold released in the
  same transaction; a cancelled one likewise as CANCELLED.

On shutdown running jobs are stopped and given back at once, so a restart loses none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import orjson

from bananagate.protocol.catalog import strip_model_prefix
from bananagate.protocol.errors import ApiError, model_not_found
from bananagate.protocol.validation import parse_and_check
from bananagate.providers.base import Call, UpstreamError, UpstreamTimeout
from bananagate.server.auth import Principal
from bananagate.server.jobs_metering import JobDeferred, JobMeter
from bananagate.server.jobs_wake import Waker
from bananagate.server.jobs_wire import batch_operation, job_view, webhook_event
from bananagate.server.metering import GatewayMeter
from bananagate.server.pipeline import Pipeline
from bananagate.server.routing import ModelRouter
from bananagate.server.webhooks import WebhookSender
from bananagate.settings import Settings
from bananagate.store import ClaimedJob, JobRecord, KeyCipher, LedgerRow, SecretKeyMismatch, Store
from bananagate.store.job_webhooks import WebhookRecord
from bananagate.store.jobs_records import CANCELLED, FAILED

log = logging.getLogger("bananagate.jobs")
T = TypeVar("T")

MAX_BACKOFF = 600.0
WEBHOOK_BATCH = 8
MAX_WEBHOOK_BACKOFF = 3600.0


def _cancelled_error() -> dict[str, Any]:
    return {"code": 499, "message": "The job was cancelled.", "status": "CANCELLED"}


def backoff(base: float, attempt: int, cap: float) -> float:
    """`base` doubled per attempt (1-based), capped, with ±25 % jitter so retries spread out."""
    return float(min(base * 2 ** max(attempt - 1, 0), cap) * random.uniform(0.75, 1.25))


def classify(exc: Exception) -> tuple[ApiError, bool, float | None]:
    """(error the client sees, worth retrying, delay the upstream asked for)."""
    if isinstance(exc, UpstreamError):
        return exc.error, exc.retryable, exc.retry_after
    if isinstance(exc, UpstreamTimeout):
        return ApiError(504, "The upstream did not answer in time.", "DEADLINE_EXCEEDED"), True, None
    if isinstance(exc, ApiError):
        return exc, exc.code in (500, 502, 503, 504), None  # 503: our own store, briefly down
    log.exception("job run failed unexpectedly", exc_info=exc)
    return ApiError(500, "An internal error has occurred.", "INTERNAL"), True, None


class JobWorker:
    def __init__(
        self,
        *,
        settings: Settings,
        store: Callable[[], Store],
        pipeline: Pipeline,
        meter: JobMeter,
        gateway_meter: GatewayMeter,
        router: ModelRouter,
        waker: Waker,
        sender: WebhookSender,
        secret: Callable[[], str],
        cipher: Callable[[], KeyCipher],
        owner: str | None = None,
    ) -> None:
        self.settings = settings
        self._store = store
        self.pipeline = pipeline
        self.meter = meter
        self.gateway_meter = gateway_meter
        self.router = router
        self.waker = waker
        self.sender = sender
        self.secret = secret
        self._cipher = cipher
        self.owner = owner or f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(3)}"
        self._running: dict[str, asyncio.Task[None]] = {}
        self._cancelling: set[str] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._webhooks_due = asyncio.Event()

    async def _db(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        # Store calls block; run them in a thread, never cut off halfway by a cancellation.
        return await anyio.to_thread.run_sync(lambda: func(*args, **kwargs))

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        log.info("job worker %s: up to %d jobs at once", self.owner, self.settings.jobs_concurrency)
        loops: list[Callable[[], Coroutine[Any, Any, None]]] = [
            self._claim_loop,
            self._heartbeat_loop,
            self._sweep_loop,
            self._webhook_loop,
            self.waker.listen,
        ]
        self._loops = [asyncio.create_task(loop()) for loop in loops]

    async def stop(self) -> None:
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        running = dict(self._running)
        for task in running.values():
            task.cancel()
        await asyncio.gather(*running.values(), return_exceptions=True)
        # Every job this worker still holds, including one claimed just as the claim loop was
        # stopped; not counted as attempts: the next worker (or this one restarted) starts fresh.
        try:
            given = await self._db(self._store().jobs.requeue, self.owner, None)
        except Exception as exc:  # their leases run out instead, and another worker takes them
            log.warning("job worker %s: cannot requeue its jobs: %s", self.owner, exc)
            return
        log.info("job worker %s stopped; %d running job(s) back in the queue", self.owner, given)

    async def _forever(self, what: str, step: Callable[[], Coroutine[Any, Any, None]], pause: float) -> None:
        while True:
            try:
                await step()
            except Exception as exc:  # the database may be down for a while: keep going
                log.warning("job worker %s: %s failed: %s", self.owner, what, exc)
            await asyncio.sleep(pause)

    # --- claiming and running ---------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        settings = self.settings
        while True:
            free = settings.jobs_concurrency - len(self._running)
            claimed: list[ClaimedJob] = []
            if free > 0:
                try:
                    claimed = await self._db(
                        self._store().jobs.claim, self.owner, free, settings.jobs_lease_seconds
                    )
                except Exception as exc:
                    log.warning("job worker %s: claim failed: %s", self.owner, exc)
            for job in claimed:
                self._running[job.record.id] = asyncio.create_task(self._execute(job))
            if free > 0 and len(claimed) == free:
                continue  # the queue may hold more; claim again as soon as a slot frees up
            await self.waker.wait(settings.jobs_poll_interval)

    async def _heartbeat_loop(self) -> None:
        await self._forever("lease renewal", self._heartbeat, max(self.settings.jobs_lease_seconds / 3, 0.2))

    async def _heartbeat(self) -> None:
        if not self._running:
            return
        lease = self.settings.jobs_lease_seconds
        cancel = await self._db(self._store().jobs.heartbeat, self.owner, list(self._running), lease)
        for job_id in cancel - self._cancelling:
            task = self._running.get(job_id)
            if task is not None:
                self._cancelling.add(job_id)
                task.cancel()

    async def _execute(self, claimed: ClaimedJob) -> None:
        job = claimed.record
        try:
            await self._run(job, claimed.body)
        except asyncio.CancelledError:
            if job.id not in self._cancelling:
                raise  # shutting down: `stop` gives the job back to the queue
            with anyio.CancelScope(shield=True):
                row = self._row(job, None, 499, "cancelled", 0.0)
                await self._end(job, CANCELLED, _cancelled_error(), row)
        except Exception as exc:
            log.exception("job %s: the worker failed", job.id)
            error, _, _ = classify(exc)
            try:
                await self._attempt_failed(job, None, error, True, None, 0.0)
            except Exception as again:  # e.g. the database is down: the lease will run out instead
                log.warning("job %s: cannot record the failure (%s); it will be retried", job.id, again)
        finally:
            self._running.pop(job.id, None)
            self._cancelling.discard(job.id)
            self.meter.forget(job)
            self.waker.poke()

    async def _run(self, job: JobRecord, body: bytes) -> None:
        model = self.router.find(job.model)
        if model is None:
            await self._end(job, FAILED, model_not_found(job.model).to_dict()["error"], None)
            return
        try:
            request = parse_and_check(body, model)  # checked at submit; the rules may have changed
        except ApiError as exc:
            await self._end(job, FAILED, exc.to_dict()["error"], None)
            return
        key = await self._db(self._store().keys.get_key_by_id, job.key_id)
        if key is None or not key.active:
            message = "The API key that submitted this job was revoked or has expired."
            await self._end(
                job, FAILED, {"code": 403, "message": message, "status": "PERMISSION_DENIED"}, None
            )
            return
        principal = Principal(key.id, key.name, key.limits)
        call = Call(
            model=model,
            model_id=strip_model_prefix(job.model),
            method="generateContent",
            body=body,
            request=request,
            headers=job.headers,
            request_id=job.request_id,
        )
        ticket = self.meter.expect(job)
        log.info("job %s: attempt %d of %d on %s", job.id, job.attempts, job.max_attempts, self.owner)
        started = time.monotonic()
        try:
            answer = await self.pipeline.generate(call, principal)
        except JobDeferred as deferred:
            await self._db(self._store().jobs.requeue, self.owner, [job.id], delay=deferred.retry_after)
            return
        except (UpstreamError, UpstreamTimeout, ApiError) as exc:
            error, retryable, retry_after = classify(exc)
            await self._attempt_failed(job, call, error, retryable, retry_after, started)
            return
        stored = await self._db(
            self._store().jobs.complete, job.id, answer.body, status=answer.status, cost_nanos=ticket.cost
        )
        if stored:
            self._webhooks_due.set()
        else:
            log.info("job %s had already ended (cancelled, or finished by another worker)", job.id)

    async def _attempt_failed(
        self,
        job: JobRecord,
        call: Call | None,
        error: ApiError,
        retryable: bool,
        retry_after: float | None,
        started: float,
    ) -> None:
        if retryable and job.attempts < job.max_attempts:
            delay = max(
                retry_after or 0.0,
                backoff(self.settings.jobs_retry_backoff_seconds, job.attempts, MAX_BACKOFF),
            )
            log.info(
                "job %s: attempt %d failed (%s); retrying in %.1fs",
                job.id,
                job.attempts,
                error.message,
                delay,
            )
            await self._db(
                self._store().jobs.requeue,
                self.owner,
                [job.id],
                delay=delay,
                count_attempt=True,
                last_error=error.to_dict()["error"],
            )
            return
        await self._end(
            job, FAILED, error.to_dict()["error"], self._row(job, call, error.code, "error", started)
        )

    def _row(self, job: JobRecord, call: Call | None, status: int, outcome: str, started: float) -> LedgerRow:
        return LedgerRow(
            request_id=job.request_id,
            key_id=job.key_id,
            key_name=job.key_name,
            model=call.model.id if call is not None else job.model,
            status=status,
            outcome=outcome,
            channel=call.channel if call is not None else None,
            attempts=call.attempts if call is not None else 0,
            latency_ms=int((time.monotonic() - started) * 1000) if started else 0,
        )

    async def _end(self, job: JobRecord, state: str, error: dict[str, Any], row: LedgerRow | None) -> None:
        status = int(error.get("code") or 500)
        ended = await self._db(
            self._store().jobs.finish, job.id, state, status=status, error=error, row=row, owner=self.owner
        )
        if ended:
            log.info("job %s %s: %s", job.id, state, error.get("message"))
            if row is not None:
                self.gateway_meter.observe(row, False)
            self._webhooks_due.set()

    # --- housekeeping ------------------------------------------------------------------------------

    async def _sweep_loop(self) -> None:
        await self._forever("sweep", self._sweep, self.settings.jobs_sweep_interval_seconds)

    async def _sweep(self) -> None:
        report = await self._db(self._store().jobs.sweep, self.settings.jobs_retention_seconds)
        if report.expired or report.lost:
            log.warning(
                "jobs: %d expired unrun, %d failed after losing their workers", report.expired, report.lost
            )
            self._webhooks_due.set()

    # --- webhooks ----------------------------------------------------------------------------------

    async def _webhook_loop(self) -> None:
        settings = self.settings
        lease = settings.webhook_timeout * 2 + 5  # a delivery in flight is not claimed twice
        while True:
            due: list[WebhookRecord] = []
            try:
                due = await self._db(self._store().jobs.webhooks.claim, WEBHOOK_BATCH, lease)
            except Exception as exc:
                log.warning("job worker %s: webhook claim failed: %s", self.owner, exc)
            if due:
                await asyncio.gather(*(self._deliver(webhook) for webhook in due))
                continue
            self._webhooks_due.clear()
            # Retries come due on their own schedule: poll for them as for jobs.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._webhooks_due.wait(), settings.jobs_poll_interval)

    def _webhook_secret(self, webhook: WebhookRecord) -> str:
        """The job's own secret (stored sealed), else the gateway's."""
        return self._cipher().open_secret(webhook.secret) if webhook.secret else self.secret()

    async def _deliver(self, webhook: WebhookRecord) -> None:
        queue = self._store().jobs.webhooks
        try:
            try:
                secret = self._webhook_secret(webhook)
            except SecretKeyMismatch as exc:  # another secret key: no attempt could ever be signed
                log.error("webhook %s of %s: %s; giving up", webhook.id, webhook.target, exc)
                await self._db(queue.failed, webhook.id, None, str(exc), None)
                return
            body = await self._db(self._event_body, webhook)
            result = await self.sender.post(
                webhook.url,
                body,
                secret=secret,
                event=webhook.event,
                delivery=str(webhook.id),
            )
            if result.ok:
                await self._db(queue.delivered, webhook.id, result.status or 200)
                return
            attempt = webhook.attempts + 1
            retry_in = None
            if attempt < self.settings.webhook_max_attempts:
                retry_in = backoff(self.settings.webhook_backoff_seconds, attempt, MAX_WEBHOOK_BACKOFF)
            log.warning(
                "webhook %s of %s: attempt %d failed (%s); %s",
                webhook.id,
                webhook.target,
                attempt,
                result.error,
                f"retrying in {retry_in:.1f}s" if retry_in is not None else "giving up",
            )
            await self._db(queue.failed, webhook.id, result.status, result.error or "failed", retry_in)
        except Exception as exc:  # the lease runs out and the delivery is tried again
            log.warning("webhook %s of %s: %s", webhook.id, webhook.target, exc)

    def _event_body(self, webhook: WebhookRecord) -> bytes:
        kind, _, ident = webhook.target.partition("/")
        jobs = self._store().jobs
        view: dict[str, Any] | None = None
        if kind == "jobs":
            job = jobs.get(ident)
            view = job_view(job) if job is not None else None
        else:
            batch = jobs.get_batch(ident)
            view = batch_operation(batch) if batch is not None else None
        return orjson.dumps(webhook_event(webhook.event, webhook.target, view))
