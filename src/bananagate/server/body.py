"""Reading a request body once, under a size cap and a time limit."""

from __future__ import annotations

import time

import anyio
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message, Receive

from bananagate.protocol.errors import ApiError

# Defaults of `Settings.body_timeout` / `body_min_rate` (the middleware passes the configured ones).
DEFAULT_BODY_TIMEOUT = 30.0
DEFAULT_BODY_MIN_RATE = 1024


def payload_too_large(limit: int) -> ApiError:
    return ApiError(413, f"Request payload size exceeds the limit: {limit} bytes.", "INVALID_ARGUMENT")


def client_closed() -> ApiError:
    # 499 is nginx's "client closed request" (and gRPC's CANCELLED): nobody reads this answer,
    # but the access log and metrics say what happened instead of showing a 500.
    return ApiError(499, "The client closed the connection before sending the whole request.", "CANCELLED")


def body_too_slow(timeout: float, min_rate: int) -> ApiError:
    message = (
        f"The request body did not arrive in time (at most {timeout:g} s between chunks"
        + (f", at least {min_rate} bytes/s on average" if min_rate > 0 else "")
        + ")."
    )
    # `connection: close`: the rest of the body is never read, so the connection cannot be reused.
    return ApiError(408, message, "DEADLINE_EXCEEDED", headers={"connection": "close"})


class TimedReceive:
    """An ASGI `receive` that limits how slowly a request body may arrive (slowloris bodies).

    Each body chunk must come within `timeout` seconds of the previous one, and the whole body
    within `timeout + received / min_rate` seconds of the first read, so a client trickling a byte
    now and then is cut off too. A late chunk raises a 408 ApiError out of `receive()`, which the
    route's ordinary error handling turns into a response. Once the body is complete, messages
    pass through untimed (later calls only wait for the client to disconnect).
    """

    def __init__(
        self, receive: Receive, timeout: float = DEFAULT_BODY_TIMEOUT, min_rate: int = DEFAULT_BODY_MIN_RATE
    ) -> None:
        self._receive = receive
        self.timeout = timeout
        self.min_rate = min_rate
        self.complete = False
        self._started: float | None = None
        self._received = 0

    async def __call__(self) -> Message:
        if self.complete or self.timeout <= 0:
            return await self._receive()
        now = time.monotonic()
        if self._started is None:
            self._started = now
        wait = self.timeout
        if self.min_rate > 0:
            deadline = self._started + self.timeout + self._received / self.min_rate
            wait = min(wait, deadline - now)
        message: Message | None = None
        if wait > 0:
            with anyio.move_on_after(wait):
                message = await self._receive()
        if message is None:
            raise body_too_slow(self.timeout, self.min_rate)
        if message["type"] == "http.request":
            self._received += len(message.get("body", b""))
            if not message.get("more_body", False):
                self.complete = True
        else:
            self.complete = True  # http.disconnect: nothing more will come
        return message


# Bodies from this size on are read into one buffer. Below it, the pieces and their join are no
# memory to speak of, and a 1.4 MB body read into one cost up to 8 % more CPU (A/B, i2i c=8).
ONE_BUFFER_FROM = 8 * 1024 * 1024


async def read_body(request: Request, limit: int) -> bytes | bytearray:
    """The whole body; 413 as soon as it is known to exceed `limit`.

    A big body with a `Content-Length` lands in one buffer of that size as its pieces arrive (a
    bytearray): joining the pieces at the end held each 21 MB body twice, and the heap's holes
    of those joins were most of the gateway's memory with several such bodies in flight."""
    declared = request.headers.get("content-length")
    expected: int | None = None
    if declared is not None:
        try:
            expected = int(declared)
        except ValueError:
            raise ApiError(400, "Invalid Content-Length header.", "INVALID_ARGUMENT") from None
        if expected > limit:
            raise payload_too_large(limit)
    buffer = bytearray(expected) if expected is not None and expected >= ONE_BUFFER_FROM else None
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            if not chunk:  # Starlette ends every stream with b"": kept, it would cost a join
                continue
            if buffer is not None and size + len(chunk) <= len(buffer):
                buffer[size : size + len(chunk)] = chunk
                size += len(chunk)
                continue
            size += len(chunk)
            if size > limit:
                raise payload_too_large(limit)
            chunks.append(chunk)
    except ClientDisconnect:
        raise client_closed() from None
    if buffer is not None:
        if chunks or size != len(buffer):  # the server frames bodies by their Content-Length
            raise ApiError(400, "The request body does not match its Content-Length.", "INVALID_ARGUMENT")
        return buffer
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
