"""Splitting upstream SSE into event payloads, whatever the chunking and line ends."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bananagate.providers.sse import EventTooLarge, SseSplitter

STREAM = (
    b'data: {"a":1}\r\n\r\n'  # Google: CRLF
    b'data: {"b":2}\n\n'  # most others: LF
    b": keep-alive comment\n\n"  # carries no data: dropped
    b"event: message\nid: 7\ndata: line one\ndata: line two\r\r"  # multi-line data, CR ends
    b'data:{"c":3}\r\n\n'  # no space after the colon; mixed ends
    b'data: {"tail":true}'  # no final blank line: flushed at close
)
EXPECTED = [b'{"a":1}', b'{"b":2}', b"line one\nline two", b'{"c":3}', b'{"tail":true}']


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, len(STREAM)])
def test_any_chunking_gives_the_same_events(size: int) -> None:
    splitter = SseSplitter()
    events: list[bytes] = []
    for start in range(0, len(STREAM), size):
        events += splitter.feed(STREAM[start : start + size])
    events += splitter.close()
    assert events == EXPECTED


def test_events_are_emitted_as_soon_as_they_are_complete() -> None:
    splitter = SseSplitter()
    assert splitter.feed(b'data: {"a":1}\r\n') == []
    assert splitter.feed(b"\r") == []  # might be the start of CRLF: wait
    assert splitter.feed(b"\n") == [b'{"a":1}']


def test_a_huge_event_is_one_payload() -> None:
    payload = b'{"inlineData":{"data":"' + b"QUJD" * (8 * 1024 * 1024) + b'"}}'  # 32 MiB
    frame = b"data: " + payload + b"\r\n\r\n"
    splitter = SseSplitter()
    events: list[bytes] = []
    for start in range(0, len(frame), 65536):
        events += splitter.feed(frame[start : start + 65536])
    assert len(events) == 1 and events[0] == payload


def test_a_cap_stops_runaway_events() -> None:
    splitter = SseSplitter(max_event_bytes=1000)
    with pytest.raises(EventTooLarge):
        splitter.feed(b"data: " + b"x" * 2000)


# --- property: any stream, cut anywhere, splits as the SSE spec reads it ----------------------

_TERMINATORS = (b"\r\n", b"\n", b"\r")


def reference_events(stream: bytes) -> list[bytes]:
    """The SSE spec's reading (data lines joined by LF, dispatched at a blank line, at the end
    too), written independently of the splitter. Only for payloads that are not blank."""
    events: list[bytes] = []
    data: list[bytes] = []
    for line in re.split(rb"\r\n|\n|\r", stream):
        if line == b"":
            if data:
                events.append(b"\n".join(data))
            data = []
        elif line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
    if data:
        events.append(b"\n".join(data))
    return events


_payload = st.binary(min_size=1, max_size=300).map(
    lambda b: b"x" + b.replace(b"\r", b"").replace(b"\n", b"")  # no line breaks, never blank
)


@st.composite
def sse_streams(draw: st.DrawFn) -> bytes:
    out = b""
    for _ in range(draw(st.integers(0, 6))):
        term = st.sampled_from(_TERMINATORS)
        lines: list[bytes] = []
        for payload in draw(st.lists(_payload, min_size=1, max_size=3)):
            lines.append(b"data:" + draw(st.sampled_from([b" ", b""])) + payload)
        if draw(st.booleans()):
            lines.insert(draw(st.integers(0, len(lines))), b": comment")
        if draw(st.booleans()):
            lines.insert(0, b"event: message")
        out += b"".join(line + draw(term) for line in lines) + draw(term)
        if draw(st.booleans()):  # a big one-line event, like an image
            out += b"data: " + b"QUJD" * draw(st.integers(1, 40_000)) + draw(term) + draw(term)
    return out


@settings(max_examples=300)
@given(stream=sse_streams(), data=st.data())
def test_any_stream_cut_anywhere_splits_as_the_spec_reads_it(stream: bytes, data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    splitter = SseSplitter()
    events: list[bytes] = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        events += splitter.feed(stream[a:b])
    events += splitter.close()
    assert events == reference_events(stream)
