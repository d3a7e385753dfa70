"""Application factory: wires settings, store, providers and routes into one Starlette app."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bananagate.protocol.errors import ApiError
from bananagate.providers.base import Provider
from bananagate.server.auth import Authenticator, Principal
from bananagate.server.gemini import GeminiRoutes
from bananagate.server.middleware import RequestContextMiddleware
from bananagate.server.pipeline import Pipeline
from bananagate.server.responses import error_response, json_response
from bananagate.server.routing import ModelRouter
from bananagate.settings import Settings
from bananagate.store import Store

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
        return error_response(ApiError(405, message, "METHOD_NOT_ALLOWED"))
    return error_response(ApiError(exc.status_code, str(exc.detail)))


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
        record = await anyio.to_thread.run_sync(current_store().authenticate, secret)
        return Principal(record.id, record.name) if record else None

    async def touch(key_id: int) -> None:
        await anyio.to_thread.run_sync(current_store().touch, key_id, datetime.now(UTC))

    router = ModelRouter(provider or _default_provider(settings))
    pipeline = Pipeline(router)
    gemini = GeminiRoutes(pipeline, Authenticator(lookup, touch), settings.max_body_bytes)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        owned = store is None
        if owned:
            settings.ensure_data_dir()
            state["store"] = await anyio.to_thread.run_sync(Store.open, settings.resolved_database_url())
        else:
            state["store"] = store
        try:
            yield
        finally:
            await router.aclose()
            if owned:
                current_store().close()

    all_methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET", "HEAD"]),
            Route("/{version}/{path:path}", gemini.dispatch, methods=all_methods),
        ],
        middleware=[Middleware(RequestContextMiddleware)],
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
        },
        lifespan=lifespan,
    )
