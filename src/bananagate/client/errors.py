"""The SDK's exceptions: one root, then "the server said no" apart from "no image came back".

BananagateError
├── ConfigurationError          bad client settings (unknown auth style, ...)
├── InvalidInputError           refused before any request (ValueError too)
│   └── TooManyImagesError      more images than the model takes
├── TransportError              no HTTP answer, after the retries
│   ├── APIConnectionError      refused / dropped connection
│   └── APITimeoutError         the request timed out
├── APIError                    an HTTP error answer (status, code, message, body)
│   ├── InvalidRequestError     400, 413, 422 ...
│   ├── AuthenticationError     401, 403
│   ├── NotFoundError           404
│   ├── RateLimitError          429
│   └── ServerError             5xx
└── NoImageError                HTTP 200 without an image (finish_reason, text)
    └── SafetyBlockedError      ... because of a safety / policy block (block_reason)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bananagate.client.result import GenerateResult


class BananagateError(Exception):
    """Root of every error the SDK raises on purpose."""


class ConfigurationError(BananagateError, ValueError):
    """The client was configured in a way that cannot work."""


class InvalidInputError(BananagateError, ValueError):
    """The call's arguments were refused locally, before any request was sent."""


class TooManyImagesError(InvalidInputError):
    """More input images than the model accepts in one request."""

    def __init__(self, model: str, count: int, limit: int) -> None:
        self.model = model
        self.count = count
        self.limit = limit
        super().__init__(
            f"{model} takes at most {limit} input images per request, got {count}. "
            f'Combine them into one image with compose(..., method="collage") '
            f"(CLI: bananagate compose --collage), or send fewer images."
        )


class TransportError(BananagateError):
    """No HTTP answer arrived (after all retries). `attempts` counts the tries made."""

    def __init__(self, message: str, *, attempts: int = 1) -> None:
        super().__init__(message)
        self.attempts = attempts


class APIConnectionError(TransportError):
    """The connection was refused or dropped."""


class APITimeoutError(TransportError):
    """The request timed out."""


class APIError(BananagateError):
    """An HTTP error answer.

    `status` is the HTTP status, `code` the canonical name from the body (`RESOURCE_EXHAUSTED`,
    ...) or None, `message` the human text, `body` the parsed JSON body (or the raw text when it
    was not JSON), `retry_after` the delay the server asked for, in seconds.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
        attempts: int = 1,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.body = body
        self.headers = headers or {}
        self.request_id = request_id
        self.retry_after = retry_after
        self.attempts = attempts
        super().__init__(self._describe())

    def _describe(self) -> str:
        name = f" {self.code}" if self.code else ""
        rid = f" (request id {self.request_id})" if self.request_id else ""
        return f"HTTP {self.status}{name}: {self.message}{rid}"


class InvalidRequestError(APIError):
    """The server refused the request as malformed or unsupported (400, 413, 422, ...)."""


class AuthenticationError(APIError):
    """The key is missing, unknown or not allowed (401, 403)."""


class NotFoundError(APIError):
    """Unknown model or path (404)."""


class RateLimitError(APIError):
    """Rate limit or quota (429)."""


class ServerError(APIError):
    """The server or its upstream failed (5xx)."""


def api_error_class(status: int) -> type[APIError]:
    """The APIError subclass for an HTTP status."""
    if status in (401, 403):
        return AuthenticationError
    if status == 404:
        return NotFoundError
    if status == 429:
        return RateLimitError
    if status >= 500:
        return ServerError
    if 400 <= status < 500:
        return InvalidRequestError
    return APIError


class NoImageError(BananagateError):
    """The answer was a success (HTTP 200) that carries no image.

    `finish_reason` (e.g. `NO_IMAGE`, `IMAGE_OTHER`), `block_reason` (prompt blocks),
    `text` (whatever the model said instead), `result` (the full parsed answer).
    """

    def __init__(self, result: GenerateResult) -> None:
        self.result = result
        self.finish_reason = result.finish_reason
        self.block_reason = result.block_reason
        self.finish_message = result.finish_message
        self.text = result.text
        super().__init__(self._describe())

    def _describe(self) -> str:
        reason = self.block_reason or self.finish_reason or "no reason given"
        label = "prompt blocked" if self.block_reason else "no image"
        out = f"{label} ({reason})"
        detail = self.finish_message or self.text
        if detail:
            out += f": {detail.strip()[:300]}"
        return out


class SafetyBlockedError(NoImageError):
    """No image because the prompt or the output was blocked by a safety or policy filter."""
