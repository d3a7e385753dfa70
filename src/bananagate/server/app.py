"""Application factory: wires settings, store, providers and routes into one Starlette app."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import anyio.to_thread
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from bananagate.protocol.errors import ApiError
from bananagate.providers.base import Provider
from bananagate.server.admin import AdminApi, ensure_admin_key
from bananagate.server.allocator import IdleTrimmer, heap_trimmer
from bananagate.server.auth import Authenticator, AuthFailureLimiter, Principal
from bananagate.server.gemini import GeminiRoutes
from bananagate.server.guarantees import build_guarantees
from bananagate.server.jobs import JobService
from bananagate.server.limits import build_limiter
from bananagate.server.metering import GatewayMeter, price_table
from bananagate.server.metrics import Metrics
from bananagate.server.middleware import InFlight, RequestContextMiddleware
from bananagate.server.openai import OpenAIRoutes
from bananagate.server.openapi import gateway_openapi
from bananagate.server.pipeline import Pipeline
from bananagate.server.responses import error_response, json_response
from bananagate.server.routing import ModelRouter, build_router
from bananagate.server.usage import UsageRoutes
from bananagate.settings import Settings
from bananagate.store import Store, StoreUnavailable

log = logging.getLogger("bananagate.server")


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response(ApiError(404, f"Method not found: {request.url.path}", "NOT_FOUND"))
    if exc.status_code == 405:
        message = f"Method {request.method} is not allowed for {request.url.path}."
        return error_response(ApiError(405, message, "METHOD_NOT_ALLOWED", headers=dict(exc.headers or {})))
    return error_response(ApiError(exc.status_code, str(exc.detail)))


async def _store_down(request: Request, exc: Exception) -> Response:
    # A database that went away mid-request (PostgreSQL stopped, SQLite locked past its busy
    # timeout) is the client's 503 to retry, not a 500: the gateway recovers when it returns.
    log.error("database unavailable on %s %s: %s", request.method, request.url.path, exc)
    return error_response(
        ApiError(503, "The gateway's database is unavailable; please retry.", "UNAVAILABLE")
    )


def _middleware(
    settings: Settings, auth_failures: AuthFailureLimiter, in_flight: InFlight
) -> list[Middleware]:
    stack = [
        Middleware(
            RequestContextMiddleware,
            body_timeout=settings.body_timeout,
            body_min_rate=settings.body_min_rate,
            auth_failures=auth_failures,
            in_flight=in_flight,
        )
    ]
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:
        # Only when configured: without CORS headers a browser page on another site can send
        # requests but never read the answers. Keys travel in headers, never cookies, hence no
        # credentials mode.
        stack.append(
            Middleware(
                CORSMiddleware,
                allow_origins=origins,
                allow_methods=["GET", "POST", "PATCH", "DELETE", "HEAD", "OPTIONS"],
                allow_headers=["*"],
                expose_headers=[
                    "x-request-id",
                    "x-bananagate-cost-usd",
                    "x-bananagate-attempts",
                    "retry-after",
                ],
                max_age=600,
            )
        )
    return stack


async def _to_console(request: Request) -> Response:
    return RedirectResponse("/console/", status_code=308)


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


def _default_provider(settings: Settings) -> Provider:
    from bananagate.providers.emulator import EmulatorProvider

    return EmulatorProvider(
        faults_enabled=settings.emulator_faults, max_image_pixels=settings.max_image_pixels
    )


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    provider: Provider | None = None,
) -> Starlette:
    """The gateway app. `store` and `provider` default to the embedded ones built from settings."""
    state: dict[str, object] = {}

    def current_store() -> Store:
        return state["store"]  # type: ignore[return-value]

    async def lookup(secret: str) -> Principal | None:
        keys = current_store().keys
        # Most requests: a key seen within `key_cache_seconds`, without a thread or the database.
        record = keys.cached(secret)
        if record is None:
            find = functools.partial(keys.authenticate, secret, cache_seconds=settings.key_cache_seconds)
            try:
                record = await anyio.to_thread.run_sync(find)
            except SQLAlchemyError as exc:
                log.error("key lookup failed: %s", exc)
                raise ApiError(503, "The key store is unavailable; please retry.", "UNAVAILABLE") from None
        return Principal(record.id, record.name, record.limits) if record else None

    async def touch(key_id: int) -> None:
        await anyio.to_thread.run_sync(current_store().touch, key_id, datetime.now(UTC))

    # Channels from the config file and the database; a given provider serves every model alone.
    router = ModelRouter(provider) if provider is not None else build_router(settings, current_store)
    # --- metering: limits, budget reservations, ledger, admin and usage routes, /metrics ---
    metrics = Metrics()
    limiter = build_limiter(
        settings.redis_url, prefix=settings.redis_prefix, lease_ttl=settings.reservation_ttl_seconds
    )
    prices = price_table(
        settings.prices, settings.prices_file, charge_without_image=settings.charge_without_image
    )
    meter = GatewayMeter(
        current_store, limiter, prices, reservation_ttl=settings.reservation_ttl_seconds, metrics=metrics
    )
    recorder = None
    if settings.console:
        # Imported here: the console imports the server's modules, not the other way round.
        from bananagate.console import GalleryRecorder

        recorder = GalleryRecorder(current_store, max_backlog_bytes=settings.gallery_backlog_bytes)
    # Request guarantees: Idempotency-Key, conversation affinity, deadlines.
    guarantees = build_guarantees(settings, current_store, meter)
    pipeline = Pipeline(
        router,
        meter,
        images=recorder if settings.gallery == "all" else None,  # every delivered image, or none
        affinity=guarantees.affinity,
        deadline_seconds=settings.request_timeout_seconds,
    )
    auth_failures = AuthFailureLimiter(settings.auth_failures_per_minute)
    in_flight = InFlight()  # requests still running, waited for at shutdown
    authenticator = Authenticator(lookup, touch, failures=auth_failures)
    gemini = GeminiRoutes(pipeline, authenticator, settings.max_body_bytes, guarantees.idempotency)
    admin_key = functools.cache(lambda: ensure_admin_key(settings.admin_key, settings.data_dir))
    admin = AdminApi(current_store, admin_key, prices)
    usage = UsageRoutes(authenticator, current_store)
    openai = OpenAIRoutes(gemini, settings)
    jobs = JobService(settings, current_store, pipeline, meter, gemini)  # async jobs, batches, worker
    console_routes: list[BaseRoute] = []
    if recorder is not None:
        from bananagate.console import build_console

        # The playground's images are kept whatever `gallery` says: it shows them from there.
        playground_pipeline = pipeline.with_images(recorder)
        console = build_console(
            settings,
            store=current_store,
            pipeline=playground_pipeline,
            recorder=recorder,
            admin_key=admin_key,
        )
        console_routes = [
            Route("/console", _to_console, methods=["GET", "HEAD"]),
            Mount("/console", app=console),
        ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        owned = store is None
        if owned:
            settings.ensure_data_dir()
            state["store"] = await anyio.to_thread.run_sync(Store.open, settings.resolved_database_url())
        else:
            state["store"] = store
        if recorder is not None:
            current_store().gallery.configure(settings.resolved_gallery_dir(), settings.gallery_max_bytes)
        # Renews this process's holds and releases those of crashed ones (now, then periodically).
        maintenance = asyncio.create_task(meter.maintain(sweep_interval=settings.sweep_interval_seconds))
        trim = heap_trimmer()
        trimmer = (
            asyncio.create_task(IdleTrimmer(lambda: len(in_flight), lambda: in_flight.ended, trim).run())
            if trim is not None
            else None
        )
        try:
            await router.start()  # loads database channels and starts watching them
            await guarantees.start()
            await jobs.start()
            yield
        finally:
            # Requests cut by the graceful timeout are cancelled by now; let them release their
            # holds and write their ledger rows before the store and the loop go away.
            await in_flight.wait(timeout=10.0)
            await jobs.aclose()  # running jobs go back to the queue
            for task in (maintenance, trimmer):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if recorder is not None:
                await recorder.drain()  # images of answers already delivered still get kept
            await guarantees.aclose()
            await limiter.aclose()
            await router.aclose()
            await openai.aclose()
            if owned:
                current_store().close()

    all_methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    # No other route matches under /v1beta/models: that prefix is tried first, the rest last.
    models_route, catch_all = gemini.routes(all_methods)
    app = Starlette(
        routes=[
            models_route,
            Route("/healthz", healthz, methods=["GET", "HEAD"]),
            Route("/metrics", metrics.endpoint, methods=["GET"]),
            Route("/openapi.json", gateway_openapi, methods=["GET"]),
            *admin.routes(),
            *usage.routes(),
            *console_routes,
            # OpenAI-compatible routes first: the Gemini catch-all below matches every /v1 path.
            *openai.routes(),
            *jobs.routes(),
            catch_all,
        ],
        middleware=_middleware(settings, auth_failures, in_flight),
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            SQLAlchemyError: _store_down,
            StoreUnavailable: _store_down,
        },
        lifespan=lifespan,
    )
    # An unknown path is a 404 in the envelope, not a 307 to the same path plus `/` (`/v1beta`).
    app.router.redirect_slashes = False
    return app


def app_from_env() -> Starlette:
    """The app of one `serve --workers N` process: settings from the `BANANAGATE_*` variables
    the parent exported; each worker opens its own store connections."""
    return create_app(Settings())
