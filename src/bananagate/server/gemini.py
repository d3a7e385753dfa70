"""The Gemini-native routes: `/v1beta/models[...]` (and the same under `/v1`)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Match, Route
from starlette.types import Scope

from bananagate.protocol.catalog import ImageModel, strip_model_prefix
from bananagate.protocol.errors import ApiError, invalid_argument, model_not_found
from bananagate.protocol.scan import Bytes
from bananagate.protocol.validation import load_json_object, parse_and_check, parse_generate_request
from bananagate.providers.base import Call, Method, UpstreamError, UpstreamTimeout
from bananagate.server.auth import Authenticator, Principal
from bananagate.server.body import read_body
from bananagate.server.deadlines import request_deadline
from bananagate.server.idempotency import Idempotency, idempotent
from bananagate.server.pipeline import Pipeline
from bananagate.server.responses import JSON_TYPE, error_response, json_response, raw_json_response
from bananagate.server.timing import SERVER_TIMING, answer_headers, timing_of

# `:batchGenerateContent` (request, principal, model, requested model id, body): queues a batch.
BatchHandler = Callable[[Request, Principal, ImageModel, str, Bytes], Awaitable[Response]]

log = logging.getLogger("bananagate.server")

API_VERSIONS = ("v1beta", "v1")
MODEL_METHODS = ("generateContent", "streamGenerateContent", "countTokens", "batchGenerateContent")
# Client headers a provider may need to see (everything else stays at the gateway).
FORWARDED_HEADERS = ("x-bananagate-emulate",)


def model_resource(model: ImageModel, model_id: str | None = None) -> dict[str, Any]:
    """The `Model` object of `models.list/get` (protocol reference §1.4)."""
    mid = model_id or model.id
    out: dict[str, Any] = {
        "name": f"models/{mid}",
        "baseModelId": model.id,
        "version": model.version,
        "displayName": model.display_name,
        "description": model.description,
        "inputTokenLimit": model.input_token_limit,
        "outputTokenLimit": model.output_token_limit,
        "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"],
        "temperature": 1,
        "maxTemperature": 1,
        "topP": 0.95,
        "topK": 64,
    }
    if model.thinking:
        out["thinking"] = True
    return out


def not_found(path: str) -> ApiError:
    return ApiError(404, f"Method not found: {path}", "NOT_FOUND")


def method_not_allowed(method: str, path: str, allowed: str) -> ApiError:
    # RFC 9110 §15.5.6: a 405 names the methods the resource does allow.
    return ApiError(
        405, f"Method {method} is not allowed for {path}.", "METHOD_NOT_ALLOWED", headers={"allow": allowed}
    )


class PrefixRoute(Route):
    """A route that looks at its pattern only for paths under `prefix`.

    The Gemini model routes carry nearly all the traffic but are matched last (their catch-all
    pattern would shadow everything else): Starlette tried some thirty patterns first on every
    call. Put first, this answers the paths no other route can match after one `startswith`.
    """

    def __init__(self, prefix: str, path: str, endpoint: Callable[..., Any], *, methods: list[str]) -> None:
        super().__init__(path, endpoint, methods=methods)
        self.prefix = prefix

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            return Match.NONE, {}
        return super().matches(scope)


class GeminiRoutes:
    def __init__(
        self,
        pipeline: Pipeline,
        auth: Authenticator,
        max_body_bytes: int,
        idempotency: Idempotency | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.idempotency = idempotency
        self.router = pipeline.router
        self.auth = auth
        self.max_body_bytes = max_body_bytes
        self.batch_handler: BatchHandler | None = None  # set by server/jobs_routes.py

    async def dispatch(self, request: Request) -> Response:
        """Entry for `/{version}/{path}`: split the path into resource and method, then route."""
        timing_of(request)  # Server-Timing counts from here
        version = request.path_params["version"]
        path = request.path_params["path"].strip("/")
        if version not in API_VERSIONS or not (path == "models" or path.startswith("models/")):
            raise not_found(request.url.path)
        if path == "models":
            self._require(request, "GET")
            await self.auth.authenticate(request)
            return self.list_models(request)
        resource = strip_model_prefix(path[len("models/") :])
        model_id, sep, method = resource.rpartition(":")
        if not sep:
            self._require(request, "GET")
            await self.auth.authenticate(request)
            return self.get_model(resource, version)
        if method not in MODEL_METHODS or not model_id:
            raise not_found(request.url.path)
        self._require(request, "POST")
        principal = await self.auth.authenticate(request)
        request_deadline(request, self.pipeline.deadline_seconds)  # the client's time starts now
        model = self.router.find(model_id)
        if model is None:
            shown = "StreamGenerateContent" if method == "streamGenerateContent" else method
            raise model_not_found(model_id, shown, version)
        body = await read_body(request, self.max_body_bytes)
        if method == "countTokens":
            return self.count_tokens(body, model)
        if method == "batchGenerateContent":
            if self.batch_handler is None:
                raise not_found(request.url.path)
            return await self.batch_handler(request, principal, model, model_id, body)
        call = self._call(request, model, model_id, method, body)  # type: ignore[arg-type]
        if method == "streamGenerateContent":
            return await self.stream(request, call, principal)
        return await self.answer(request, call, principal)

    def routes(self, methods: list[str]) -> tuple[Route, Route]:
        """The fast route for `/v1beta/models/...` (to go first) and the catch-all (to go last)."""
        return (
            PrefixRoute("/v1beta/models", "/{version}/{path:path}", self.dispatch, methods=methods),
            Route("/{version}/{path:path}", self.dispatch, methods=methods),
        )

    @staticmethod
    def _require(request: Request, method: str) -> None:
        allowed = ("GET", "HEAD") if method == "GET" else (method,)
        if request.method not in allowed:
            raise method_not_allowed(request.method, request.url.path, ", ".join(allowed))

    def list_models(self, request: Request) -> Response:
        try:
            page_size = int(request.query_params.get("pageSize", "50"))
            offset = int(request.query_params.get("pageToken") or "0")
        except ValueError:
            raise invalid_argument("pageSize and pageToken must be integers.") from None
        if offset < 0:
            raise invalid_argument(f"Invalid pageToken: {offset}.")
        page_size = max(1, min(page_size, 1000))
        models = [model_resource(m) for m in self.router.models()]
        page = models[offset : offset + page_size]
        out: dict[str, Any] = {"models": page}
        if offset + page_size < len(models):
            out["nextPageToken"] = str(offset + page_size)
        return json_response(out)

    def get_model(self, model_id: str, version: str) -> Response:
        model = self.router.find(model_id)
        if model is None:
            raise ApiError(
                404, f"Model is not found: models/{model_id} for api version {version}", "NOT_FOUND"
            )
        return json_response(model_resource(model, model_id))

    def count_tokens(self, body: Bytes, model: ImageModel) -> Response:
        data = load_json_object(body)
        # Google also accepts the request wrapped as {"generateContentRequest": {...}}.
        inner = data.get("generateContentRequest") or data.get("generate_content_request")
        request = parse_generate_request(inner if isinstance(inner, dict) else data)
        text_tokens = max(1, -(-len(request.prompt_text()) // 4)) if request.prompt_text() else 0
        image_tokens = len(request.input_images()) * model.input_image_tokens
        return json_response({"totalTokens": text_tokens + image_tokens})

    def _call(self, request: Request, model: ImageModel, model_id: str, method: Method, body: Bytes) -> Call:
        parsed = parse_and_check(body, model, lean=True)  # the Base64 is checked, not parsed
        headers = {h: v for h in FORWARDED_HEADERS if (v := request.headers.get(h)) is not None}
        return Call(
            model=model,
            model_id=strip_model_prefix(model_id),
            method=method,
            body=body,
            request=parsed,
            headers=headers,
            request_id=request.scope.get("state", {}).get("request_id", ""),
            deadline=request_deadline(request, self.pipeline.deadline_seconds),
        )

    async def answer(self, request: Request, call: Call, principal: Principal) -> Response:
        """`generateContent`: the pipeline's answer, or the one kept for its `Idempotency-Key`."""
        timing = timing_of(request)
        try:
            response = await idempotent(
                self.idempotency,
                request,
                principal,
                route="generateContent",
                model=call.model_id,
                body_digest=lambda: hashlib.sha256(call.body).digest(),
                produce=lambda: self.generate(call, principal),
                render=error_response,
            )
        except ApiError as exc:
            exc.headers[SERVER_TIMING] = timing.header([call])
            raise
        # Last: the gateway's time covers everything the client waited for.
        response.headers[SERVER_TIMING] = timing.header([call])
        return response

    async def generate(self, call: Call, principal: Principal) -> Response:
        try:
            answer = await self.pipeline.generate(call, principal)
        except UpstreamError as exc:
            exc.error.headers.update(_trace_headers(call))
            raise exc.error from None
        except UpstreamTimeout:
            raise ApiError(
                504, "The upstream did not answer in time.", "DEADLINE_EXCEEDED", headers=_trace_headers(call)
            ) from None
        except ApiError as exc:
            exc.headers.update(_trace_headers(call))
            raise
        return raw_json_response(answer.body, answer.status, {**answer.headers, **_trace_headers(call)})

    async def stream(self, request: Request, call: Call, principal: Principal) -> Response:
        sse = request.query_params.get("alt", "json").lower() == "sse"
        events = self.pipeline.stream(call, principal)
        # Fetch the first event before answering: a failure now is an ordinary error response.
        timing = timing_of(request)
        try:
            first = await events.__anext__()
        except StopAsyncIteration:
            first = None
        except UpstreamError as exc:
            exc.error.headers.update({**_trace_headers(call), SERVER_TIMING: timing.header([call])})
            raise exc.error from None
        except UpstreamTimeout:
            headers = {**_trace_headers(call), SERVER_TIMING: timing.header([call])}
            message = "The upstream did not answer in time."
            raise ApiError(504, message, "DEADLINE_EXCEEDED", headers=headers) from None
        except ApiError as exc:
            exc.headers.update({**_trace_headers(call), SERVER_TIMING: timing.header([call])})
            raise
        body = _sse_frames(first, events) if sse else _json_array(first, events)
        media_type = "text/event-stream" if sse else JSON_TYPE
        # Up to the first event: the stream's cost is only known at its end, so it has no cost header.
        headers = {"cache-control": "no-cache", **_trace_headers(call), SERVER_TIMING: timing.header([call])}
        return StreamingResponse(body, media_type=media_type, headers=headers)


def _trace_headers(call: Call) -> dict[str, str]:
    """How the answer was served: attempts, channel, affinity, cost, the key's limits."""
    return answer_headers([call])


def _error_event(exc: BaseException) -> bytes:
    if isinstance(exc, UpstreamError):
        error = exc.error
    elif isinstance(exc, ApiError):
        error = exc
    else:
        log.exception("stream failed", exc_info=exc)
        error = ApiError(500, "An internal error has occurred.", "INTERNAL")
    return orjson.dumps(error.to_dict())


async def _events_after(first: bytes | None, rest: AsyncGenerator[bytes, None]) -> AsyncIterator[bytes]:
    """The provider's events with a failure after the start turned into a final error event."""
    try:
        if first is not None:
            yield first
            try:
                async for event in rest:
                    yield event
            except Exception as exc:
                yield _error_event(exc)
    finally:
        # Closes the upstream side at once when the client goes away mid-stream.
        await rest.aclose()


async def _sse_frames(first: bytes | None, rest: AsyncGenerator[bytes, None]) -> AsyncIterator[bytes]:
    # Google's framing: one `data: <json>` line per event, CRLF line ends, no [DONE].
    async for event in _events_after(first, rest):
        yield b"".join((b"data: ", event, b"\r\n\r\n"))  # one copy of a megabyte event, not two


async def _json_array(first: bytes | None, rest: AsyncGenerator[bytes, None]) -> AsyncIterator[bytes]:
    # Without alt=sse the stream is one JSON array, written progressively.
    yield b"["
    separator = b""
    async for event in _events_after(first, rest):
        yield separator + event
        separator = b",\r\n"
    yield b"]"
