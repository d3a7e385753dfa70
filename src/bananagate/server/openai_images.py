"""`POST /v1/images/generations` and `POST /v1/images/edits` on Gemini image models.

`n` images are `n` parallel `generateContent` calls (Gemini refuses candidateCount > 1). When
some of them fail, the answer is honest rather than all-or-nothing: HTTP 200 with the images
that were made, an `errors` list naming each failed index with its OpenAI-style error, and the
header `x-bananagate-images-failed`; `usage` counts only the calls that produced images. When
all fail, the first failure is the answer (its status and envelope).

Both routes honour `Idempotency-Key` (server/idempotency.py). A JSON body is fingerprinted by
its bytes; a multipart body by its fields and the SHA-256 of each image, as clients draw a new
multipart boundary for every retry of the same request.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import anyio.to_thread
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response

from bananagate.imagestore import ImageStore
from bananagate.protocol import base64codec
from bananagate.protocol.catalog import ImageModel
from bananagate.protocol.errors import ApiError
from bananagate.protocol.openai_wire import (
    OUTPUT_FORMATS,
    ImagesParams,
    InputImage,
    bad_request,
    failure_entry,
    images_request,
    images_usage,
    no_image_error,
    parse_images_params,
    read_gemini,
)
from bananagate.protocol.response import Usage
from bananagate.protocol.validation import load_json_object
from bananagate.server.auth import Authenticator, Principal
from bananagate.server.body import read_body
from bananagate.server.deadlines import request_deadline
from bananagate.server.fetch import sniff_image_type
from bananagate.server.idempotency import Idempotency, idempotent
from bananagate.server.openai_common import (
    as_api_error,
    build_call,
    fan_out,
    generate,
    model_not_found,
    now,
    openai_error_response,
    openai_json,
    trace_headers,
)
from bananagate.server.pipeline import Pipeline

DEFAULT_MODEL = "gemini-2.5-flash-image"
_IMAGE_FIELDS = ("image", "image[]")
MASK_REFUSED = (
    "'mask' is not supported: Gemini image models have no mask input and edit from the prompt "
    "alone. Describe the region to change in the prompt instead (e.g. 'replace only the sky')."
)


class ImagesRoutes:
    def __init__(
        self,
        pipeline: Pipeline,
        auth: Authenticator,
        max_body_bytes: int,
        image_store: Callable[[], Awaitable[ImageStore]],
        public_url: str | None,
        idempotency: Idempotency | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.idempotency = idempotency
        self.auth = auth
        self.max_body_bytes = max_body_bytes
        self.image_store = image_store
        self.public_url = public_url.rstrip("/") if public_url else None

    async def generations(self, request: Request) -> Response:
        principal = await self.auth.authenticate(request)
        request_deadline(request, self.pipeline.deadline_seconds)
        body = await read_body(request, self.max_body_bytes)
        params = self._params(load_json_object(body))
        return await self._once(
            request,
            principal,
            "images/generations",
            params,
            lambda: hashlib.sha256(body).digest(),
            lambda: self._answer(request, principal, params, []),
        )

    async def edits(self, request: Request) -> Response:
        principal = await self.auth.authenticate(request)
        request_deadline(request, self.pipeline.deadline_seconds)
        body = await read_body(request, self.max_body_bytes)

        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        # The body is read once under the size cap above, then parsed from memory.
        form = await Request(request.scope, replay).form(max_files=64, max_fields=64)
        try:
            if form.get("mask") is not None:
                raise bad_request(MASK_REFUSED, "mask", "unsupported_parameter")
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
            params = self._params(fields)
            uploads = [v for k, v in form.multi_items() if _is_image_field(k) and isinstance(v, UploadFile)]
            images = [await self._input_image(upload, i) for i, upload in enumerate(uploads)]
        finally:
            await form.close()
        if not images:
            raise bad_request(
                "At least one 'image' file is required, sent as multipart/form-data.",
                "image",
                "missing_image",
            )
        limit = params.model.max_input_images
        if len(images) > limit:
            raise bad_request(
                f"Too many images: {len(images)}. {params.model.id} accepts at most {limit} per request.",
                "image",
                "too_many_images",
            )
        return await self._once(
            request,
            principal,
            "images/edits",
            params,
            lambda: _form_digest(fields, images),
            lambda: self._answer(request, principal, params, images),
        )

    async def _once(
        self,
        request: Request,
        principal: Principal,
        route: str,
        params: ImagesParams,
        body_digest: Callable[[], bytes],
        produce: Callable[[], Awaitable[Response]],
    ) -> Response:
        """`produce()`, or the answer kept for the request's `Idempotency-Key`."""
        return await idempotent(
            self.idempotency,
            request,
            principal,
            route=route,
            model=params.model_id,
            body_digest=body_digest,
            produce=produce,
            render=openai_error_response,
        )

    def _params(self, fields: dict[str, Any]) -> ImagesParams:
        model_id = fields.get("model") or DEFAULT_MODEL
        if not isinstance(model_id, str):
            raise bad_request("'model' must be a string.", "model", "invalid_type")
        model: ImageModel | None = self.pipeline.router.find(model_id)
        if model is None:
            raise model_not_found(model_id)
        return parse_images_params(fields, model, model_id)

    @staticmethod
    async def _input_image(upload: UploadFile, index: int) -> InputImage:
        data = await upload.read()
        # The bytes decide the type: SDKs often send application/octet-stream for raw bytes.
        mime = sniff_image_type(data)
        if mime is None:
            raise bad_request(
                f"image[{index}] ({upload.filename or 'unnamed'}) is not a PNG, JPEG, WebP, HEIC "
                "or HEIF image.",
                "image",
                "invalid_image_format",
            )
        return InputImage(mime, data)

    async def _answer(
        self, request: Request, principal: Principal, params: ImagesParams, images: list[InputImage]
    ) -> Response:
        call = build_call(
            request, params.model, params.model_id, images_request(params, images), "generateContent"
        )
        calls = fan_out(call, params.n, request)
        outcomes = await asyncio.gather(
            *(generate(self.pipeline, c, principal) for c in calls), return_exceptions=True
        )
        items: list[dict[str, Any]] = []
        usages: list[Usage] = []
        failures: list[tuple[int, ApiError]] = []
        formats: set[str] = set()
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, Exception):
                    raise outcome  # cancellation and friends are not "a failed image"
                failures.append((index, as_api_error(outcome)))
                continue
            result = read_gemini(outcome)
            if not result.images:
                failures.append((index, no_image_error(result)))
                continue
            usages.append(result.usage)
            for image in result.images:
                formats.add(image.mime_type)
                items.append(await self._item(request, params, image.mime_type, image.data))
        if not items:
            raise failures[0][1]
        out: dict[str, Any] = {"created": now(), "data": items, "usage": images_usage(usages)}
        if len(formats) == 1 and (fmt := OUTPUT_FORMATS.get(formats.pop())):
            out["output_format"] = fmt
        pixels = params.size.pixels(params.model)
        if pixels is not None:
            out["size"] = f"{pixels[0]}x{pixels[1]}"
        headers = trace_headers(calls)
        if failures:
            out["errors"] = [failure_entry(i, e) for i, e in failures]
            headers["x-bananagate-images-failed"] = str(len(failures))
        return openai_json(out, headers=headers)

    async def _item(self, request: Request, params: ImagesParams, mime: str, data: str) -> dict[str, Any]:
        if params.response_format == "b64_json":
            return {"b64_json": data}
        store = await self.image_store()
        name = await anyio.to_thread.run_sync(store.put, base64codec.decode(data), mime)
        base = self.public_url or str(request.base_url).rstrip("/")
        return {"url": f"{base}/v1/files/images/{store.link(name)}"}


def _form_digest(fields: dict[str, Any], images: list[InputImage]) -> bytes:
    """SHA-256 over a multipart request's meaning: its fields (sorted) and each image's bytes."""
    digest = hashlib.sha256()
    for name in sorted(fields):
        digest.update(b"%s=%s\n" % (name.encode(), str(fields[name]).encode()))
    for image in images:
        digest.update(b"image:" + hashlib.sha256(image.data).digest())
    return digest.digest()


def _is_image_field(name: str) -> bool:
    # `image` (one file), `image[]` (openai-python's list form) or `image[0]`, `image[1]`, ...
    return name in _IMAGE_FIELDS or (
        name.startswith("image[") and name[6:-1].isdigit() and name.endswith("]")
    )
