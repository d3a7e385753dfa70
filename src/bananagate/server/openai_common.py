"""What the OpenAI-compatible routes share: the error envelope, building a `Call` from a translated
Gemini body, and running it through the pipeline with upstream failures turned into `ApiError`s."""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from bananagate.protocol.catalog import ImageModel
from bananagate.protocol.errors import ApiError
from bananagate.protocol.openai_wire import OpenAIError, error_envelope
from bananagate.protocol.validation import parse_and_check
from bananagate.providers.base import Answer, Call, Method, UpstreamError, UpstreamTimeout
from bananagate.server.auth import Principal
from bananagate.server.deadlines import DEADLINE_STATE
from bananagate.server.gemini import FORWARDED_HEADERS
from bananagate.server.pipeline import Pipeline
from bananagate.server.timing import SERVER_TIMING, answer_headers, timing_of

log = logging.getLogger("bananagate.server")

OPENAI_JSON = "application/json"
Handler = Callable[[Request], Awaitable[Response]]


def openai_json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type=OPENAI_JSON, headers=headers)


def openai_error_response(error: ApiError) -> Response:
    return openai_json(error_envelope(error), error.code, error.headers)


def as_api_error(exc: BaseException) -> ApiError:
    """Any failure of one upstream call as the error its client should see."""
    if isinstance(exc, UpstreamError):
        return exc.error
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, UpstreamTimeout):
        return ApiError(504, "The upstream did not answer in time.", "DEADLINE_EXCEEDED")
    log.error("OpenAI route: unexpected failure", exc_info=exc)
    return ApiError(500, "An internal error has occurred.", "INTERNAL")


def openai_endpoint(*methods: str) -> Callable[[Handler], Handler]:
    """Wrap a handler so every error it raises leaves in OpenAI's envelope, and other methods
    than `methods` get OpenAI's 405 (rather than falling through to the Gemini catch-all)."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            timing = timing_of(request)  # Server-Timing counts from here
            response = await _handle(request)
            if SERVER_TIMING not in response.headers:
                response.headers[SERVER_TIMING] = timing.header(request.scope["state"].get("calls", ()))
            return response

        async def _handle(request: Request) -> Response:
            if request.method not in methods:
                allowed = ", ".join(methods)
                return openai_error_response(
                    ApiError(
                        405, f"Method {request.method} is not allowed for {request.url.path} (use {allowed})."
                    )
                )
            try:
                return await handler(request)
            except HTTPException as exc:  # e.g. a malformed multipart body
                return openai_error_response(OpenAIError(exc.status_code, str(exc.detail)))
            except Exception as exc:
                return openai_error_response(as_api_error(exc))

        return endpoint

    return wrap


def model_not_found(model_id: str) -> OpenAIError:
    return OpenAIError(
        404,
        f"The model '{model_id}' does not exist. GET /v1/models lists the models this gateway serves.",
        param="model",
        error_type="invalid_request_error",
        error_code="model_not_found",
    )


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def build_call(
    request: Request, model: ImageModel, model_id: str, body: dict[str, Any], method: Method
) -> Call:
    """A validated Call for a translated Gemini body (the same checks a Gemini client gets).
    The request remembers its calls, for the answer's `Server-Timing`."""
    raw = orjson.dumps(body)
    headers = {h: v for h in FORWARDED_HEADERS if (v := request.headers.get(h)) is not None}
    call = Call(
        model=model,
        model_id=model_id,
        method=method,
        body=raw,
        request=parse_and_check(raw, model),
        headers=headers,
        request_id=request.scope.get("state", {}).get("request_id", ""),
        # Set by the route's entry (`request_deadline`), so it counts from the request's arrival.
        deadline=request.scope.get("state", {}).get(DEADLINE_STATE),
    )
    request.scope.setdefault("state", {})["calls"] = [call]
    return call


def fan_out(call: Call, n: int, request: Request | None = None) -> list[Call]:
    """`n` independent copies of a call; with n > 1 each gets its own request id suffix
    (`<id>-1`, `<id>-2`, ...) so that per-call records (ledger, logs) stay distinct."""
    calls = [call]
    if n > 1:
        calls = [dataclasses.replace(call, request_id=f"{call.request_id}-{i + 1}") for i in range(n)]
    if request is not None:
        request.scope.setdefault("state", {})["calls"] = calls
    return calls


async def generate(pipeline: Pipeline, call: Call, principal: Principal) -> dict[str, Any]:
    """Run one call; the parsed JSON answer, or an ApiError for any failure."""
    answer: Answer = await pipeline.generate(call, principal)
    try:
        data = orjson.loads(answer.body)
    except orjson.JSONDecodeError:
        raise ApiError(502, "The upstream answered with a body that is not JSON.", "UNAVAILABLE") from None
    if not isinstance(data, dict):
        raise ApiError(502, "The upstream answered with an unexpected JSON shape.", "UNAVAILABLE")
    if answer.status != 200 or "error" in data:
        raise upstream_error_event(data, answer.status)
    return data


def upstream_error_event(data: dict[str, Any], status: int = 500) -> ApiError:
    """A Google error body (or stream event) as an ApiError."""
    error = data.get("error")
    if not isinstance(error, dict):
        return ApiError(status if status >= 400 else 502, "The upstream reported an error.")
    code = error.get("code")
    code = code if isinstance(code, int) and 400 <= code <= 599 else (status if status >= 400 else 500)
    return ApiError(code, str(error.get("message") or "The upstream reported an error."), error.get("status"))


def trace_headers(calls: list[Call]) -> dict[str, str]:
    """How the answer was served (same headers as the Gemini routes), over all fanned-out calls."""
    return answer_headers(calls)
