"""The OpenAI-compatible surface under `/v1` (protocol reference §8): images, chat, models, and
the signed image links `response_format=url` hands out.

These routes sit before the Gemini catch-all `/{version}/{path}` so they win for their paths.
`/v1/models[/{id}]` is shared with the Gemini API's `/v1` alias and is told apart by how the
caller authenticates: `x-goog-api-key` or `?key=` (what Gemini clients send) gets Gemini's
shape and errors, anything else (Bearer, raw Authorization, no key) OpenAI's.
"""

from __future__ import annotations

import anyio
import anyio.to_thread
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Route

from bananagate.imagestore import ImageStore, LinkRefused
from bananagate.protocol.openai_wire import OpenAIError
from bananagate.server.fetch import FetchPolicy, ImageFetcher
from bananagate.server.gemini import GeminiRoutes
from bananagate.server.openai_chat import ChatRoutes
from bananagate.server.openai_common import model_not_found, openai_endpoint, openai_json
from bananagate.server.openai_images import ImagesRoutes
from bananagate.settings import Settings

_ALL = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


def fetch_policy(settings: Settings) -> FetchPolicy:
    return FetchPolicy(
        max_bytes=settings.fetch_max_bytes,
        timeout=settings.fetch_timeout,
        allow_private=settings.fetch_allow_private,
        allowed_networks=FetchPolicy.parse_networks(settings.fetch_allowed_networks),
    )


def wants_gemini(request: Request) -> bool:
    """True for requests authenticated the way Gemini clients do it."""
    return bool(request.headers.get("x-goog-api-key") or "key" in request.query_params)


class OpenAIRoutes:
    def __init__(self, gemini: GeminiRoutes, settings: Settings) -> None:
        self.gemini = gemini
        self.settings = settings
        self.auth = gemini.auth
        self.router = gemini.router
        self.fetcher = ImageFetcher(fetch_policy(settings))
        self._store: ImageStore | None = None
        self._store_lock = anyio.Lock()
        self.images = ImagesRoutes(
            gemini.pipeline,
            self.auth,
            gemini.max_body_bytes,
            self.image_store,
            settings.public_url,
            idempotency=gemini.idempotency,
        )
        self.chat = ChatRoutes(gemini.pipeline, self.auth, gemini.max_body_bytes, self.fetcher)
        self._openai_models = openai_endpoint("GET")(self._list_or_get_model)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v1/images/generations", openai_endpoint("POST")(self.images.generations), methods=_ALL),
            Route("/v1/images/edits", openai_endpoint("POST")(self.images.edits), methods=_ALL),
            Route("/v1/chat/completions", openai_endpoint("POST")(self.chat.completions), methods=_ALL),
            Route("/v1/files/images/{name}", openai_endpoint("GET", "HEAD")(self.image_file), methods=_ALL),
            Route("/v1/models", self.models, methods=_ALL),
            Route("/v1/models/{model_id}", self.models, methods=_ALL),
        ]

    async def aclose(self) -> None:
        await self.fetcher.aclose()

    async def image_store(self) -> ImageStore:
        """Opened on first use: the key file and directory are only made if links are asked for."""
        async with self._store_lock:
            if self._store is None:
                s = self.settings
                self._store = await anyio.to_thread.run_sync(
                    ImageStore.open, s.ensure_data_dir(), s.secret_key, s.image_url_ttl
                )
            return self._store

    # --- /v1/models ---------------------------------------------------------------------------------

    async def models(self, request: Request) -> Response:
        model_id = request.path_params.get("model_id")
        # Gemini paths such as `/v1/models/x:generateContent` (any method) are Gemini's alone.
        if wants_gemini(request) or (model_id is not None and ":" in model_id):
            path = "models" if model_id is None else f"models/{model_id}"
            scope = {**request.scope, "path_params": {"version": "v1", "path": path}}
            return await self.gemini.dispatch(Request(scope, request.receive))
        return await self._openai_models(request)

    async def _list_or_get_model(self, request: Request) -> Response:
        await self.auth.authenticate(request)
        model_id = request.path_params.get("model_id")
        if model_id is None:
            return openai_json({"object": "list", "data": [_model(m.id) for m in self.router.models()]})
        model = self.router.find(model_id)
        if model is None:
            raise model_not_found(model_id)
        return openai_json(_model(model_id))

    # --- /v1/files/images/{name} ------------------------------------------------------------------------

    async def image_file(self, request: Request) -> Response:
        """A stored image; the signed link is the credential (no API key: links go to browsers)."""
        store = await self.image_store()
        try:
            image = store.open_link(
                request.path_params["name"], request.query_params.get("exp"), request.query_params.get("sig")
            )
        except LinkRefused as exc:
            code = "image_not_found" if exc.status == 404 else "invalid_image_link"
            raise OpenAIError(exc.status, exc.message, error_code=code) from None
        headers = {"cache-control": "private, max-age=300", "x-content-type-options": "nosniff"}
        return FileResponse(image.path, media_type=image.mime_type, headers=headers)


def _model(model_id: str) -> dict[str, object]:
    # The catalog has no release dates; 0 says "unknown" rather than inventing one.
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "google"}
