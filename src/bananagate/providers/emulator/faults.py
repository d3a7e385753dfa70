"""Fault injection for the emulator: the `x-bananagate-emulate` directive grammar.

People testing their own apps against bananagate can ask the emulator to misbehave the way
Gemini does, either with a request header or, where headers cannot vary per request (batch
jobs, SDKs that hide headers), with a directive inside the prompt text::

    x-bananagate-emulate: status=429; retry-delay=2s; times=1
    "A cat in a hat [emulate: finish=IMAGE_SAFETY]"

Grammar
-------
Directives are separated by ``;`` or ``,``; each is ``name=value`` or a bare flag. All
whitespace is ignored, names are case-insensitive (``_`` and ``-`` are interchangeable), and
a later directive overrides an earlier one with the same name. Prompt directives are read after
the header, so they win. Several ``[emulate: ...]`` blocks in one prompt are joined; they are
removed from the text drawn on the emulated image. Durations are seconds, written ``1.5``,
``1.5s`` or ``1500ms``.

==========================  ===================================================================
``status=CODE``             fail with HTTP CODE (400-599) in Google's error envelope. 429 is
                            RESOURCE_EXHAUSTED with ``google.rpc.RetryInfo`` and ``Retry-After``;
                            500 INTERNAL, 503 UNAVAILABLE, 504 DEADLINE_EXCEEDED, other codes
                            their canonical status. 408, 429 and 5xx count as retryable.
``retry-delay=DURATION``    the retry delay advertised with a retryable status (default 1s for
                            429; other statuses advertise none unless given).
``delay=DURATION``          wait before answering (streams: before the first event).
``event-delay=DURATION``    wait between stream events.
``finish=REASON``           HTTP 200 with that ``finishReason`` and no image. NO_IMAGE and
                            MAX_TOKENS answer with a text part only; every other reason
                            (IMAGE_SAFETY, IMAGE_PROHIBITED_CONTENT, SAFETY, RECITATION,
                            IMAGE_OTHER, OTHER, ...) answers with an empty content and a
                            ``finishMessage``. STOP is a normal answer.
``block=REASON``            HTTP 200 with ``promptFeedback.blockReason`` = REASON and no
                            candidates (SAFETY, OTHER, BLOCKLIST, PROHIBITED_CONTENT,
                            IMAGE_SAFETY).
``text-only``               a text part only, ``finishReason`` STOP, no image.
``times=N``                 everything above applies to the first N requests with the same
                            fingerprint (request content + directives), counted in process;
                            later ones succeed normally ("429 once, then success").
``stream-error-after=N``    streams only: after N events (or all of them, if fewer) send
                            ``{"error": {"code": 500, ..., "status": "INTERNAL"}}`` and stop.
==========================  ===================================================================

Precedence when several are given: ``status`` > ``block`` > ``finish`` > ``text-only``.
An unknown directive or a bad value is answered with HTTP 400 INVALID_ARGUMENT
``Invalid x-bananagate-emulate directive: ...``. When fault injection is disabled
(``BANANAGATE_EMULATOR_FAULTS=false``) directives are ignored entirely and prompts are drawn
as written.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bananagate.protocol.errors import (
    RETRY_INFO_TYPE,
    STATUS_NAMES,
    ApiError,
    format_duration,
    resource_exhausted,
)

HEADER = "x-bananagate-emulate"

# finishReason values (protocol reference §4.2) the emulator can produce on demand.
FINISH_REASONS: frozenset[str] = frozenset(
    {
        "STOP",
        "MAX_TOKENS",
        "SAFETY",
        "RECITATION",
        "LANGUAGE",
        "OTHER",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
        "IMAGE_OTHER",
        "NO_IMAGE",
    }
)
# Finish reasons whose answer still carries a text part (the model spoke but drew nothing).
TEXT_FINISH_REASONS: frozenset[str] = frozenset({"NO_IMAGE", "MAX_TOKENS"})

# promptFeedback.blockReason values (§4.3).
BLOCK_REASONS: frozenset[str] = frozenset(
    {"SAFETY", "OTHER", "BLOCKLIST", "PROHIBITED_CONTENT", "IMAGE_SAFETY"}
)

# Bounds keep a typo ("delay=3000") from parking a connection for an hour.
MAX_DURATION = 300.0
MAX_COUNT = 1_000_000

_PROMPT_DIRECTIVE = re.compile(r"\[\s*emulate\s*:([^\]]*)\]", re.IGNORECASE)
_DURATION = re.compile(r"((?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?)(ms|s)?", re.IGNORECASE | re.ASCII)
_INTEGER = re.compile(r"\d+", re.ASCII)
_WHITESPACE = re.compile(r"\s+")
_SHOWN_LIMIT = 120


@dataclass(frozen=True, slots=True)
class Directives:
    """A parsed directive string. The default value means "behave normally"."""

    status: int | None = None
    retry_delay: float | None = None
    delay: float = 0.0
    event_delay: float = 0.0
    finish: str | None = None
    block: str | None = None
    text_only: bool = False
    times: int | None = None
    stream_error_after: int | None = None

    @property
    def active(self) -> bool:
        return self != Directives()

    @property
    def retryable(self) -> bool:
        return self.status is not None and (self.status >= 500 or self.status in (408, 429))

    def to_string(self) -> str:
        """Canonical directive text; `parse_directives(d.to_string()) == d` for every valid `d`."""
        items: list[str] = []
        if self.status is not None:
            items.append(f"status={self.status}")
        if self.retry_delay is not None:
            items.append(f"retry-delay={_fmt(self.retry_delay)}")
        if self.delay:
            items.append(f"delay={_fmt(self.delay)}")
        if self.event_delay:
            items.append(f"event-delay={_fmt(self.event_delay)}")
        if self.finish is not None:
            items.append(f"finish={self.finish}")
        if self.block is not None:
            items.append(f"block={self.block}")
        if self.text_only:
            items.append("text-only")
        if self.times is not None:
            items.append(f"times={self.times}")
        if self.stream_error_after is not None:
            items.append(f"stream-error-after={self.stream_error_after}")
        return "; ".join(items)


def _fmt(seconds: float) -> str:
    # repr() round-trips a float exactly, which the canonical form promises.
    return repr(seconds) + "s"


def bad_directive(detail: str) -> ApiError:
    shown = detail if len(detail) <= _SHOWN_LIMIT else detail[:_SHOWN_LIMIT] + "..."
    return ApiError(400, f"Invalid {HEADER} directive: {shown}", "INVALID_ARGUMENT")


def _duration(name: str, value: str) -> float:
    m = _DURATION.fullmatch(value)
    if m is None:
        raise bad_directive(f"{name}={value!s}: expected seconds such as 1.5, 2s or 500ms")
    seconds = float(m.group(1)) / (1000.0 if (m.group(2) or "").lower() == "ms" else 1.0)
    if seconds > MAX_DURATION:
        raise bad_directive(f"{name}={value}: at most {MAX_DURATION:g} seconds")
    return seconds


def _count(name: str, value: str, minimum: int) -> int:
    # The length check comes first: int() refuses strings over 4300 digits with a ValueError.
    if len(value) > 12 or _INTEGER.fullmatch(value) is None or not minimum <= int(value) <= MAX_COUNT:
        raise bad_directive(f"{name}={value}: expected an integer from {minimum} to {MAX_COUNT}")
    return int(value)


def _status(value: str) -> int:
    if len(value) > 12 or _INTEGER.fullmatch(value) is None or not 400 <= int(value) <= 599:
        raise bad_directive(f"status={value}: expected an HTTP error code from 400 to 599")
    return int(value)


def _reason(name: str, value: str, allowed: frozenset[str]) -> str:
    reason = value.upper()
    if reason not in allowed:
        raise bad_directive(f"{name}={value}: expected one of {', '.join(sorted(allowed))}")
    return reason


def parse_directives(text: str) -> Directives:
    """Parse a directive string (header value or prompt block contents); raises ApiError(400)."""
    fields: dict[str, object] = {}
    for raw in re.split(r"[;,]", _WHITESPACE.sub("", text)):
        if not raw:
            continue
        name, sep, value = raw.partition("=")
        name = name.lower().replace("_", "-")
        if not sep:
            if name == "text-only":
                fields["text_only"] = True
                continue
            raise bad_directive(f"{raw!r} is not a known flag (expected name=value or text-only)")
        if name == "status":
            fields["status"] = _status(value)
        elif name == "retry-delay":
            fields["retry_delay"] = _duration(name, value)
        elif name == "delay":
            fields["delay"] = _duration(name, value)
        elif name == "event-delay":
            fields["event_delay"] = _duration(name, value)
        elif name == "finish":
            fields["finish"] = _reason(name, value, FINISH_REASONS)
        elif name == "block":
            fields["block"] = _reason(name, value, BLOCK_REASONS)
        elif name == "text-only":
            if value.lower() not in ("true", "1", "yes", "false", "0", "no"):
                raise bad_directive(f"text-only={value}: expected true or false")
            fields["text_only"] = value.lower() in ("true", "1", "yes")
        elif name == "times":
            fields["times"] = _count(name, value, 1)
        elif name == "stream-error-after":
            fields["stream_error_after"] = _count(name, value, 0)
        else:
            raise bad_directive(f"unknown directive {name!r}")
    return Directives(**fields)  # type: ignore[arg-type]


def split_prompt(prompt: str) -> tuple[str, str]:
    """(prompt without `[emulate: ...]` blocks, the blocks' contents joined with `;`)."""
    found = [m.group(1) for m in _PROMPT_DIRECTIVE.finditer(prompt)]
    if not found:
        return prompt, ""
    cleaned = _PROMPT_DIRECTIVE.sub(" ", prompt)
    cleaned = "\n".join(" ".join(line.split()) for line in cleaned.splitlines()).strip()
    return cleaned, ";".join(found)


def header_value(headers: Mapping[str, str]) -> str:
    """The emulate header from a mapping whose key casing is unknown."""
    for key, value in headers.items():
        if key.lower() == HEADER:
            return value
    return ""


def resolve(headers: Mapping[str, str], prompt: str) -> tuple[Directives, str]:
    """Directives of a request (header, then prompt) and the prompt to draw."""
    cleaned, from_prompt = split_prompt(prompt)
    directives = parse_directives(header_value(headers) + ";" + from_prompt)
    return directives, cleaned


# --- errors the `status` directive produces -------------------------------------------------

_MESSAGES: dict[int, str] = {
    400: "Request contains an invalid argument.",
    401: "Request had invalid authentication credentials.",
    403: "The caller does not have permission",
    404: "Requested entity was not found.",
    408: "The request timed out. Please try again.",
    429: "Resource has been exhausted (e.g. check quota).",
    500: (
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting"
    ),
    503: "The model is overloaded. Please try again later.",
    504: "Deadline expired before operation could complete.",
}
# Canonical names for codes the shared table leaves out (google.rpc.Code HTTP mapping).
_EXTRA_STATUS: dict[int, str] = {408: "DEADLINE_EXCEEDED", 410: "NOT_FOUND", 412: "FAILED_PRECONDITION"}
DEFAULT_429_DELAY = 1.0


def status_error(directives: Directives) -> tuple[ApiError, float | None]:
    """The error and advertised retry delay (seconds) for `directives.status`."""
    code = directives.status
    assert code is not None
    delay = directives.retry_delay
    if code == 429 and delay is None:
        delay = DEFAULT_429_DELAY
    if not directives.retryable:
        delay = None
    message = _MESSAGES.get(code, f"Emulated upstream error (HTTP {code}).")
    if code == 429:
        assert delay is not None
        return resource_exhausted(message, retry_delay_seconds=delay), delay
    name = STATUS_NAMES.get(code) or _EXTRA_STATUS.get(code) or "UNKNOWN"
    details: list[dict[str, Any]] = []
    headers: dict[str, str] = {}
    if delay is not None:
        details.append({"@type": RETRY_INFO_TYPE, "retryDelay": format_duration(delay)})
        # Retry-After is whole seconds; round up so a client never retries early.
        headers["retry-after"] = str(math.ceil(delay))
    return ApiError(code, message, name, details, headers), delay


def stream_error() -> ApiError:
    """What `stream-error-after` sends mid-stream: the error Google emits when generation dies."""
    return ApiError(500, _MESSAGES[500], "INTERNAL")
