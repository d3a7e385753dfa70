"""Google-style API errors (protocol reference §5): one exception type, rendered as the envelope
`{"error": {"code", "message", "status", "details"?}}`."""

from __future__ import annotations

import math
from typing import Any

import orjson

# HTTP status -> canonical gRPC status name (§5.2).
STATUS_NAMES: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    422: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
RETRY_INFO_TYPE = "type.googleapis.com/google.rpc.RetryInfo"
ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo"


class ApiError(Exception):
    """An error answer in Google's envelope. Raised anywhere below the server; rendered by it."""

    def __init__(
        self,
        code: int,
        message: str,
        status: str | None = None,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or STATUS_NAMES.get(code, "UNKNOWN")
        self.details = details or []
        self.headers = headers or {}

    def to_dict(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message, "status": self.status}
        if self.details:
            error["details"] = self.details
        return {"error": error}

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2)

    def __repr__(self) -> str:
        return f"ApiError({self.code}, {self.status}, {self.message!r})"


class FieldViolation:
    """One `google.rpc.BadRequest.fieldViolations` entry."""

    __slots__ = ("description", "field")

    def __init__(self, field: str, description: str) -> None:
        self.field = field
        self.description = description


def invalid_argument(message: str, violations: list[FieldViolation] | None = None) -> ApiError:
    details: list[dict[str, Any]] = []
    if violations:
        details.append(
            {
                "@type": BAD_REQUEST_TYPE,
                "fieldViolations": [{"field": v.field, "description": v.description} for v in violations],
            }
        )
    return ApiError(400, message, "INVALID_ARGUMENT", details)


def resource_exhausted(message: str, retry_delay_seconds: float | None = None) -> ApiError:
    details: list[dict[str, Any]] = []
    headers: dict[str, str] = {}
    if retry_delay_seconds is not None:
        details.append({"@type": RETRY_INFO_TYPE, "retryDelay": format_duration(retry_delay_seconds)})
        # Retry-After is whole seconds; round up so a client never retries before the delay.
        headers["retry-after"] = str(max(0, math.ceil(retry_delay_seconds)))
    return ApiError(429, message, "RESOURCE_EXHAUSTED", details, headers)


def model_not_found(model: str, method: str = "generateContent", api_version: str = "v1beta") -> ApiError:
    return ApiError(
        404,
        f"models/{model} is not found for API version {api_version}, or is not supported for {method}. "
        "Call ListModels to see the list of available models and their supported methods.",
        "NOT_FOUND",
    )


def format_duration(seconds: float) -> str:
    """protobuf Duration JSON: `2s`, `1.500s`."""
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{seconds:.3f}s"


def parse_duration(value: str) -> float | None:
    """`26s` / `1.5s` -> seconds; None when not a Duration string."""
    text = value.strip()
    if not text.endswith("s"):
        return None
    try:
        return float(text[:-1])
    except ValueError:
        return None


def retry_delay_of(body: dict[str, Any]) -> float | None:
    """The `RetryInfo.retryDelay` of an error envelope, in seconds, if present."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            delay = detail.get("retryDelay")
            if isinstance(delay, str):
                return parse_duration(delay)
    return None
