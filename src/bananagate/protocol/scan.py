"""Read what metering needs from a `GenerateContentResponse` without parsing its images.

An image answer is megabytes of Base64 and a few hundred bytes of everything else. These
functions find the small fields by byte search (Base64 never contains `"`, `{` or `}`), so a
gateway that forwards the answer untouched pays microseconds, not a full JSON parse.
Field names are matched in either casing, as relays differ.
"""

from __future__ import annotations

from typing import Any

import orjson

from bananagate.protocol.response import Usage

_DATA_KEY = b'"data"'
_WS = b" \t\r\n"
# Below this size a body is scanned as it is; above it, its Base64 payloads are cut out first.
_SKELETON_MIN = 16 * 1024
_USAGE_KEYS = (b'"usageMetadata"', b'"usage_metadata"')
_FINISH_KEYS = (b'"finishReason"', b'"finish_reason"')
_IMAGE_KEYS = (b'"inlineData"', b'"inline_data"')
_THOUGHT_TRUE = (b'"thought":true', b'"thought": true')


def skeleton(body: bytes) -> bytes:
    """The body with every `"data": "<...>"` string emptied: a 1.4 MB image answer becomes a few
    hundred bytes that every other scan then walks instead of the megabytes."""
    if len(body) < _SKELETON_MIN:
        return body
    pieces: list[bytes] = []
    start = 0
    at = body.find(_DATA_KEY)
    while at >= 0:
        i = at + len(_DATA_KEY)
        n = len(body)
        while i < n and body[i] in _WS:
            i += 1
        if i < n and body[i] == 0x3A:  # ':'
            i += 1
            while i < n and body[i] in _WS:
                i += 1
            if i < n and body[i] == 0x22:  # a string value: Base64 holds no quote or backslash
                close = body.find(b'"', i + 1)
                if close < 0:
                    break
                pieces.append(body[start : i + 1])
                start = close
                at = body.find(_DATA_KEY, close + 1)
                continue
        at = body.find(_DATA_KEY, i)
    if not pieces:
        return body
    pieces.append(body[start:])
    return b"".join(pieces)


def _balanced_object(body: bytes, start: int) -> bytes | None:
    """The `{...}` starting at or after `start`, matched by brace depth (strings skipped)."""
    open_at = body.find(b"{", start)
    if open_at < 0:
        return None
    depth = 0
    i = open_at
    n = len(body)
    while i < n:
        ch = body[i]
        if ch == 0x22:  # a string: jump to its closing quote, honouring escapes
            i += 1
            while i < n:
                c = body[i]
                if c == 0x5C:
                    i += 2
                    continue
                if c == 0x22:
                    break
                i += 1
        elif ch == 0x7B:
            depth += 1
        elif ch == 0x7D:
            depth -= 1
            if depth == 0:
                return body[open_at : i + 1]
        i += 1
    return None


# Quote hops before a search falls back to plain substring search (a text-heavy body).
_MAX_HOPS = 4096


def _last_key(body: bytes, keys: tuple[bytes, ...]) -> int:
    """Where the last of `keys` (each starts with a quote) begins, or -1.

    Hops backwards from quote to quote: a megabyte Base64 string holds none, so crossing it is
    one memrchr, where searching for a many-byte key would compare its way through every byte.
    """
    at = body.rfind(b'"')
    for _ in range(_MAX_HOPS):
        if at < 0 or body.startswith(keys, at):
            return at
        at = body.rfind(b'"', 0, at)
    return max(body.rfind(k, 0, at + len(k)) for k in keys)


def _all_keys(body: bytes, keys: tuple[bytes, ...]) -> list[int]:
    """Where each occurrence of `keys` begins, in order (forward quote hops, as above)."""
    found: list[int] = []
    at = body.find(b'"')
    for _ in range(_MAX_HOPS):
        if at < 0:
            return found
        if body.startswith(keys, at):
            found.append(at)
        at = body.find(b'"', at + 1)
    rest = sorted(i for k in keys for i in _find_all(body, k, at))
    return found + rest


def _find_all(body: bytes, key: bytes, start: int) -> list[int]:
    out: list[int] = []
    at = body.find(key, start)
    while at >= 0:
        out.append(at)
        at = body.find(key, at + len(key))
    return out


def scan_usage_dict(body: bytes) -> dict[str, Any] | None:
    """The last `usageMetadata` object of a response (or of a stream event), parsed, or None."""
    body = skeleton(body)
    at = _last_key(body, _USAGE_KEYS)
    if at < 0:
        return None
    raw = _balanced_object(body, at)
    if raw is None:
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def scan_usage(body: bytes) -> Usage:
    """`usageMetadata` as numbers; zeros when the answer has none."""
    return Usage.from_wire(scan_usage_dict(body))


def scan_finish_reason(body: bytes) -> str | None:
    """The last `finishReason` value in the body, or None."""
    body = skeleton(body)
    at = _last_key(body, _FINISH_KEYS)
    if at < 0:
        return None
    colon = body.find(b":", at)
    open_quote = body.find(b'"', colon + 1)
    close_quote = body.find(b'"', open_quote + 1)
    if colon < 0 or open_quote < 0 or close_quote < 0:
        return None
    value = body[open_quote + 1 : close_quote].decode("ascii", "replace").strip()
    return value.upper() or None


def _part_bounds(body: bytes, key_at: int) -> tuple[int, int]:
    """Start and end of the part object holding the key at `key_at`, skipping the Base64 payload."""
    start = body.rfind(b"{", 0, key_at)
    blob_end = body.find(b"}", key_at)  # the inlineData object closes after its data string
    end = body.find(b"}", blob_end + 1) if blob_end >= 0 else -1
    return max(start, 0), (end if end >= 0 else len(body))


def count_output_images(body: bytes) -> int:
    """Number of final (non-thought) inline images in a response or stream event."""
    body = skeleton(body)
    count = 0
    for at in _all_keys(body, _IMAGE_KEYS):
        start, end = _part_bounds(body, at)
        # The part's own keys sit before the blob or after it; the Base64 holds no quotes.
        head = body[start:at]
        tail = body[body.find(b"}", at) : end + 1]
        if not any(t in head or t in tail for t in _THOUGHT_TRUE):
            count += 1
    return count


def is_json_object(body: bytes) -> bool:
    """True when the body is one whole JSON object, checked on its Base64-free skeleton so a
    truncated answer is caught without parsing megabytes of image data."""
    try:
        return isinstance(orjson.loads(skeleton(body)), dict)
    except orjson.JSONDecodeError:
        return False


def is_error_event(event: bytes) -> bool:
    """True for a stream event that carries an error envelope instead of a response."""
    return event.lstrip()[:9] == b'{"error":'
