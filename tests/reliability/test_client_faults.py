"""Client faults: clients that leave mid-upload or mid-download, slowloris headers and bodies, a
thousand idle connections, and requests too broken for HTTP itself.

A client that leaves must cost nothing and hold nothing: the upstream call is cancelled, the
budget hold released, the ledger says `cancelled`. A client that is slow on purpose is cut off
by the header deadline (`BANANAGATE_HEADER_TIMEOUT`, 1.5 s here) or the body deadline
(`BANANAGATE_BODY_TIMEOUT`), and its connection is closed.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time

import httpx
import orjson

from tests.conftest import Gateway
from tests.reliability.conftest import (
    BODY,
    GENERATE,
    PRICE_NANOS,
    STREAM,
    Behaviour,
    RawUpstream,
    assert_books_balance,
    assert_google_envelope,
    gateway_healthy,
    http_request,
    ledger,
    new_key,
    port_of,
    raw_exchange,
    split_response,
    wait_for_ledger,
)

BUDGET = 10 * PRICE_NANOS


def _connect(gateway: Gateway) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port_of(gateway)), timeout=10)


def _wait_for_log(gateway: Gateway, needle: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while needle not in (log := gateway.log()):
        assert time.monotonic() < deadline, f"{needle!r} not in the log:\n{log[-3000:]}"
        time.sleep(0.05)
    return log


# --- clients that leave -------------------------------------------------------------------------------


def test_disconnect_mid_upload_admits_nothing(shared_gateway: Gateway) -> None:
    key_id, secret = new_key(shared_gateway, "upload-quitter", budget_nanos=BUDGET)
    head = http_request(GENERATE, {"x-goog-api-key": secret, "content-type": "application/json"})
    head = head.replace(b"content-length: 0", b"content-length: 200000")
    with _connect(shared_gateway) as sock:
        sock.sendall(head + b'{"contents": [{"parts": [{"text": "' + b"x" * 5000)
        time.sleep(0.2)
    log = _wait_for_log(shared_gateway, "key=upload-quitter")
    line = next(x for x in log.splitlines() if "key=upload-quitter" in x)
    assert '" 499 ' in line  # logged as "client closed request", not as a server error
    assert "Traceback" not in log
    time.sleep(0.2)
    assert ledger(shared_gateway, key_id) == []  # never admitted: nothing held, nothing recorded
    assert_books_balance(shared_gateway, key_id, charged=0)
    gateway_healthy(shared_gateway)


def test_disconnect_while_waiting_cancels_the_call_and_releases_the_hold(shared_gateway: Gateway) -> None:
    key_id, secret = new_key(shared_gateway, "impatient", budget_nanos=BUDGET)
    headers = {
        "x-goog-api-key": secret,
        "content-type": "application/json",
        "x-bananagate-emulate": "delay=4",
    }
    with _connect(shared_gateway) as sock:
        sock.sendall(http_request(GENERATE, headers, BODY))
        time.sleep(0.6)  # admitted, hold taken, the (emulated) upstream is working
    left = time.monotonic()
    rows = wait_for_ledger(shared_gateway, key_id, 1, timeout=3)
    # Recorded long before the 4 s answer would have come: the call was cancelled, not finished.
    assert time.monotonic() - left < 2.5
    assert [(r.outcome, r.status, r.cost_nanos) for r in rows] == [("cancelled", 499, 0)]
    assert_books_balance(shared_gateway, key_id, charged=0)


def test_disconnect_cancels_the_upstream_http_call(raw_gateway: Gateway, raw_upstream: RawUpstream) -> None:
    key_id, secret = new_key(raw_gateway, "upstream-cancel", budget_nanos=BUDGET)
    raw_upstream.default = Behaviour("hold")
    before = len(raw_upstream.requests)
    with _connect(raw_gateway) as sock:
        sock.sendall(http_request(GENERATE, {"x-goog-api-key": secret}, BODY))
        deadline = time.monotonic() + 5
        while len(raw_upstream.requests) == before:  # the call reached the upstream
            assert time.monotonic() < deadline
            time.sleep(0.02)
    left = time.monotonic()
    rows = wait_for_ledger(raw_gateway, key_id, 1, timeout=3)
    # The gateway hung up on the upstream at once (its 1 s read timeout had not come), and did
    # not retry for a client that is gone. (The upstream's thread may note the hang-up only
    # after the ledger row is visible here: wait for it, then check when it came.)
    deadline = time.monotonic() + 2
    while not raw_upstream.closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert raw_upstream.closed and raw_upstream.closed[-1] - left < 0.8
    assert len(raw_upstream.requests) == before + 1
    assert [(r.outcome, r.cost_nanos) for r in rows] == [("cancelled", 0)]
    assert_books_balance(raw_gateway, key_id, charged=0)


def test_disconnect_mid_stream_cancels_the_call(shared_gateway: Gateway) -> None:
    key_id, secret = new_key(shared_gateway, "stream-quitter", budget_nanos=BUDGET)
    headers = {
        "x-goog-api-key": secret,
        "content-type": "application/json",
        "x-bananagate-emulate": "event-delay=4",
    }
    with _connect(shared_gateway) as sock:
        sock.sendall(http_request(STREAM, headers, BODY))
        received = b""
        while b"data: " not in received:  # the first event arrived
            received += sock.recv(65536)
    left = time.monotonic()
    rows = wait_for_ledger(shared_gateway, key_id, 1, timeout=3)
    assert time.monotonic() - left < 2.5
    assert [(r.outcome, r.cost_nanos) for r in rows] == [("cancelled", 0)]
    assert_books_balance(shared_gateway, key_id, charged=0)


def test_a_client_that_stays_is_served_and_charged_once(shared_gateway: Gateway) -> None:
    """The control case for the two above: same request, the client waits."""
    key_id, secret = new_key(shared_gateway, "patient", budget_nanos=BUDGET)
    headers = {"x-goog-api-key": secret, "x-bananagate-emulate": "delay=0.5"}
    response = httpx.post(shared_gateway.url + GENERATE, content=BODY, headers=headers, timeout=30)
    assert response.status_code == 200
    wait_for_ledger(shared_gateway, key_id, 1)
    assert_books_balance(shared_gateway, key_id, charged=PRICE_NANOS)


# --- slowloris -------------------------------------------------------------------------------------


def test_idle_connection_is_closed_after_the_header_deadline(shared_gateway: Gateway) -> None:
    received, took = raw_exchange(port_of(shared_gateway), b"")
    assert received == b""  # nothing was asked, nothing is answered: just closed
    assert 1.0 < took < 4.0


def test_trickled_headers_are_cut_off_with_408(shared_gateway: Gateway) -> None:
    with _connect(shared_gateway) as sock:
        started = time.monotonic()
        received = b""
        with contextlib.suppress(OSError):
            for byte in b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: " + b"a" * 100:
                sock.sendall(bytes([byte]))  # one byte every 0.1 s: far slower than any client
                time.sleep(0.1)
                if time.monotonic() - started > 6:
                    break
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                received += chunk
        took = time.monotonic() - started
    status, headers, body = split_response(received)
    assert status == 408 and headers["connection"] == "close" and headers["x-request-id"]
    assert orjson.loads(body)["error"]["status"] == "DEADLINE_EXCEEDED"
    assert took < 4.0


def test_trickled_body_is_cut_off_with_408(shared_gateway: Gateway) -> None:
    headers = {"x-goog-api-key": shared_gateway.key, "content-type": "application/json"}
    head = http_request(GENERATE, headers).replace(b"content-length: 0", b"content-length: 5000")
    with _connect(shared_gateway) as sock:
        sock.sendall(head)
        started = time.monotonic()
        with contextlib.suppress(OSError):
            for _ in range(60):  # a byte every 0.1 s: 10 B/s, under the 1024 B/s minimum
                sock.sendall(b" ")
                time.sleep(0.1)
        received = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                received += chunk
        took = time.monotonic() - started
    status, response_headers, body = split_response(received)
    assert status == 408 and response_headers["connection"] == "close"
    assert orjson.loads(body)["error"]["code"] == 408
    assert took < 5.0


def test_stalled_body_is_cut_off_with_408(shared_gateway: Gateway) -> None:
    headers = {"authorization": f"Bearer {shared_gateway.key}", "content-type": "application/json"}
    head = http_request("/v1/images/generations", headers).replace(
        b"content-length: 0", b"content-length: 100"
    )
    received, took = raw_exchange(port_of(shared_gateway), head + b'{"prompt": "a')
    status, _, body = split_response(received)
    # The OpenAI route answers in OpenAI's envelope.
    assert status == 408 and orjson.loads(body)["error"]["message"].startswith(
        "The request body did not arrive"
    )
    assert took < 4.0


def test_a_thousand_idle_connections_do_not_stop_the_server(shared_gateway: Gateway) -> None:
    pid = shared_gateway.process.pid
    baseline = len(os.listdir(f"/proc/{pid}/fd"))
    idle: list[socket.socket] = []
    try:
        for _ in range(1000):
            sock = socket.socket()
            sock.setblocking(True)
            sock.settimeout(5)
            sock.connect(("127.0.0.1", port_of(shared_gateway)))
            idle.append(sock)
        started = time.monotonic()
        response = httpx.post(
            shared_gateway.url + GENERATE,
            content=BODY,
            headers={"x-goog-api-key": shared_gateway.key},
            timeout=10,
        )
        assert response.status_code == 200
        assert time.monotonic() - started < 5
        # The header deadline closes every one of them: the server's resources stay bounded.
        deadline = time.monotonic() + 10
        for sock in idle:
            sock.settimeout(max(deadline - time.monotonic(), 0.1))
            assert sock.recv(1) == b""
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 5
    while len(os.listdir(f"/proc/{pid}/fd")) > baseline + 20 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(os.listdir(f"/proc/{pid}/fd")) <= baseline + 20
    gateway_healthy(shared_gateway)


# --- requests HTTP itself refuses ---------------------------------------------------------------------


def test_broken_http_gets_a_400_in_the_envelope(shared_gateway: Gateway) -> None:
    cases = [
        http_request(GENERATE, {"x-goog-api-key": "x"}).replace(b"content-length: 0", b"content-length: abc"),
        b"GARBAGE\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nhost: a\r\nbad header line\r\n\r\n",
        # A bad chunk while the app reads the body (countTokens reads it after the key check).
        b"POST /v1beta/models/gemini-2.5-flash-image:countTokens HTTP/1.1\r\nhost: a\r\n"
        + f"x-goog-api-key: {shared_gateway.key}\r\n".encode()
        + b"transfer-encoding: chunked\r\n\r\nzz\r\n",
    ]
    for data in cases:
        received, _ = raw_exchange(port_of(shared_gateway), data)
        status, headers, body = split_response(received)
        assert status == 400, received[:200]
        assert headers["content-type"].startswith("application/json")
        assert headers["connection"] == "close" and headers["x-request-id"]
        error = orjson.loads(body)["error"]
        assert error["code"] == 400 and error["status"] == "INVALID_ARGUMENT"
    gateway_healthy(shared_gateway)
    assert "Traceback" not in shared_gateway.log()


def test_oversized_headers_arriving_in_pieces_get_a_400(shared_gateway: Gateway) -> None:
    """A request head still incomplete past 16 KiB is refused (h11 does it itself; with httptools,
    which has no bound, the gateway's protocol does). One that arrives whole in a single read
    is parsed whatever its size: bounded by the socket read size, a documented limitation."""
    with _connect(shared_gateway) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: a\r\nx-big: " + b"a" * 40_000)
        time.sleep(0.2)
        with contextlib.suppress(OSError):
            sock.sendall(b"a" * 40_000 + b"\r\n\r\n")
        received = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                received += chunk
    status, headers, body = split_response(received)
    assert status == 400 and headers["connection"] == "close"
    assert orjson.loads(body)["error"]["status"] == "INVALID_ARGUMENT"


def test_invalid_content_length_value_reaching_the_app_is_a_400(shared_gateway: Gateway) -> None:
    """h11 accepts `Content-Length: 00012`; the app still reads exactly that many bytes."""
    body = b'{"contents": []}'
    headers = {"x-goog-api-key": shared_gateway.key, "connection": "close"}
    data = http_request(GENERATE, headers, body).replace(
        f"content-length: {len(body)}".encode(), f"content-length: 000{len(body)}".encode()
    )
    received, _ = raw_exchange(port_of(shared_gateway), data + b"")
    status, _, payload = split_response(received)
    assert status == 400 and orjson.loads(payload)["error"]["status"] == "INVALID_ARGUMENT"


def test_pipelined_requests_are_answered_in_order(shared_gateway: Gateway) -> None:
    one = b"GET /healthz HTTP/1.1\r\nhost: a\r\n\r\n"
    last = b"GET /healthz HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n"
    received, _ = raw_exchange(port_of(shared_gateway), one * 3 + last)
    assert received.count(b"HTTP/1.1 200") == 4


def test_slow_client_envelopes_in_the_right_shape(shared_gateway: Gateway) -> None:
    """The 408 of a Gemini route is Google's envelope (the OpenAI one is checked above)."""
    headers = {"x-goog-api-key": shared_gateway.key, "content-type": "application/json"}
    head = http_request(GENERATE, headers).replace(b"content-length: 0", b"content-length: 100")
    received, _ = raw_exchange(port_of(shared_gateway), head + b"{")
    status, response_headers, body = split_response(received)
    assert status == 408
    response = httpx.Response(status, headers=response_headers, content=body)
    assert_google_envelope(response, 408)
