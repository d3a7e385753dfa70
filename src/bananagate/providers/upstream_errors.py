"""From an upstream's error answer to the exception the router interprets.

Upstreams speak two error dialects (protocol reference §5): Google's envelope
`{"error": {"code", "message", "status", "details"}}` and the OpenAI/new-api one
`{"error": {"message", "type", "param", "code"}}`. Either becomes an `ApiError` in Google's
envelope, which is what our clients get if no other upstream can answer instead.

Upstream *key* failures (Google's 400 API_KEY_INVALID, 401, 403) are not the client's fault:
they become `UpstreamKeyRejected` and never reach the client with the upstream's wording, which
may quote the key. Every message is scrubbed of the channel's keys all the same.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from bananagate.protocol.errors import STATUS_NAMES, ApiError, retry_delay_of
from bananagate.providers.base import UpstreamError

# 408 and 5xx are the upstream's trouble, 429 its quota; Cloudflare's 52x are timeouts in front
# of aggregators. All worth another try (perhaps elsewhere).
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 520, 522, 524, 529})
MAX_MESSAGE = 2000
REDACTED = "[redacted]"


class UpstreamKeyRejected(UpstreamError):
    """The upstream refused the channel's key (bad, revoked, or not allowed)."""


class UpstreamUnreachable(UpstreamError):
    """No HTTP answer at all: connection refused or reset, DNS failure, broken stream."""


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` without any of `secrets` in it."""
    for secret in secrets:
        if len(secret) >= 4 and secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _retry_after_header(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value.strip())  # the HTTP-date form is not worth supporting here
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def _envelope(body: bytes) -> dict[str, Any] | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    # Google sometimes wraps errors in a one-element array (seen on streaming endpoints).
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return data
    return None


def _is_key_failure(status: int, error: Mapping[str, Any]) -> bool:
    if status in (401, 403):
        return True
    if status != 400:
        return False
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and detail.get("reason") in ("API_KEY_INVALID", "API_KEY_EXPIRED"):
            return True
    return False


def error_from_response(
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    *,
    channel: str,
    secrets: Iterable[str] = (),
) -> UpstreamError:
    """The exception for an upstream's non-200 answer."""
    secrets = tuple(secrets)
    envelope = _envelope(body)
    error: dict[str, Any] = envelope["error"] if envelope else {}
    if _is_key_failure(status, error):
        return UpstreamKeyRejected(
            ApiError(
                502,
                f"Upstream channel {channel!r} rejected its key (HTTP {status}).",
                "UNAVAILABLE",
            ),
            retryable=True,
        )
    raw_message = error.get("message")
    if isinstance(raw_message, str) and raw_message:
        message = raw_message[:MAX_MESSAGE]
    else:
        message = f"Upstream channel {channel!r} answered HTTP {status}."
    # Google's status names only; OpenAI-style `type`/`code` strings are not gRPC codes.
    status_name = error.get("status") if isinstance(error.get("status"), str) else None
    details = error.get("details") if status_name and isinstance(error.get("details"), list) else None
    code = status if 400 <= status <= 599 else 502
    retry_after = (retry_delay_of(envelope) if envelope else None) or _retry_after_header(headers)
    api_error = ApiError(
        code,
        scrub(message, secrets),
        status_name or STATUS_NAMES.get(code, "UNKNOWN"),
        details=_scrub_details(details, secrets) if details else None,
        headers={"retry-after": str(max(0, round(retry_after)))} if code == 429 and retry_after else None,
    )
    return UpstreamError(api_error, retryable=code in RETRYABLE_STATUSES, retry_after=retry_after)


def _scrub_details(details: list[Any], secrets: tuple[str, ...]) -> list[dict[str, Any]]:
    text = orjson.dumps(details).decode()
    cleaned = scrub(text, secrets)
    out = orjson.loads(cleaned) if cleaned != text else details
    return [d for d in out if isinstance(d, dict)]


def error_from_event(event: bytes, *, channel: str, secrets: Iterable[str] = ()) -> UpstreamError:
    """An `{"error": {...}}` stream event, as if it had been the HTTP answer."""
    envelope = _envelope(event) or {}
    code = envelope.get("error", {}).get("code")
    status = code if isinstance(code, int) and 400 <= code <= 599 else 500
    return error_from_response(status, event, {}, channel=channel, secrets=secrets)


def unreachable(channel: str, what: str) -> UpstreamUnreachable:
    return UpstreamUnreachable(
        ApiError(503, f"Upstream channel {channel!r} could not be reached ({what}).", "UNAVAILABLE"),
        retryable=True,
    )
