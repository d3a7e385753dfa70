"""The HTTP/1.1 connection protocol `bananagate serve` runs under uvicorn: uvicorn's own (httptools
when installed, as uvicorn's "auto" picks, else h11) with two things it lacks.

1. **A header deadline.** uvicorn times out idle keep-alive connections, but not a connection
   that has not sent (all of) a request's headers yet: a client that connects and then trickles
   one header byte every few seconds (slowloris) holds its socket forever, and any byte received
   even cancels the keep-alive timer. Here every connection must deliver complete request headers
   within `header_timeout` seconds of opening, or of its previous response; otherwise it is closed
   (with a 408 in Google's envelope if part of a request had arrived). Slow *bodies* are the
   ASGI layer's job (`server.body.TimedReceive`), as only the app knows when it reads one.
2. **An error envelope for unparseable requests.** A request the parser refuses (`Content-Length:
   abc`, a bad request line, an oversized head) never reaches the app; uvicorn answers it with a
   plain-text 400. Here it gets the JSON envelope, `x-request-id` and access-log line of every
   other error. (Google's envelope even on OpenAI routes: the path is not known at that point.)
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from bananagate.protocol.errors import ApiError
from bananagate.server.middleware import access_log, new_request_id

log = logging.getLogger("bananagate.server")

DEFAULT_HEADER_TIMEOUT = 10.0
# Largest request head (request line and headers) accepted; h11 has the same bound built in,
# httptools none at all (a client could grow one request's headers without limit).
MAX_HEAD_BYTES = 16 * 1024
_REASONS = {400: "Bad Request", 408: "Request Timeout"}


def _envelope(status: int, message: str, status_name: str, request_id: str) -> bytes:
    body = ApiError(status, message, status_name).to_json()
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        "content-type: application/json; charset=UTF-8\r\n"
        f"content-length: {len(body)}\r\n"
        f"x-request-id: {request_id}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class _Guarded(asyncio.Protocol):
    """What both guarded protocols add (module docstring). Mixed in before uvicorn's class, whose
    attributes (`loop`, `transport`, `cycle`, `client`) and callbacks it uses."""

    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    cycle: Any
    client: tuple[str, int] | None
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    _header_timer: asyncio.TimerHandle | None = None
    _partial = False  # bytes of a not yet complete request arrived since the timer started
    _head_bytes = 0  # how many of them
    _opened = 0.0

    def _arm(self) -> None:
        self._disarm()
        self._partial = False
        self._head_bytes = 0
        self._opened = time.perf_counter()
        if self.header_timeout > 0:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _busy(self) -> bool:
        """A request is being served: its body and answer have limits of their own."""
        return self.cycle is not None and not self.cycle.response_complete

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self._busy():
            return
        if self._partial:
            # Part of a request came: say why the connection ends (nginx logs a 408 for this too).
            request_id = new_request_id()
            message = f"The request headers did not arrive within {self.header_timeout:g} s."
            self.transport.write(_envelope(408, message, "DEADLINE_EXCEEDED", request_id))
            self._log(408, request_id)
        self.transport.close()

    def _log(self, status: int, request_id: str) -> None:
        client = self.client[0] if self.client else "-"
        elapsed_ms = (time.perf_counter() - self._opened) * 1000
        access_log.info('%s "- -" %d 0B %.1fms rid=%s key=-', client, status, elapsed_ms, request_id)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        waiting = self._header_timer is not None
        if waiting:
            self._partial = True
            self._head_bytes += len(data)
        before = self.cycle
        super().data_received(data)
        if self.cycle is not before:
            self._disarm()  # a request's headers are complete: the app has the request now
        elif waiting and self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
            self._refuse(f"The request head is larger than {MAX_HEAD_BYTES} bytes.")

    def on_response_complete(self) -> None:
        # Armed before the parent runs, since it may start a pipelined request at once; the
        # timer never closes a connection with a request in progress anyway (`_busy`).
        self._arm()
        super().on_response_complete()  # type: ignore[misc]

    def send_400_response(self, msg: str) -> None:
        # uvicorn's message is always "Invalid HTTP request received."
        self._refuse(f"{msg} The request is not valid HTTP/1.1.")

    def _refuse(self, message: str) -> None:
        request_id = new_request_id()
        if self.cycle is None or self.cycle.response_complete or not self.cycle.response_started:
            self.transport.write(_envelope(400, message, "INVALID_ARGUMENT", request_id))
        self._log(400, request_id)
        self._disarm()
        self.transport.close()


class GuardedH11Protocol(_Guarded, H11Protocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    ) -> None:
        H11Protocol.__init__(self, config, server_state, app_state, _loop)
        self.header_timeout = header_timeout


# Request body bytes buffered before reading pauses until the app takes them. uvicorn pauses at
# 64 KiB, so a 1.4 MB image request took ~20 trips through the app's receive chain; every
# route here reads its body whole anyway (and bounded by the body limit).
BODY_HIGH_WATER = 4 * 1024 * 1024
# From this size on a chunk of a chunked response is written as its pieces (`PiecesCycle.send`).
CHUNK_WRITELINES_FROM = 64 * 1024
# Longest a received body piece waits for more before the app is woken to take it (below).
BODY_WAKE_INTERVAL = 0.1


def _httptools_class() -> type[asyncio.Protocol] | None:
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
    except ImportError:  # httptools is not installed: uvicorn runs on h11
        return None

    class PiecesCycle(RequestResponseCycle):
        """uvicorn's request cycle with the body kept as the pieces the parser handed over and
        joined once per `receive`: uvicorn appends each piece to a bytearray and copies that
        into bytes again, two copies of every byte of a multi-megabyte image request. A big
        chunk of a chunked response (a stream event with an image) goes out without the copy
        uvicorn makes to put its size line and CRLF around it."""

        pieces: list[bytes]
        buffered: int
        wake: asyncio.TimerHandle | None = None

        async def send(self, message: Any) -> None:
            body = message.get("body", b"") if message["type"] == "http.response.body" else b""
            if (
                len(body) >= CHUNK_WRITELINES_FROM
                and self.chunked_encoding
                and self.response_started
                and not self.response_complete
                and not self.disconnected
                and self.scope["method"] != "HEAD"
            ):
                if self.flow.write_paused:
                    await self.flow.drain()  # as uvicorn's send does first
                if self.disconnected:
                    return
                # The chunk as uvicorn frames it, handed over as three buffers (one writev).
                self.transport.writelines((b"%x\r\n" % len(body), body, b"\r\n"))
                message = {
                    "type": "http.response.body",
                    "body": b"",
                    "more_body": message.get("more_body", False),
                }
            await super().send(message)

        async def receive(self) -> Any:
            # As uvicorn's own receive (0.30 to 0.38), but for where the body comes from.
            if self.waiting_for_100_continue and not self.transport.is_closing():
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                self.waiting_for_100_continue = False
            if not self.disconnected and not self.response_complete:
                self.flow.resume_reading()
                await self.message_event.wait()
                self.message_event.clear()
            if self.wake is not None:
                self.wake.cancel()
                self.wake = None
            if self.disconnected or self.response_complete:
                return {"type": "http.disconnect"}
            pieces, self.pieces, self.buffered = self.pieces, [], 0
            body = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            return {"type": "http.request", "body": body, "more_body": self.more_body}

    class GuardedHttpToolsProtocol(_Guarded, HttpToolsProtocol):
        def __init__(
            self,
            config: Config,
            server_state: ServerState,
            app_state: dict[str, Any],
            _loop: asyncio.AbstractEventLoop | None = None,
            *,
            header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        ) -> None:
            HttpToolsProtocol.__init__(self, config, server_state, app_state, _loop)
            self.header_timeout = header_timeout

        def on_headers_complete(self) -> None:
            before = self.cycle
            super().on_headers_complete()
            cycle = self.cycle
            if cycle is not before and type(cycle) is RequestResponseCycle:
                # uvicorn builds its own cycle here and its task has not run yet: the new class
                # takes effect from the task's first `receive` (a subclass, same attributes).
                cycle.__class__ = PiecesCycle
                assert isinstance(cycle, PiecesCycle)
                cycle.pieces, cycle.buffered = [], 0

        def on_body(self, body: bytes) -> None:
            cycle = self.cycle
            if not isinstance(cycle, PiecesCycle):
                super().on_body(body)
                return
            if (self.parser.should_upgrade() and self._should_upgrade()) or cycle.response_complete:
                return
            cycle.pieces.append(body)
            cycle.buffered += len(body)
            if cycle.buffered > BODY_HIGH_WATER:
                self.flow.pause_reading()
                cycle.message_event.set()
            elif cycle.wake is None:
                # The app is woken when the body is complete (uvicorn's `on_message_complete`),
                # at the high-water mark, or BODY_WAKE_INTERVAL after a piece it has not seen:
                # a 1.4 MB body arriving in six pieces is one `receive` and no join in the app,
                # and a slow body still reaches the app's own deadlines as it comes.
                cycle.wake = self.loop.call_later(BODY_WAKE_INTERVAL, cycle.message_event.set)

    GuardedHttpToolsProtocol.__qualname__ = GuardedHttpToolsProtocol.__name__
    return GuardedHttpToolsProtocol


GuardedHttpToolsProtocol = _httptools_class()


def guarded_protocol(header_timeout: float) -> Any:
    """What uvicorn's `http=` takes: the guarded protocol (httptools' when installed, as uvicorn's
    "auto" would pick) bound to `header_timeout`; a partial, so it pickles for `--workers`."""
    cls: Any = GuardedHttpToolsProtocol or GuardedH11Protocol
    return functools.partial(cls, header_timeout=header_timeout)
