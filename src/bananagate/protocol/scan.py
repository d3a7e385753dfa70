"""Read what metering needs from a `GenerateContentResponse` without parsing its images.

An image answer is megabytes of Base64 and a few hundred bytes of everything else. The Base64
strings are cut out by byte search (Base64 never contains `"`, `{` or `}`) and the small rest, the
skeleton, is parsed once (`summarize`), so a gateway that forwards the answer untouched pays
microseconds, not a full JSON parse. A body that is not one JSON object (a cut-off stream event)
is read by byte search alone. Field names are matched in either casing, as relays differ.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import orjson

from bananagate.protocol import base64codec
from bananagate.protocol.response import Usage

# A body: bytes, or the bytearray an upstream answer (or a big request) was read into, which is
# never written after it was read.
Bytes: TypeAlias = bytes | bytearray

_DATA_KEY = b'"data"'
_WS = b" \t\r\n"
# Below this size a body is scanned as it is; above it, its Base64 payloads are cut out first.
_SKELETON_MIN = 16 * 1024
_USAGE_KEYS = (b'"usageMetadata"', b'"usage_metadata"')
_FINISH_KEYS = (b'"finishReason"', b'"finish_reason"')
_IMAGE_KEYS = (b'"inlineData"', b'"inline_data"')
_THOUGHT_TRUE = (b'"thought":true', b'"thought": true')


# The last big body skeletonised and its skeleton. An answer is scanned by several functions in
# turn (the provider's checks, then the meter's), each starting from its skeleton: cutting it
# once instead of six times was ~5 % of the gateway's CPU per 1.4 MB answer. The reference
# keeps the body alive, so `is` cannot match a different object; one assignment replaces the
# pair at once, so threads scanning other bodies at most miss.
_last_skeleton: tuple[Bytes, Bytes] = (b"", b"")


def skeleton(body: Bytes) -> Bytes:
    """The body with every `"data": "<...>"` string emptied: a 1.4 MB image answer becomes a few
    hundred bytes that every other scan then walks instead of the megabytes."""
    global _last_skeleton
    if len(body) < _SKELETON_MIN:
        return body
    last_body, last = _last_skeleton
    if last_body is body:
        return last
    result = _cut_data(body)
    # The same object always has the same skeleton: bytes are immutable, and an answer read into
    # a bytearray (the buffered upstream pool) is never written to after it was read.
    if type(body) is bytes or type(body) is bytearray:
        _last_skeleton = (body, result)
    return result


def _cut_data(body: Bytes) -> Bytes:
    pieces: list[Bytes] = []
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


def _balanced_object(body: Bytes, start: int) -> Bytes | None:
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


def _last_key(body: Bytes, keys: tuple[bytes, ...]) -> int:
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


def _all_keys(body: Bytes, keys: tuple[bytes, ...]) -> list[int]:
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


def _find_all(body: Bytes, key: bytes, start: int) -> list[int]:
    out: list[int] = []
    at = body.find(key, start)
    while at >= 0:
        out.append(at)
        at = body.find(key, at + len(key))
    return out


@dataclass(frozen=True, slots=True)
class Summary:
    """What metering reads of a response that is one whole JSON object."""

    usage: Usage  # zeros when the answer has none
    finish_reason: str | None
    image_count: int


# The last body summarised, as with skeletons: the provider's checks and the meter's settle ask
# about the same answer in turn, and each walk used to hop through its skeleton in Python.
_last_summary: tuple[Bytes, Summary | None] = (b"", None)


def summarize(body: Bytes) -> Summary | None:
    """Usage, finish reason and image count from ONE orjson parse of the body's skeleton; None
    when the body is not one JSON object (then the byte scans below read what they can)."""
    global _last_summary
    last_body, last = _last_summary
    if last_body is body and (type(body) is bytes or type(body) is bytearray):
        return last
    try:
        doc = orjson.loads(skeleton(body))
    except orjson.JSONDecodeError:
        doc = None
    result = _summary_of(doc) if isinstance(doc, dict) else None
    if type(body) is bytes or type(body) is bytearray:
        _last_summary = (body, result)
    return result


def _summary_of(doc: dict[str, Any]) -> Summary:
    usage: dict[str, Any] | None = None
    for key, value in doc.items():  # the last one, as the byte scan finds it
        if key in ("usageMetadata", "usage_metadata"):
            usage = value if isinstance(value, dict) else None
    finish: str | None = None
    images = 0
    candidates = doc.get("candidates")
    for candidate in candidates if isinstance(candidates, list) else ():
        if not isinstance(candidate, dict):
            continue
        for key in ("finishReason", "finish_reason"):
            value = candidate.get(key)
            if isinstance(value, str):
                finish = value.strip().upper() or None
        content = candidate.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        for part in parts if isinstance(parts, list) else ():
            if (
                isinstance(part, dict)
                and ("inlineData" in part or "inline_data" in part)
                and part.get("thought") is not True
            ):
                images += 1
    return Summary(Usage.from_wire(usage), finish, images)


def scan_usage_dict(body: Bytes) -> dict[str, Any] | None:
    """The last `usageMetadata` object of a response (or of a stream event), parsed, or None:
    the bytes' way, for bodies that are not one JSON object (see `scan_usage`)."""
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


def scan_usage(body: Bytes) -> Usage:
    """`usageMetadata` as numbers; zeros when the answer has none."""
    summary = summarize(body)
    if summary is not None:
        return summary.usage
    return Usage.from_wire(scan_usage_dict(body))


def scan_finish_reason(body: Bytes) -> str | None:
    """The last `finishReason` value in the body, or None."""
    summary = summarize(body)
    if summary is not None:
        return summary.finish_reason
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


def _part_bounds(body: Bytes, key_at: int) -> tuple[int, int]:
    """Start and end of the part object holding the key at `key_at`, skipping the Base64 payload."""
    start = body.rfind(b"{", 0, key_at)
    blob_end = body.find(b"}", key_at)  # the inlineData object closes after its data string
    end = body.find(b"}", blob_end + 1) if blob_end >= 0 else -1
    return max(start, 0), (end if end >= 0 else len(body))


def count_output_images(body: Bytes) -> int:
    """Number of final (non-thought) inline images in a response or stream event."""
    summary = summarize(body)
    if summary is not None:
        return summary.image_count
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


def is_json_object(body: Bytes) -> bool:
    """True when the body is one whole JSON object, checked on its Base64-free skeleton so a
    truncated answer is caught without parsing megabytes of image data."""
    return summarize(body) is not None


def is_error_event(event: bytes) -> bool:
    """True for a stream event that carries an error envelope instead of a response."""
    return event.lstrip()[:9] == b'{"error":'


# --- an answer's parts, its images as byte spans ---------------------------------------------------
#
# The gallery keeps an answer's images, which means decoding them, but not parsing them: a full
# parse turns 1.4 MB of Base64 into a Python string first. `scan_answer` tokenises the body by
# hopping from quote to quote (a Base64 string holds none, so crossing one is one memchr),
# counting backslashes so escaped quotes are read as JSON reads them. That finds every string's
# exact extent; each `data` member's string is then swapped for its index, the small rest is
# parsed by orjson and walked, and the images come back as offsets into the body.


@dataclass(frozen=True, slots=True)
class InlineImage:
    """A delivered (non-thought) inline image of an answer.

    `start:end` are the bytes between the quotes of its `data` string. `value` is the string's
    value when those bytes alone do not decode (JSON escapes, URL-safe, unpadded or wrapped
    Base64) or the body was parsed whole (then `start` and `end` are 0). `data` holds the bytes
    when the scan already decoded them (checking a span is decoding it: the fastest full check).
    """

    mime_type: str
    start: int
    end: int
    value: str | None = None
    data: bytes | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class AnswerParts:
    """What the gallery keeps of one response or stream event: its first candidate's
    non-thought images and text parts, and its finish reason."""

    images: list[InlineImage]
    texts: list[str]
    finish_reason: str | None


# Below this size a body is parsed whole: orjson is quicker than hopping, and no image is big.
_WHOLE_BELOW = 8 * 1024
# Quote hops before a body is parsed whole instead (text full of escaped quotes).
_MAX_STRING_HOPS = 4096
# The longest spelling of the member name `data` (every letter a six-character `\u0064`-style escape).
_MAX_DATA_KEY = 24


class _OutOfHops(Exception):
    pass


def _string_end(body: Bytes, i: int, budget: list[int]) -> int:
    """Index of the quote that closes the string whose contents start at `i`, or -1."""
    while True:
        budget[0] -= 1
        if budget[0] < 0:
            raise _OutOfHops
        q = body.find(b'"', i)
        if q < 0:
            return -1
        if body[q - 1] != 0x5C:
            return q
        # An even run of backslashes escapes itself, not the quote. The run lies within [i, q)
        # (the opening or the last escaped quote bounds it), so all the runs add up to one pass.
        run = q - i - len(body[i:q].rstrip(b"\\"))
        if run % 2 == 0:
            return q
        i = q + 1


def skip_ws(body: Bytes, i: int) -> int:
    """The index of the first non-whitespace byte at or after `i` (JSON whitespace)."""
    n = len(body)
    while i < n and body[i] in _WS:
        i += 1
    return i


def _is_data_key(body: Bytes, a: int, b: int) -> bool:
    if b - a == 4:
        return body.startswith(b"data", a)
    if b - a > _MAX_DATA_KEY or 0x5C not in body[a:b]:
        return False
    try:  # `"d\u0061ta"` is the same name
        return bool(orjson.loads(body[a - 1 : b + 1]) == "data")
    except orjson.JSONDecodeError:
        return False  # the skeleton keeps the bad string, and its parse fails as the body's would


def _data_spans(body: Bytes, max_hops: int) -> list[tuple[int, int]] | None:
    """(start, end) of the contents of every string that is a `data` member's value, in order;
    None for an unterminated string. Raises _OutOfHops past `max_hops` quotes."""
    budget = [max_hops]
    spans: list[tuple[int, int]] = []
    n = len(body)
    at = body.find(b'"')
    while at >= 0:  # `at` opens a string: outside strings JSON has no other quotes
        end = _string_end(body, at + 1, budget)
        if end < 0:
            return None
        after = skip_ws(body, end + 1)
        if after < n and body[after] == 0x3A and _is_data_key(body, at + 1, end):  # ':'
            value = skip_ws(body, after + 1)
            if value < n and body[value] == 0x22:
                end = _string_end(body, value + 1, budget)
                if end < 0:
                    return None
                spans.append((value + 1, end))
        at = body.find(b'"', end + 1)
    return spans


def _first_str(obj: dict[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = obj.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _walk(doc: dict[str, Any], image: Callable[[str, str], InlineImage]) -> AnswerParts:
    """The first candidate's non-thought parts; `image(mime, data string)` makes each image."""
    images: list[InlineImage] = []
    texts: list[str] = []
    finish: str | None = None
    candidates = doc.get("candidates")
    for candidate in candidates if isinstance(candidates, list) else []:
        if not isinstance(candidate, dict):
            continue
        finish = _first_str(candidate, "finishReason", "finish_reason")
        content = candidate.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        for part in parts if isinstance(parts, list) else []:
            if not isinstance(part, dict) or part.get("thought"):
                continue  # a thinking model's drafts are not the answer
            blob = part.get("inlineData") or part.get("inline_data")
            if isinstance(blob, dict):
                data = blob.get("data")
                if isinstance(data, str):
                    images.append(image(_first_str(blob, "mimeType", "mime_type") or "image/png", data))
            elif isinstance(part.get("text"), str):
                texts.append(part["text"])
        break  # one candidate: image models answer with exactly one
    return AnswerParts(images, texts, finish)


def _parse_whole(body: Bytes) -> AnswerParts | None:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    return _walk(doc, lambda mime, data: InlineImage(mime, 0, 0, data))


def scan_answer(
    body: Bytes, *, whole_below: int = _WHOLE_BELOW, max_hops: int = _MAX_STRING_HOPS
) -> AnswerParts | None:
    """The parts of a `GenerateContentResponse` (or stream event) as a full parse finds them,
    with images as byte spans of `body`; None when the body is not one JSON object."""
    if len(body) < whole_below:
        return _parse_whole(body)
    try:
        spans = _data_spans(body, max_hops)
    except _OutOfHops:
        return _parse_whole(body)
    if spans is None:
        return None
    view = memoryview(body)
    values: list[str | None] = []
    decoded: list[bytes | None] = []
    pieces: list[Bytes] = []
    start = 0
    for index, (a, b) in enumerate(spans):
        try:  # strict Base64 is a valid JSON string as it stands (and the usual case)
            decoded.append(base64codec.decode_strict(view[a:b]))
            values.append(None)
        except ValueError:
            decoded.append(None)
            try:  # anything else is read as JSON reads it, which also rejects what JSON does
                values.append(orjson.loads(view[a - 1 : b + 1]))
            except orjson.JSONDecodeError:
                return None
        pieces += (body[start:a], b"%d" % index)
        start = b
    pieces.append(body[start:])
    try:
        doc = orjson.loads(b"".join(pieces))
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None

    def image(mime: str, marker: str) -> InlineImage:
        # Every `data` string in the skeleton is an index: each one was swapped above.
        index = int(marker)
        return InlineImage(mime, spans[index][0], spans[index][1], values[index], decoded[index])

    return _walk(doc, image)


def inline_image_bytes(body: Bytes, image: InlineImage) -> bytes:
    """The decoded bytes of an image `scan_answer` found in `body`. Raises ValueError when its
    data is not Base64 (in either alphabet, padded or not, whitespace allowed)."""
    if image.data is not None:
        return image.data
    if image.value is not None:
        return base64codec.decode(image.value)
    return base64codec.decode_strict(memoryview(body)[image.start : image.end])
