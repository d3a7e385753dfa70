"""The provider interface: what the server hands an upstream and what it gets back."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from bananagate.protocol.catalog import ImageModel
from bananagate.protocol.errors import ApiError
from bananagate.protocol.response import Usage
from bananagate.protocol.scan import Bytes, summarize
from bananagate.protocol.wire import GenerateContentRequest

Method = Literal["generateContent", "streamGenerateContent"]


@dataclass(slots=True)
class Call:
    """One request to an upstream.

    `body` is the client's original bytes (forwarded as they are unless a translation is needed);
    `request` is the parsed view of them.
    """

    model: ImageModel
    model_id: str  # the id the client asked for (may be an alias of model.id)
    method: Method
    body: Bytes  # a bytearray when a big request was read into one buffer (server.body)
    request: GenerateContentRequest
    headers: Mapping[str, str] = field(default_factory=dict)
    request_id: str = ""
    timeout: float | None = None
    # time.monotonic() by which the client must have its answer (server/deadlines.py): the
    # router starts no attempt that cannot finish before it.
    deadline: float | None = None
    # Conversation affinity (server/affinity.py): the channel that issued the history's thought
    # signatures or images, tried first.
    prefer_channel: str | None = None
    # Filled in by the router as it works, read by metering and the response headers.
    attempts: int = 0
    channel: str | None = None
    affinity: str | None = None  # "kept" | "broken" when prefer_channel was set
    upstream_seconds: float = 0.0  # spent waiting on upstream attempts (Server-Timing)
    backoff_seconds: float = 0.0  # spent sleeping between attempts
    # Filled in by the pipeline: what was charged, and what the key has left.
    cost_nanos: int | None = None
    limits: LimitState | None = None

    def full_request(self) -> GenerateContentRequest:
        """`request` with its inline images' data: a lean-parsed request (protocol/lean.py) is
        parsed again from the body, for the few consumers that look at pixels (the emulator,
        translating providers). Forwarding providers never need it."""
        if not self.request.elided_spans:
            return self.request
        from bananagate.protocol.validation import load_json_object, parse_generate_request

        self.request = parse_generate_request(load_json_object(self.body))
        return self.request


@dataclass(frozen=True, slots=True)
class LimitState:
    """The caller's key after admitting this call, for the `x-ratelimit-*` answer headers.
    None fields: the key has no such limit."""

    rpm_limit: int | None = None
    rpm_remaining: int | None = None
    rpm_reset_seconds: float | None = None  # until the oldest request in the window leaves it
    budget_remaining_nanos: int | None = None


@dataclass(slots=True)
class Answer:
    """A complete (non-streamed) upstream answer: JSON body bytes and what metering needs."""

    body: Bytes  # a bytearray as the buffered pool read it (no copy into bytes)
    usage: Usage
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    finish_reason: str | None = None
    image_count: int = 0


def scanned_answer(body: Bytes) -> Answer | None:
    """A 200 answer's body with what metering reads of it (one parse of its skeleton), or None
    when it is not one whole JSON object (cut off: never to be delivered or charged)."""
    summary = summarize(body)
    if summary is None:
        return None
    return Answer(
        body=body, usage=summary.usage, finish_reason=summary.finish_reason, image_count=summary.image_count
    )


class Provider(Protocol):
    """An upstream kind. `stream` yields one complete `GenerateContentResponse` JSON per event."""

    name: str

    async def generate(self, call: Call) -> Answer: ...

    def stream(self, call: Call) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class ProviderError(Exception):
    """Base of every upstream failure; only the router interprets these."""


class UpstreamError(ProviderError):
    """The upstream answered with an error status. `error` is what the client should see."""

    def __init__(self, error: ApiError, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.retryable = retryable
        self.retry_after = retry_after


class UpstreamTimeout(ProviderError):
    """The upstream did not answer in time."""
