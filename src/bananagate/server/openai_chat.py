"""`POST /v1/chat/completions` on Gemini image models, streamed or not.

Remote `image_url`s are fetched by the SSRF-guarded fetcher and inlined before the call. A
stream is OpenAI's `chat.completion.chunk` SSE ending with `data: [DONE]`; a failure before the
first event is an ordinary error response, one after it a final `data: {"error": {...}}` event
(which openai-python raises as `APIError`) with no `[DONE]`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from bananagate.protocol.errors import ApiError
from bananagate.protocol.openai_chat import ChatParams, ChatStream, chat_completion, chat_request
from bananagate.protocol.openai_wire import bad_request, error_envelope, read_gemini
from bananagate.protocol.validation import load_json_object
from bananagate.server.auth import Authenticator, Principal
from bananagate.server.body import read_body
from bananagate.server.deadlines import request_deadline
from bananagate.server.fetch import ImageFetcher, inline_file_data
from bananagate.server.openai_common import (
    as_api_error,
    build_call,
    generate,
    model_not_found,
    new_id,
    now,
    openai_json,
    trace_headers,
    upstream_error_event,
)
from bananagate.server.pipeline import Pipeline

log = logging.getLogger("bananagate.server")


class ChatRoutes:
    def __init__(
        self, pipeline: Pipeline, auth: Authenticator, max_body_bytes: int, fetcher: ImageFetcher
    ) -> None:
        self.pipeline = pipeline
        self.auth = auth
        self.max_body_bytes = max_body_bytes
        self.fetcher = fetcher

    async def completions(self, request: Request) -> Response:
        principal = await self.auth.authenticate(request)
        request_deadline(request, self.pipeline.deadline_seconds)
        body = load_json_object(await read_body(request, self.max_body_bytes))
        model_id = body.get("model")
        if not isinstance(model_id, str) or not model_id:
            raise bad_request("'model' is required.", "model", "missing_model")
        model = self.pipeline.router.find(model_id)
        if model is None:
            raise model_not_found(model_id)
        params = chat_request(body, model, model_id)
        await inline_file_data(
            params.gemini,
            self.fetcher,
            max_images=model.max_input_images,
            max_total_bytes=self.max_body_bytes,
        )
        if params.stream:
            return await self._stream(request, principal, params)
        call = build_call(request, model, model_id, params.gemini, "generateContent")
        data = await generate(self.pipeline, call, principal)
        answer = chat_completion(
            read_gemini(data), completion_id=new_id("chatcmpl"), created=now(), model_id=model_id
        )
        return openai_json(answer, headers=trace_headers([call]))

    async def _stream(self, request: Request, principal: Principal, params: ChatParams) -> Response:
        call = build_call(request, params.model, params.model_id, params.gemini, "streamGenerateContent")
        events = self.pipeline.stream(call, principal)
        # The first event decides between an ordinary error response and a stream.
        try:
            first: bytes | None = await events.__anext__()
        except StopAsyncIteration:
            first = None
        except Exception as exc:
            await events.aclose()
            raise as_api_error(exc) from None
        if first is not None:
            data = _load(first)
            if "error" in data:
                await events.aclose()
                raise upstream_error_event(data)
        state = ChatStream(new_id("chatcmpl"), now(), params.model_id, params.include_usage)
        headers = {"cache-control": "no-cache", **trace_headers([call])}
        return StreamingResponse(_sse(state, first, events), media_type="text/event-stream", headers=headers)


def _load(event: bytes) -> dict[str, Any]:
    data = orjson.loads(event)
    if not isinstance(data, dict):
        raise ApiError(502, "The upstream sent a stream event that is not a JSON object.", "UNAVAILABLE")
    return data


def _frame(obj: dict[str, Any]) -> bytes:
    return b"".join((b"data: ", orjson.dumps(obj), b"\n\n"))


async def _sse(
    state: ChatStream, first: bytes | None, rest: AsyncGenerator[bytes, None]
) -> AsyncIterator[bytes]:
    try:
        pending = first
        while True:
            if pending is not None:
                data = _load(pending)
                if "error" in data:
                    yield _frame(error_envelope(upstream_error_event(data)))
                    return
                for chunk in state.event(read_gemini(data)):
                    yield _frame(chunk)
            try:
                pending = await rest.__anext__()
            except StopAsyncIteration:
                break
        for chunk in state.finish():
            yield _frame(chunk)
        yield b"data: [DONE]\n\n"
    except Exception as exc:
        # Headers are gone: the error can only be the last event (openai-python raises it).
        yield _frame(error_envelope(as_api_error(exc)))
    finally:
        # Closes the upstream side at once when the client goes away mid-stream.
        await rest.aclose()
