"""From HTTP answers to results or exceptions: pure functions, no I/O.

Real servers differ in casing (Google emits camelCase; some relays and proxies re-serialise
protobufs as snake_case), so every key is looked up both ways.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from typing import Any

import orjson

from bananagate.client.errors import APIError, NoImageError, SafetyBlockedError, api_error_class
from bananagate.client.result import GeneratedImage, GenerateResult
from bananagate.protocol import base64codec
from bananagate.protocol.errors import retry_delay_of
from bananagate.protocol.response import Usage

COST_HEADER = "x-bananagate-cost-usd"
REQUEST_ID_HEADER = "x-request-id"

# finishReason / blockReason values that mean "a policy filter stopped it" (reference §4.2-4.3).
SAFETY_REASONS: frozenset[str] = frozenset(
    {
        "SAFETY",
        "IMAGE_SAFETY",
        "PROHIBITED_CONTENT",
        "IMAGE_PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "RECITATION",
        "IMAGE_RECITATION",
    }
)

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def snake(name: str) -> str:
    return _CAMEL.sub("_", name).lower()


def pick(obj: Any, camel: str) -> Any:
    """`obj[camel]`, else `obj[snake_case(camel)]`, else None (also when `obj` is not a dict)."""
    if not isinstance(obj, dict):
        return None
    value = obj.get(camel)
    return obj.get(snake(camel)) if value is None else value


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def cost_of(body: Any, headers: Mapping[str, str]) -> float | None:
    """US dollars from the `x-bananagate-cost-usd` header or a `cost` field; None when absent."""
    candidates: list[Any] = [_header(headers, COST_HEADER)]
    cost = pick(body, "cost")
    candidates.append(pick(cost, "usd") if isinstance(cost, dict) else cost)
    for value in candidates:
        if isinstance(value, bool) or value is None:
            continue
        try:
            return float(value)
        except (TypeError, ValueError):
            continue
    return None


def parse_result(
    body: dict[str, Any], headers: Mapping[str, str] | None = None, *, elapsed: float = 0.0, attempts: int = 1
) -> GenerateResult:
    """A `GenerateContentResponse` (either casing) -> GenerateResult. Never raises on shape."""
    headers = headers or {}
    candidates = pick(body, "candidates")
    first = candidates[0] if isinstance(candidates, list) and candidates else {}
    content = pick(first, "content")
    content = content if isinstance(content, dict) else {}
    parts = pick(content, "parts")
    images: list[GeneratedImage] = []
    texts: list[str] = []
    for part in parts if isinstance(parts, list) else []:
        if not isinstance(part, dict) or pick(part, "thought") is True:
            # Thought parts are interim drafts and reasoning, not the answer.
            continue
        blob = pick(part, "inlineData")
        if isinstance(blob, dict) and isinstance(blob.get("data"), str):
            try:
                data = base64codec.decode(blob["data"])
            except ValueError:
                continue
            mime = _str_or_none(pick(blob, "mimeType")) or "application/octet-stream"
            images.append(GeneratedImage(data, mime, _str_or_none(pick(part, "thoughtSignature"))))
        text = part.get("text")
        if isinstance(text, str):
            texts.append(text)
    feedback = pick(body, "promptFeedback")
    usage = pick(body, "usageMetadata")
    return GenerateResult(
        images=images,
        text="".join(texts),
        finish_reason=_str_or_none(pick(first, "finishReason")),
        usage=Usage.from_wire(usage if isinstance(usage, dict) else None),
        raw=body,
        block_reason=_str_or_none(pick(feedback, "blockReason")),
        finish_message=_str_or_none(pick(first, "finishMessage")),
        cost=cost_of(body, headers),
        request_id=_header(headers, REQUEST_ID_HEADER),
        model_version=_str_or_none(pick(body, "modelVersion")),
        response_id=_str_or_none(pick(body, "responseId")),
        content=content,
        elapsed=elapsed,
        attempts=attempts,
    )


def require_image(result: GenerateResult) -> GenerateResult:
    """`result` when it has an image; else SafetyBlockedError or NoImageError, never an empty success."""
    if result.images:
        return result
    if result.block_reason or (result.finish_reason or "") in SAFETY_REASONS:
        raise SafetyBlockedError(result)
    raise NoImageError(result)


def load_body(content: bytes) -> Any:
    """JSON when it parses, else the text (error pages from proxies are often HTML)."""
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return content.decode("utf-8", errors="replace")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` in seconds (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def error_from_response(
    status: int, headers: Mapping[str, str], content: bytes, *, attempts: int = 1
) -> APIError:
    """An error answer -> the APIError subclass for its status.

    Reads Google's envelope, the OpenAI/CometAPI one (`error.type`/`error.code`), a one-element
    list around either (seen on streaming endpoints), or plain text.
    """
    body = load_body(content)
    envelope = body[0] if isinstance(body, list) and len(body) == 1 else body
    error = envelope.get("error") if isinstance(envelope, dict) else None
    message: str | None = None
    code: str | None = None
    if isinstance(error, dict):
        message = _str_or_none(error.get("message"))
        code = _str_or_none(error.get("status")) or _str_or_none(error.get("code"))
    elif isinstance(error, str):
        message = error
    elif isinstance(envelope, dict):
        message = _str_or_none(envelope.get("message"))
        code = _str_or_none(envelope.get("status"))
    if message is None:
        text = body if isinstance(body, str) else ""
        message = text.strip()[:500] or f"HTTP {status} with no message"
    retry_after = retry_delay_of(envelope) if isinstance(envelope, dict) else None
    if retry_after is None:
        retry_after = parse_retry_after(_header(headers, "retry-after"))
    return api_error_class(status)(
        status,
        message,
        code=code,
        body=body,
        headers=dict(headers),
        request_id=_header(headers, REQUEST_ID_HEADER),
        retry_after=retry_after,
        attempts=attempts,
    )
