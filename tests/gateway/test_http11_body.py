"""How `server/http11.py` hands a request body to the app, and a chunked answer to the client:
under real uvicorn, over a real socket.

A body that arrives in many pieces within moments is one `http.request` message (one join, one
trip through the app's receive chain); a body that trickles reaches the app as it comes, at least
every `BODY_WAKE_INTERVAL`, so the app's own body deadlines still see its progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from bananagate.server import http11

pytestmark = pytest.mark.skipif(http11.GuardedHttpToolsProtocol is None, reason="httptools not installed")


class Recorder:
    """An ASGI app that reads the whole body and notes each message's size and arrival time."""

    def __init__(self) -> None:
        self.requests: list[list[tuple[int, bool, float]]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        messages: list[tuple[int, bool, float]] = []
        total = 0
        while True:
            message = await receive()
            assert message["type"] == "http.request"
            messages.append((len(message["body"]), message["more_body"], time.monotonic()))
            total += len(message["body"])
            if not message["more_body"]:
                break
        self.requests.append(messages)
        body = str(total).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"%d" % len(body))],
            }
        )
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
def served() -> Iterator[tuple[Recorder, int]]:
    app = Recorder()
    with serving(app) as port:
        yield app, port


@contextlib.contextmanager
def serving(app: Any) -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app, http=http11.guarded_protocol(10.0), lifespan="off", log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)


def _post(port: int, pieces: list[bytes], pause: float) -> bytes:
    size = sum(map(len, pieces))
    head = f"POST /upload HTTP/1.1\r\nhost: t\r\ncontent-length: {size}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(head)
        for piece in pieces:
            conn.sendall(piece)
            time.sleep(pause)
        received = b""
        while not received.endswith(str(size).encode()):
            chunk = conn.recv(65536)
            if not chunk:
                break
            received += chunk
    return received


def test_a_body_that_arrives_at_once_is_one_message(served: tuple[Recorder, int]) -> None:
    app, port = served
    pieces = [bytes([i]) * 240_000 for i in range(6)]  # 1.44 MB in six writes
    for _ in range(5):
        assert _post(port, pieces, pause=0).endswith(b"1440000")
    counts = [len(messages) for messages in app.requests]
    assert all(sum(size for size, _, _ in messages) == 1_440_000 for messages in app.requests)
    assert all(not messages[-1][1] for messages in app.requests)  # the last says: no more body
    # One message each (uvicorn's own protocol woke the app for every piece the parser handed
    # over: 9 here); a stall of the machine longer than BODY_WAKE_INTERVAL mid-body may split one.
    assert counts.count(1) >= 4 and max(counts) <= 2, counts


def test_a_trickled_body_reaches_the_app_as_it_comes(served: tuple[Recorder, int]) -> None:
    app, port = served
    pause = 3 * http11.BODY_WAKE_INTERVAL
    started = time.monotonic()
    assert _post(port, [b"x" * 1000] * 5, pause=pause).endswith(b"5000")
    (messages,) = app.requests
    assert sum(size for size, _, _ in messages) == 5000
    # The body came to the app in parts as it was sent (the last piece left at 4 × pause), not
    # once at the end.
    assert len(messages) >= 3
    assert messages[0][2] - started < 2 * pause


def _chunks_app(chunks: list[bytes]) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-test", b"1")]})
        for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


def _exchange(port: int, request: bytes, until: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        received = b""
        while not received.endswith(until):
            chunk = conn.recv(1 << 20)
            if not chunk:
                break
            received += chunk
    return received


def test_big_chunks_of_a_chunked_answer_are_framed_as_uvicorn_frames_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

    big = bytes(range(256)) * 1000  # 256,000 bytes: written as three buffers, not joined
    chunks = [b"data: small\r\n\r\n", big, http11.CHUNK_WRITELINES_FROM * b"x", b"tail"]
    framed_by_uvicorn: list[int] = []
    uvicorn_send = RequestResponseCycle.send

    async def spy(self: Any, message: Any) -> None:
        framed_by_uvicorn.append(len(message.get("body", b"")))
        await uvicorn_send(self, message)

    monkeypatch.setattr(RequestResponseCycle, "send", spy)
    with serving(_chunks_app(chunks)) as port:
        request = b"GET /events HTTP/1.1\r\nhost: t\r\n\r\n"
        for _ in range(2):  # twice on one connection: the first answer ended cleanly
            received = _exchange(port, request, b"0\r\n\r\n")
            head, _, body = received.partition(b"\r\n\r\n")
            assert b"transfer-encoding: chunked" in head.lower()
            assert body == b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
        head_only = _exchange(port, b"HEAD /events HTTP/1.1\r\nhost: t\r\n\r\n", b"\r\n\r\n")
        assert head_only.startswith(b"HTTP/1.1 200") and head_only.endswith(b"\r\n\r\n")
        assert big[:100] not in head_only
    # uvicorn framed (and copied) only the small chunks; the big ones reached it empty.
    assert framed_by_uvicorn[1:6] == [len(chunks[0]), 0, 0, len(chunks[3]), 0]
