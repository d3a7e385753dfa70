"""Splitting upstream SSE into event payloads, whatever the chunking and line ends."""

from __future__ import annotations

import pytest

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
