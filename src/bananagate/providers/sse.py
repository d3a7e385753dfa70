"""Splitting a `text/event-stream` body into event payloads, without parsing them.

Gemini sends one `data: <json>` line per event, ended by a blank line with CRLF line ends
(others use LF); one event can be tens of megabytes (a whole image), so this works on a growing
byte buffer and searches only the bytes it has not searched yet, with no line-length cap.
"""

from __future__ import annotations

import re

# A blank line: two line terminators in a row (CRLF, LF or a lone CR, in any mix).
_EVENT_END = re.compile(rb"(?:\r\n|\n|\r(?!\n))(?:\r\n|\n|\r(?!\n))")
_LINE_END = re.compile(rb"\r\n|\n|\r")
# Longest terminator sequence, so a search can resume this far before the old end of buffer.
_OVERLAP = 4
DEFAULT_MAX_EVENT_BYTES = 256 * 1024 * 1024


class EventTooLarge(ValueError):
    pass


class SseSplitter:
    """Feed raw chunks, get complete events' `data` payloads (multi-line data joined with LF)."""

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._buffer = bytearray()
        self._searched = 0
        self._max = max_event_bytes
        # The pieces of a one-line `data: ` event still coming, kept as they came (no line end
        # in any of them, the buffer empty meanwhile): its payload is one join when it ends,
        # where the buffer copied a megabyte event in and then out again.
        self._pieces: list[bytes] = []
        self._pieces_size = 0

    def feed(self, chunk: bytes) -> list[bytes]:
        if self._pieces or (not self._buffer and chunk.startswith(b"data: ")):
            return self._feed_piece(chunk)
        return self._feed_buffer(chunk)

    def _feed_piece(self, chunk: bytes) -> list[bytes]:
        at = _line_end(chunk, 0, len(chunk))
        if at < 0:
            self._pieces.append(chunk)
            self._pieces_size += len(chunk)
            if self._pieces_size > self._max:
                raise EventTooLarge(f"an upstream stream event exceeds {self._max} bytes")
            return []
        # As in `_feed_buffer`: a trailing CR may be half of a CRLF still in flight.
        limit = len(chunk) - (1 if chunk.endswith(b"\r") else 0)
        match = _EVENT_END.match(chunk, at, limit)
        pieces, self._pieces, self._pieces_size = self._pieces, [], 0
        if match is None:  # not a one-line event after all, or its end is not all here yet
            self._buffer_pieces(pieces)
            return self._feed_buffer(chunk)
        if pieces:
            payload = b"".join((memoryview(pieces[0])[6:], *pieces[1:], memoryview(chunk)[:at]))
        else:
            payload = chunk[6:at]
        if match.end() == len(chunk):
            return [payload]
        return [payload, *self._feed_buffer(memoryview(chunk)[match.end() :])]

    def _buffer_pieces(self, pieces: list[bytes]) -> None:
        """Back to the buffer with the pieces (no line end in any of them: already searched)."""
        for piece in pieces:
            self._buffer += piece
        self._searched = max(0, len(self._buffer) - _OVERLAP)

    def _feed_buffer(self, chunk: bytes | memoryview) -> list[bytes]:
        self._buffer += chunk
        events: list[bytes] = []
        start = 0
        while True:
            # A trailing CR may be the first half of a CRLF still in flight: don't judge it yet.
            limit = len(self._buffer) - (1 if self._buffer.endswith(b"\r") else 0)
            match = self._next_event_end(max(start, self._searched), limit)
            if match is None:
                break
            payload = _data_in(self._buffer, start, match.start())
            if payload is not None:
                events.append(payload)
            start = match.end()
            self._searched = start
        if start:
            del self._buffer[:start]
        self._searched = max(0, len(self._buffer) - _OVERLAP)
        if len(self._buffer) > self._max:
            raise EventTooLarge(f"an upstream stream event exceeds {self._max} bytes")
        buffer = self._buffer
        if buffer.startswith(b"data: ") and buffer.find(b"\n") < 0 and buffer.find(b"\r") < 0:
            # The start of a one-line event (an image, say): the rest of it comes as pieces.
            self._pieces, self._pieces_size = [bytes(buffer)], len(buffer)
            self._buffer, self._searched = bytearray(), 0
        return events

    def _next_event_end(self, pos: int, limit: int) -> re.Match[bytes] | None:
        # memchr-speed hops between line ends; the regex only runs where one is found (a JSON
        # payload has no raw line breaks, so that is about twice per event, whatever its size).
        buffer = self._buffer
        while pos < limit:
            at = _line_end(buffer, pos, limit)
            if at < 0:
                return None
            match = _EVENT_END.match(buffer, at, limit)
            if match is not None:
                return match
            pos = at + 1
        return None

    def close(self) -> list[bytes]:
        """Whatever is left when the stream ends (an event without its final blank line)."""
        self._buffer_pieces(self._pieces)
        self._pieces, self._pieces_size = [], 0
        rest, self._buffer = bytes(self._buffer), bytearray()
        self._searched = 0
        payload = _data_of(rest)
        return [payload] if payload is not None else []


def _line_end(data: bytes | bytearray, pos: int, limit: int) -> int:
    """Index of the first CR or LF in `data[pos:limit]`, or -1 (two memchr-speed searches)."""
    lf, cr = data.find(b"\n", pos, limit), data.find(b"\r", pos, limit)
    return min(lf, cr) if lf >= 0 and cr >= 0 else max(lf, cr)


def _data_in(buffer: bytearray, start: int, end: int) -> bytes | None:
    """`_data_of` the block `buffer[start:end]`; the usual single-line `data: ` event is copied
    out once (a slice and `bytes()` of it would copy a megabyte event twice, `_data_of` thrice)."""
    if (
        buffer.startswith(b"data: ", start, end)
        and buffer.find(b"\n", start, end) < 0
        and buffer.find(b"\r", start, end) < 0
    ):
        return bytes(memoryview(buffer)[start + 6 : end])
    return _data_of(bytes(memoryview(buffer)[start:end]))


def _data_of(block: bytes) -> bytes | None:
    """The `data` field of one event block; None when it has none (comments, keep-alives)."""
    if block.startswith(b"data: ") and b"\n" not in block and b"\r" not in block:
        return block[6:]  # the usual single-line event: no copy of the line list
    data: list[bytes] = []
    for line in _LINE_END.split(block):
        if line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
        # `event:`, `id:`, `retry:` and `:` comments carry nothing we forward.
    if not data:
        return None
    payload = b"\n".join(data)
    return payload if payload.strip() else None
