"""Prometheus metrics, served at `/metrics`.

Each app gets its own registry (tests build many apps in one process). With `serve --workers N`
the CLI sets `PROMETHEUS_MULTIPROC_DIR` before the workers start; every worker then writes its
samples there and `/metrics` aggregates all of them, whichever worker answers the scrape.
Label values are bounded (models, channels, statuses, reasons): key names never become labels.
"""

from __future__ import annotations

import os
from typing import Any

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

        # `labels()` validates and locks on every call: the children of each request's label
        # values, looked up once (the values are bounded, see above; the cap is a safety net).
        self._children: dict[tuple[str, ...], tuple[Any, Any, Any, Any]] = {}

    def record_request(
        self, model: str, channel: str, status: str, outcome: str, streamed: bool
    ) -> tuple[Any, Any, Any, Any]:
        """The request counter, latency histogram, images and cost counters of these labels."""
        key = (model, channel, status, outcome, "true" if streamed else "false")
        children = self._children.get(key)
        if children is None:
            if len(self._children) >= 4096:
                self._children.clear()
            children = self._children[key] = (
                self.requests.labels(model, channel, status, outcome),
                self.latency.labels(model, key[4]),
                self.images.labels(model),
                self.cost.labels(model),
            )
        return children

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            prom_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)

    async def endpoint(self, request: Request) -> Response:
        return Response(self.render(), media_type=CONTENT_TYPE_LATEST)
