"""The HTTP/1.1 connection protocol `bananagate serve` runs under uvicorn: uvicorn's h11 protocol
with two things it lacks.

1. **A header deadline.** uvicorn times out idle keep-alive connections, but not a connection
   that has not sent (all of) a request's headers yet: a client that connects and then trickles
   one header byte every few seconds (slowloris) holds its socket forever, and any byte received
   even cancels the keep-alive timer. Here every connection must deliver complete request headers
   within `header_timeout` seconds of opening, or of its previous response; otherwise it is closed
   (with a 408 in Google's envelope if part of a request had arrived). Slow *bodies* are the
   ASGI layer's job (`server.body.TimedReceive`), as only the app knows when it reads one.
2. **An error envelope for unparseable requests.** A request h11 cannot parse (`Content-Length:
   abc`, a bad request line, headers over the size limit) never reaches the app; uvicorn answers
   it with a plain-text 400. Here it gets the same JSON envelope, `x-request-id` and access-log
   line as every other error.

The h11 implementation is pinned on purpose: httptools (picked by uvicorn's "auto" when
installed) has neither hook.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from bananagate.protocol.errors import ApiError
from bananagate.server.middleware import access_log, new_request_id

log = logging.getLogger("bananagate.server")

DEFAULT_HEADER_TIMEOUT = 10.0


def _envelope(status: int, message: str, status_name: str, request_id: str) -> bytes:
    body = ApiError(status, message, status_name).to_json()
    head = (
        f"HTTP/1.1 {status} {'Bad Request' if status == 400 else 'Request Timeout'}\r\n"
        "content-type: application/json; charset=UTF-8\r\n"
        f"content-length: {len(body)}\r\n"
        f"x-request-id: {request_id}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header deadline and enveloped 400s (module docstring)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.header_timeout = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None
        self._partial = False  # bytes of a not yet complete request arrived since the timer started
        self._opened = time.perf_counter()

    # --- header deadline --------------------------------------------------------------------

    def _arm(self) -> None:
        self._disarm()
        self._partial = False
        self._opened = time.perf_counter()
        if self.header_timeout > 0:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is being served: its body and answer have their own limits
        if self._partial:
            # Part of a request came: say why the connection ends (nginx logs 408 for this too).
            request_id = new_request_id()
            self.transport.write(
                _envelope(
                    408,
                    f"The request headers did not arrive within {self.header_timeout:g} s.",
                    "DEADLINE_EXCEEDED",
                    request_id,
                )
            )
            self._log(408, request_id)
        self.transport.close()

    def _log(self, status: int, request_id: str) -> None:
        client = self.client[0] if self.client else "-"
        elapsed_ms = (time.perf_counter() - self._opened) * 1000
        access_log.info('%s "- -" %d 0B %.1fms rid=%s key=-', client, status, elapsed_ms, request_id)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._header_timer is not None:
            self._partial = True
        super().data_received(data)

    def handle_events(self) -> None:
        before = self.cycle
        super().handle_events()
        if self.cycle is not before:
            self._disarm()  # a request's headers are complete: the app has the request now

    def on_response_complete(self) -> None:
        # Armed before the parent runs, since it may start a pipelined request at once (which
        # disarms the timer again in handle_events).
        self._arm()
        super().on_response_complete()

    # --- unparseable requests ---------------------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        request_id = new_request_id()
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self.transport.write(
                _envelope(400, f"{msg} The request is not valid HTTP/1.1.", "INVALID_ARGUMENT", request_id)
            )
        self._log(400, request_id)
        self._disarm()
        self.transport.close()


def guarded_protocol(header_timeout: float) -> Any:
    """What uvicorn's `http=` takes: a protocol class bound to `header_timeout` (a partial, so it
    pickles for `--workers` processes)."""
    return functools.partial(GuardedH11Protocol, header_timeout=header_timeout)
