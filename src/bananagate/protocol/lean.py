"""A request's parsed view without its image payloads ("lean" parsing).

An image request is megabytes of Base64 in `inlineData.data` strings and a few hundred bytes of
everything else. The gateway forwards the body as it came, so it only needs the Base64 checked,
not turned into Python strings (a full parse of three 7 MB images holds 21 MB of `str` per
request and took ~30 ms). `lean_spans` finds each inline `data` string's byte span; the
request is then parsed from a skeleton with those strings emptied, and each span is checked
with a strict SIMD Base64 decode straight from the body.

The lean path is taken only when it cannot disagree with a full parse: no escaped quote outside
the spans (so every other quote is a JSON string delimiter and the byte search below reads the
structure exactly), every span strict canonical Base64 and non-empty, and the skeleton's
inline blobs matching the spans one to one. Anything else (URL-safe or wrapped Base64, escaped
text, odd shapes) returns None and the caller parses the whole body, with its exact errors.
"""

from __future__ import annotations

import binascii

import pybase64

from bananagate.protocol.scan import Bytes, skip_ws

Span = tuple[int, int]

# Below this, a full parse costs microseconds: not worth a second code path.
LEAN_MIN_BYTES = 64 * 1024
_DATA_KEY = b'"data"'
_BLOB_KEYS = (b'"inlineData"', b'"inline_data"')
_WS = b" \t\r\n"
# The keys allowed before `data` inside a blob (`"mimeType": "image/png", `) fit in this.
_MAX_BLOB_HEAD = 256


def _skip_ws_back(body: Bytes, i: int) -> int:
    while i >= 0 and body[i] in _WS:
        i -= 1
    return i


def _in_blob(body: Bytes, key_at: int) -> bool:
    """True when the `"data"` key at `key_at` is a member of an `inlineData` object."""
    brace = body.rfind(b"{", max(0, key_at - _MAX_BLOB_HEAD), key_at)
    if brace < 0:
        return False
    head = body[brace + 1 : key_at]
    # Only other members of the blob may sit between: no nested object or array.
    if any(c in head for c in (b"{", b"}", b"[", b"]")):
        return False
    before = _skip_ws_back(body, brace - 1)
    if before < 0 or body[before] != 0x3A:  # ':'
        return False
    key_end = _skip_ws_back(body, before - 1) + 1
    return any(body.endswith(key, 0, key_end) for key in _BLOB_KEYS)


def lean_spans(body: Bytes) -> list[Span] | None:
    """Byte spans (start, end) of every inline image's Base64, in document order; None when the
    body is not one the lean path can read exactly (see module docstring)."""
    if len(body) < LEAN_MIN_BYTES:
        return None
    spans: list[Span] = []
    at = body.find(_DATA_KEY)
    while at >= 0:
        colon = skip_ws(body, at + len(_DATA_KEY))
        if colon < len(body) and body[colon] == 0x3A:
            start = skip_ws(body, colon + 1)
            if start < len(body) and body[start] == 0x22 and _in_blob(body, at):
                end = body.find(b'"', start + 1)
                if end < 0:
                    return None
                spans.append((start + 1, end))
                at = body.find(_DATA_KEY, end + 1)
                continue
        at = body.find(_DATA_KEY, at + len(_DATA_KEY))
    if not spans:
        return None
    return spans


def skeleton_of(body: Bytes, spans: list[Span]) -> bytes | None:
    """The body with each span emptied; None when text outside the spans holds an escaped quote
    (then a quote found by byte search might sit inside a string, and the spans could be wrong)."""
    pieces: list[Bytes] = []
    start = 0
    for a, b in spans:
        pieces.append(body[start:a])
        start = b
    pieces.append(body[start:])
    if any(b'\\"' in piece for piece in pieces):
        return None
    return b"".join(pieces)


def is_strict_base64(body: Bytes, span: Span) -> bool:
    """Canonical standard-alphabet Base64 with padding, nothing else (decoded and dropped: a
    SIMD decode is the fastest full check there is)."""
    a, b = span
    if b <= a:
        return False
    try:
        pybase64.b64decode(memoryview(body)[a:b], validate=True)
    except (binascii.Error, ValueError):
        return False
    return True
