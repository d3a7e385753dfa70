"""The streaming failover rule (acceptance 4): before the first byte reached the client a failure
fails over like any request; after it there is no retry, the stream ends with an error event,
and the call is charged only for the images the client received."""

from __future__ import annotations

import functools
import itertools

import orjson

from tests.channels.conftest import FLASH_25
from tests.guarantees.conftest import PRICE, STREAM, Rig, body, dying_stream, image_event
from tests.upstreams import FakeGoogle, Recorded, StreamReply, sse_events
from tests.upstreams.server import AnyReply


def _events(raw: bytes) -> list[dict[str, object]]:
    return [orjson.loads(frame[len(b"data: ") :]) for frame in raw.split(b"\r\n\r\n") if frame]


def test_a_stream_that_dies_after_two_events_ends_with_an_error_event(fresh: Rig) -> None:
    key_id, secret = fresh.key(budget_nanos=10 * PRICE)
    text, _ = sse_events(FLASH_25, fresh.a.image, "drawing")
    image = image_event(FLASH_25, fresh.a.image, finish=False)
    for upstream in fresh.upstreams:  # whichever channel is picked first dies after two events
        upstream.set_default(dying_stream([text, image]))
    with fresh.client(secret) as client, client.stream("POST", STREAM, content=body()) as response:
        assert response.status_code == 200
        raw = response.read()
    events = _events(raw)
    assert len(events) == 3
    assert orjson.dumps(events[0]) == orjson.dumps(orjson.loads(text))
    assert "inlineData" in orjson.dumps(events[1]).decode()
    error = events[2]["error"]
    assert isinstance(error, dict) and error["code"] == 503 and error["status"] == "UNAVAILABLE"
    assert list(events[2]) == ["error"]
    assert fresh.upstream_calls() == 1  # no failover request reached the other channel

    (row,) = fresh.store.ledger.rows(key_id=key_id)
    assert row.streamed and row.status == 503 and row.outcome == "error"
    assert row.images == 1 and row.cost_nanos == PRICE  # the image the client received
    (key,) = [k for k in fresh.store.keys.list_keys() if k.id == key_id]
    assert key.spent_nanos == PRICE and key.reserved_nanos == 0


def test_a_stream_that_dies_before_its_first_event_fails_over(fresh: Rig) -> None:
    _, secret = fresh.key()
    deaths = itertools.count()

    def first_two_die(request: Recorded, upstream: FakeGoogle) -> AnyReply:
        # The first channel tried dies before sending anything, on its try and its retry.
        return dying_stream([]) if next(deaths) < 2 else upstream.normal_reply(request)

    for upstream in fresh.upstreams:
        upstream.set_default(functools.partial(first_two_die, upstream=upstream))
    with fresh.client(secret) as client, client.stream("POST", STREAM, content=body()) as response:
        assert response.status_code == 200
        raw = response.read()
    events = _events(raw)
    assert all("error" not in e for e in events) and "inlineData" in raw.decode()
    served = fresh.a if response.headers["x-bananagate-channel"] == "a" else fresh.b
    died = fresh.b if served is fresh.a else fresh.a
    assert len(died.requests) == 2 and len(served.requests) == 1  # served by the other channel
    assert response.headers["x-bananagate-attempts"] == "3"
    assert "server-timing" in response.headers


def test_an_upstream_error_event_mid_stream_is_passed_on_and_not_retried(fresh: Rig) -> None:
    key_id, secret = fresh.key()
    text, _ = sse_events(FLASH_25, fresh.a.image, "drawing")
    failure = orjson.dumps({"error": {"code": 500, "message": "internal", "status": "INTERNAL"}})
    for upstream in fresh.upstreams:
        upstream.set_default(StreamReply([text, failure]))
    with fresh.client(secret) as client, client.stream("POST", STREAM, content=body()) as response:
        raw = response.read()
    events = _events(raw)
    assert [list(e) for e in events][-1] == ["error"] and len(events) == 2
    assert fresh.upstream_calls() == 1
    (row,) = fresh.store.ledger.rows(key_id=key_id)
    assert row.outcome == "error" and row.cost_nanos == 0
