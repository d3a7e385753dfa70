"""Prometheus metrics, served at `/metrics`.

Each app gets its own registry (tests build many apps in one process). With `serve --workers N`
the CLI sets `PROMETHEUS_MULTIPROC_DIR` before the workers start; every worker then writes its
samples there and `/metrics` aggregates all of them, whichever worker answers the scrape.
Label values are bounded (models, channels, statuses, reasons): key names never become labels.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import multiprocess as prom_multiprocess
from starlette.requests import Request
from starlette.responses import Response

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, float("inf"))


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "bananagate_requests",
            "Generation requests that reached the upstream, by outcome.",
            ["model", "channel", "status", "outcome"],
            registry=r,
        )
        self.latency = Histogram(
            "bananagate_request_latency_seconds",
            "Time from admission to the end of the answer.",
            ["model", "streamed"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.images = Counter("bananagate_images", "Output images delivered.", ["model"], registry=r)
        self.cost = Counter(
            "bananagate_cost_usd",
            "Money charged to keys, in USD (the ledger is exact).",
            ["model"],
            registry=r,
        )
        self.upstream_errors = Counter(
            "bananagate_upstream_errors",
            "Calls that ended in an upstream error, by channel and status.",
            ["channel", "status"],
            registry=r,
        )
        self.rejected = Counter(
            "bananagate_rejected",
            "Requests refused by a key's limits before reaching the upstream.",
            ["reason"],
            registry=r,
        )

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            prom_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)

    async def endpoint(self, request: Request) -> Response:
        return Response(self.render(), media_type=CONTENT_TYPE_LATEST)
