"""Asynchronous image jobs and batches: what `create_app` wires in (README "Jobs and batches").

The parts, each in its own module:

* `store/jobs.py`, `store/jobs_repo.py`: the queue in the database (SQLite or PostgreSQL) with
  leases, results kept in the job rows, and every ending of a job as one transaction;
* `jobs_routes.py`: `/v1beta/jobs`, `/v1beta/batches` and `:batchGenerateContent`;
* `jobs_worker.py`: claims and runs jobs, renews leases, sweeps, sends webhooks;
* `jobs_metering.py`: jobs go through the ordinary pipeline with the budget held at submit;
* `jobs_wake.py`: wake-ups through Redis; `webhooks.py`: signing and the SSRF-guarded POST.

Results live in the database, not in the image store's files: a result must be readable by
whichever gateway process the client polls, and separate workers may run on other hosts that
share only the database. The rows (and images) go after `jobs_retention_seconds`.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable

from starlette.routing import BaseRoute

from bananagate.server.fetch import FetchPolicy
from bananagate.server.gemini import GeminiRoutes
from bananagate.server.jobs_metering import JobMeter
from bananagate.server.jobs_routes import JobRoutes
from bananagate.server.jobs_wake import Waker
from bananagate.server.jobs_worker import JobWorker
from bananagate.server.metering import GatewayMeter
from bananagate.server.pipeline import Pipeline
from bananagate.server.webhooks import WebhookSender, gateway_secret
from bananagate.settings import Settings
from bananagate.store import KeyCipher, Store


class JobService:
    """The routes, and (unless `jobs_worker` is off) this process's worker."""

    def __init__(
        self,
        settings: Settings,
        store: Callable[[], Store],
        pipeline: Pipeline,
        meter: GatewayMeter,
        gemini: GeminiRoutes,
    ) -> None:
        self.waker = Waker(settings.redis_url if settings.redis_url else None, settings.redis_prefix)
        # Seals jobs' own webhook secrets (routes) and opens them (worker); loaded on first use.
        cipher = functools.cache(lambda: KeyCipher.load(settings.secret_key, settings.data_dir))
        self._routes = JobRoutes(
            gemini=gemini, store=store, meter=meter, settings=settings, waker=self.waker, cipher=cipher
        )
        self.worker: JobWorker | None = None
        self._sender: WebhookSender | None = None
        if not settings.jobs_worker:
            return
        policy = FetchPolicy(
            allow_private=settings.fetch_allow_private,
            allowed_networks=FetchPolicy.parse_networks(settings.fetch_allowed_networks),
        )
        self._sender = WebhookSender(policy, settings.webhook_timeout)
        job_meter = JobMeter(meter, store, hold_ttl=settings.jobs_expire_seconds + 86400)
        # The same pipeline (router, gallery, ...) with the job meter in place of the gateway's.
        job_pipeline = copy.copy(pipeline)
        job_pipeline.meter = job_meter
        self.worker = JobWorker(
            settings=settings,
            store=store,
            pipeline=job_pipeline,
            meter=job_meter,
            gateway_meter=meter,
            router=pipeline.router,
            waker=self.waker,
            sender=self._sender,
            secret=functools.cache(lambda: gateway_secret(settings.webhook_secret, settings.data_dir)),
            cipher=cipher,
        )

    def routes(self) -> list[BaseRoute]:
        return self._routes.routes()

    async def start(self) -> None:
        if self.worker is not None:
            await self.worker.start()

    async def aclose(self) -> None:
        if self.worker is not None:
            await self.worker.stop()
        if self._sender is not None:
            await self._sender.aclose()
        await self.waker.aclose()
