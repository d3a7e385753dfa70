"""A scriptable, recording HTTP server on 127.0.0.1: uvicorn running a Starlette app in a thread.

Subclasses (`FakeGoogle`, `FakeComet`, `FakeOpenAI`) decide how requests are authenticated and
what a normal answer is; tests script exceptions to that per request (`enqueue`) and assert on
`requests`, the exact bytes and headers each request carried.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route


@dataclass
class Recorded:
    """One request as it arrived."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    at: float = field(default_factory=time.monotonic)
    reply: Reply | StreamReply | None = None  # what the fake answered

    @property
    def reply_body(self) -> bytes:
        assert isinstance(self.reply, Reply)
        return self.reply.body

    @property
    def reply_events(self) -> list[bytes]:
        assert isinstance(self.reply, StreamReply)
        return self.reply.events

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class Reply:
    """A complete answer: status, body bytes, headers; sent after `delay` seconds."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    media_type: str = "application/json; charset=UTF-8"


@dataclass
class StreamReply:
    """An SSE answer: each event is framed as `data: <event><terminator>`.

    `pacing` sleeps between events; with `gate`, the server sends the first `gate_after` events
    and then waits (up to `gate_timeout`) until the test sets the gate. `chunk_size` splits the
    bytes into writes of that size (a big event then arrives in many network chunks).
    """

    events: list[bytes]
    status: int = 200
    pacing: float = 0.0
    gate: threading.Event | None = None
    gate_after: int = 1
    gate_timeout: float = 30.0
    terminator: bytes = b"\r\n\r\n"
    chunk_size: int | None = None
    delay: float = 0.0
    finished: threading.Event = field(default_factory=threading.Event)


AnyReply = Reply | StreamReply
Script = AnyReply | Callable[[Recorded], AnyReply]


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class LoopbackServer:
    """Serve `app` on a free loopback port from a background thread (`with` it, or start/stop)."""

    def __init__(self, app: Any) -> None:
        self._sock = _listening_socket()
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name=f"upstream-{self.port}", daemon=True)

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._sock]))

    def start(self) -> LoopbackServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("loopback upstream did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class FakeUpstream(LoopbackServer):
    """Records every request; answers with the scripted replies in order, then `default_reply`."""

    def __init__(self, name: str, keys: list[str] | tuple[str, ...]) -> None:
        self.name = name
        self.keys = set(keys)
        self.requests: list[Recorded] = []
        self._script: list[Script] = []
        self._default: Script | None = None
        self._lock = threading.Lock()
        app = Starlette(
            routes=[Route("/{path:path}", self._handle, methods=["GET", "POST", "PUT", "DELETE"])]
        )
        super().__init__(app)

    # --- scripting ---------------------------------------------------------------------------

    def enqueue(self, *replies: Script) -> None:
        """The next authenticated requests get these replies, in order."""
        with self._lock:
            self._script.extend(replies)

    def set_default(self, reply: Script | None) -> None:
        """What requests get once the script is used up (None: the normal answer)."""
        self._default = reply

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._script.clear()
        self._default = None

    def requests_to(self, suffix: str) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith(suffix)]

    # --- to override -------------------------------------------------------------------------

    def authenticate(self, request: Recorded) -> Reply | None:
        """None when the credentials are good, else the error reply the real service gives."""
        raise NotImplementedError

    def normal_reply(self, request: Recorded) -> AnyReply:
        raise NotImplementedError

    # --- serving -----------------------------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        recorded = Recorded(
            method=request.method,
            path=request.url.path,
            query=dict(request.query_params),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=await request.body(),
        )
        with self._lock:
            self.requests.append(recorded)
        reply: AnyReply | None = self.authenticate(recorded)
        if reply is None:
            with self._lock:
                script = self._script.pop(0) if self._script else self._default
            if script is None:
                reply = self.normal_reply(recorded)
            else:
                reply = script(recorded) if callable(script) else script
        recorded.reply = reply
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if isinstance(reply, StreamReply):
            return StreamingResponse(
                _sse_body(reply), status_code=reply.status, media_type="text/event-stream"
            )
        return Response(
            reply.body, status_code=reply.status, headers=reply.headers, media_type=reply.media_type
        )


async def _sse_body(reply: StreamReply) -> AsyncIterator[bytes]:
    try:
        for index, event in enumerate(reply.events):
            if index and reply.pacing:
                await asyncio.sleep(reply.pacing)
            if reply.gate is not None and index == reply.gate_after:
                await anyio.to_thread.run_sync(reply.gate.wait, reply.gate_timeout)
            frame = b"data: " + event + reply.terminator
            size = reply.chunk_size or len(frame)
            for start in range(0, len(frame), size):
                yield frame[start : start + size]
    finally:
        reply.finished.set()
