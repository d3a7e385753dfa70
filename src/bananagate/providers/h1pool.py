"""Keep-alive HTTP/1.1 connections for a channel's calls: a whole answer (`generateContent`) is
read straight into one buffer of its declared size; a stream (`?alt=sse`) is handed over piece by
piece as it arrives.

Why not aiohttp (which now carries only calls through a proxy, `providers.proxied`): for a 1.4 MB
answer it copies every byte three times (the loop's read buffer into a `bytes` per read, the
parser's pieces, their join) and runs its parser and stream reader in between. An
`asyncio.BufferedProtocol` lets the event loop `recv_into` the answer's final buffer, so the
kernel's copy is the only one; on this workload that halves the gateway's CPU for the upstream
read (`python -m bench.ab`, issue #9).

The answer's head is parsed by httptools (llhttp, the parser uvicorn uses), fed only the head's
bytes; a `Content-Length` body is then read by the protocol itself. Chunked and close-delimited
answers, and gzip/deflate, are handled too (through the parser, with a copy), so any upstream
works. Only what the Gemini calls need is here: POST, no redirects, no proxies, no pipelining.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import zlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

import httptools
import yarl

from bananagate.protocol.scan import Bytes

# Request heads and the first bytes after them land in a per-connection scratch buffer.
SCRATCH_BYTES = 64 * 1024
MAX_HEAD_BYTES = SCRATCH_BYTES
# A 200 answer larger than this is refused before it is read (a 4K image is ~30 MB of JSON).
MAX_ANSWER_BYTES = 512 * 1024 * 1024
# A stream's unread bytes past which reading pauses until its reader catches up.
STREAM_HIGH_WATER = 4 * 1024 * 1024
# A stream's reads (its events are parsed out of these, so bigger means fewer trips).
STREAM_READ_BYTES = 256 * 1024


class H1Error(ConnectionError):
    """The upstream broke HTTP/1.1 or hung up mid-answer; the message never holds the URL."""


@dataclass(slots=True)
class WholeAnswer:
    """An upstream's answer, read whole (or, past `limit`, its start)."""

    status: int
    headers: Mapping[str, str]  # names lower-cased; repeated headers joined with ", "
    body: bytes | bytearray


def _check_header(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise H1Error("a request header holds a line break")
    return value


def request_head(url: yarl.URL, headers: Mapping[str, str], length: int) -> bytes:
    """`POST` head for `url` (its path and query sent as they are encoded)."""
    host = url.raw_host or ""
    if ":" in host:
        host = f"[{host}]"
    if url.explicit_port is not None:
        host = f"{host}:{url.explicit_port}"
    lines = [f"POST {url.raw_path_qs} HTTP/1.1", f"host: {host}"]
    lines += [f"{_check_header(name)}: {_check_header(value)}" for name, value in headers.items()]
    lines.append(f"content-length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# Connection states.
_IDLE, _HEAD, _SIZED, _PARSED, _UNTIL_EOF, _DONE = range(6)


class _Connection(asyncio.BufferedProtocol):
    """One upstream connection; serves one call at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._scratch = bytearray(SCRATCH_BYTES)
        self._state = _IDLE
        self._filled = 0  # bytes of the head in `_scratch`
        self._body = bytearray()
        self._got = 0
        self._pieces: list[bytes] = []
        self._size = 0
        self._limit = 0
        self._reusable = False
        self._status = 0
        self._headers: dict[str, str] = {}
        self._keep_alive = False
        self._parser: httptools.HttpResponseParser | None = None
        self._waiter: asyncio.Future[WholeAnswer] | None = None
        self._last_activity = 0.0
        self._sent_pending = 0
        # Streaming (`stream=True` and a 200): body pieces wait here for `pieces()`.
        self._streaming = False
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._wake: asyncio.Future[None] | None = None
        self._ended = False
        self._error: H1Error | None = None
        self._paused = False
        self._stream_wanted = False
        self._stream_buffer = bytearray()  # made on the connection's first stream

    # --- asyncio protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._state == _SIZED and self._got < len(self._body):
            return memoryview(self._body)[self._got :]
        if self._state == _HEAD:
            return memoryview(self._scratch)[self._filled :]
        return memoryview(self._stream_buffer if self._streaming else self._scratch)

    def buffer_updated(self, nbytes: int) -> None:
        self._last_activity = self._loop.time()
        try:
            if self._state == _SIZED:
                self._got += nbytes
                if self._got >= len(self._body):
                    self._finish()
            elif self._state == _HEAD:
                self._filled += nbytes
                self._on_head_bytes(nbytes)
            elif self._state == _PARSED:
                self._feed(memoryview(self._stream_buffer if self._streaming else self._scratch)[:nbytes])
            elif self._state == _UNTIL_EOF:
                self._keep_piece(bytes((self._stream_buffer if self._streaming else self._scratch)[:nbytes]))
            else:
                raise H1Error("the upstream sent bytes no request asked for")
        except (H1Error, httptools.HttpParserError) as exc:
            self._fail(exc if isinstance(exc, H1Error) else H1Error("the upstream's answer is not HTTP/1.1"))

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._state == _UNTIL_EOF:
            self._finish()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(H1Error("the upstream closed the connection mid-answer"))
        if self._streaming and not self._ended and self._error is None:
            self._error = H1Error("the upstream closed the connection mid-stream")
            self._wake_reader()

    # --- httptools callbacks (head and parsed bodies) ---------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        known = self._headers.get(key)
        self._headers[key] = text if known is None else f"{known}, {text}"

    def on_headers_complete(self) -> None:
        # Asked now: llhttp forgets it once the message is complete (a `Content-Length: 0`
        # answer completes within the same feed as its head).
        assert self._parser is not None
        self._keep_alive = self._parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self._keep_piece(body)

    def on_message_complete(self) -> None:
        if self._state == _PARSED:
            self._finish()

    # --- one call -----------------------------------------------------------------------------

    async def call(
        self, head: bytes, body: Bytes, *, read_timeout: float, limit: int, stream: bool = False
    ) -> WholeAnswer:
        """Send one request and read its answer; error answers (not 200) only up to `limit`.

        With `stream`, a 200 is returned as soon as its head is read (its body empty): its body
        then comes from `pieces()`, as it arrives."""
        assert self.transport is not None
        if self.closed or self.transport.is_closing():
            raise H1Error("the upstream closed the connection")
        self._state, self._filled, self._got, self._size = _HEAD, 0, 0, 0
        self._pieces, self._headers, self._status, self._parser = [], {}, 0, None
        self._body, self._limit, self._reusable = bytearray(), limit, False
        self._stream_wanted, self._streaming, self._ended, self._error = stream, False, False, None
        self._queue.clear()
        self._queued, self._paused = 0, False
        waiter: asyncio.Future[WholeAnswer] = self._loop.create_future()
        self._waiter = waiter
        self._last_activity = self._loop.time()
        self.transport.write(head)
        if body:
            self.transport.write(body)
        self._sent_pending = self.transport.get_write_buffer_size()
        timer = self._loop.call_at(self._last_activity + read_timeout, self._check_silence, read_timeout)
        try:
            return await waiter
        finally:
            timer.cancel()
            self._waiter = None
            if not waiter.done() or waiter.cancelled() or waiter.exception() is not None:
                self.abort()  # cancelled or failed mid-call: the upstream is let go at once

    def _check_silence(self, read_timeout: float) -> None:
        """Fails the call after `read_timeout` seconds with neither a byte from the upstream nor
        any of the request leaving (a big body still uploading is not silence)."""
        waiter = self._waiter
        if waiter is None or waiter.done() or self.transport is None:
            return
        pending = self.transport.get_write_buffer_size()
        if pending != self._sent_pending:
            self._sent_pending = pending
            self._last_activity = self._loop.time()
        due = self._last_activity + read_timeout
        if self._loop.time() >= due:
            waiter.set_exception(TimeoutError())
            self.abort()
        else:
            self._loop.call_at(due, self._check_silence, read_timeout)

    def abort(self) -> None:
        self.closed = True
        self._state = _DONE
        if self.transport is not None:
            self.transport.abort()

    @property
    def reusable(self) -> bool:
        return self._reusable and not self.closed

    # --- reading an answer --------------------------------------------------------------------

    def _on_head_bytes(self, nbytes: int) -> None:
        search_from = max(0, self._filled - nbytes - 3)
        while True:
            end = self._scratch.find(b"\r\n\r\n", search_from, self._filled)
            if end < 0:
                if self._filled >= MAX_HEAD_BYTES:
                    raise H1Error("the upstream's answer head is too large")
                return
            head_end = end + 4
            parser = self._parser = httptools.HttpResponseParser(self)
            self._headers, self._keep_alive = {}, False
            parser.feed_data(memoryview(self._scratch)[:head_end])
            status = parser.get_status_code()
            if not 100 <= status < 200:
                break
            # An interim answer (100 Continue): drop it; the real one follows.
            rest = self._filled - head_end
            self._scratch[:rest] = self._scratch[head_end : self._filled]
            self._filled, search_from = rest, 0
        self._status = status
        leftover = memoryview(self._scratch)[head_end : self._filled]
        length = self._headers.get("content-length")
        if status == 200 and self._stream_wanted:
            self._start_stream(leftover, framed=length is not None or "transfer-encoding" in self._headers)
        elif status in (204, 304):
            self._start_sized(0, leftover)
        elif "chunked" in self._headers.get("transfer-encoding", "").lower():
            self._state = _PARSED  # llhttp unframes it; pieces are kept and joined
            if leftover:
                self._feed(leftover)
        elif length is not None:
            try:
                size = int(length)
            except ValueError:
                raise H1Error("the upstream's answer has a bad Content-Length") from None
            self._start_sized(size, leftover)
        else:
            self._state = _UNTIL_EOF
            if leftover:
                self._keep_piece(bytes(leftover))

    def _start_sized(self, length: int, leftover: memoryview) -> None:
        if length < 0:
            raise H1Error("the upstream's answer has a bad Content-Length")
        cap = MAX_ANSWER_BYTES if self._status == 200 else self._limit
        if self._status == 200 and length > cap:
            raise H1Error("the upstream's answer is too large")
        self._size = length
        self._body = bytearray(min(length, cap))
        self._state = _SIZED
        taken = min(len(leftover), len(self._body))
        self._body[:taken] = leftover[:taken]
        self._got = taken
        if len(leftover) > length:
            raise H1Error("the upstream sent more than its Content-Length")
        if self._got >= len(self._body):
            self._finish()

    def _feed(self, data: memoryview) -> None:
        assert self._parser is not None
        self._parser.feed_data(data)

    def _keep_piece(self, piece: bytes) -> None:
        if self._streaming:
            self._queue.append(piece)
            self._queued += len(piece)
            if self._queued > STREAM_HIGH_WATER and not self._paused and self.transport is not None:
                self._paused = True
                self.transport.pause_reading()  # the client reads slower than the upstream sends
            self._wake_reader()
            return
        self._pieces.append(piece)
        self._got += len(piece)
        cap = MAX_ANSWER_BYTES if self._status == 200 else self._limit
        if self._got > cap:
            if self._status == 200:
                raise H1Error("the upstream's answer is too large")
            self._finish(cut=True)

    def _finish(self, *, cut: bool = False) -> None:
        if self._streaming:
            state, self._state = self._state, _DONE
            self._ended = True
            sent = self.transport is None or self.transport.get_write_buffer_size() == 0
            self._reusable = state == _PARSED and sent and self._keep_alive
            self._wake_reader()
            return
        waiter = self._waiter
        state, self._state = self._state, _DONE
        if state == _SIZED:
            body: bytes | bytearray = self._body
            whole = self._got >= self._size
        else:
            body = self._pieces[0] if len(self._pieces) == 1 else b"".join(self._pieces)
            whole = not cut and state == _PARSED
        # An answer that came before the request was all sent (an early 413, say) leaves the
        # rest of the request unsent: the connection cannot carry another one.
        sent = self.transport is None or self.transport.get_write_buffer_size() == 0
        self._reusable = whole and sent and state != _UNTIL_EOF and self._keep_alive
        self._body, self._pieces = bytearray(), []
        if waiter is None or waiter.done():
            return
        try:
            body = _decoded(body, self._headers.get("content-encoding"))
        except H1Error as exc:
            waiter.set_exception(exc)
            return
        waiter.set_result(WholeAnswer(self._status, self._headers, body))

    def _fail(self, exc: H1Error) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        if self._streaming and self._error is None:
            self._error = exc
            self._wake_reader()
        self.abort()

    # --- a streamed answer ----------------------------------------------------------------------

    def _start_stream(self, leftover: memoryview, *, framed: bool) -> None:
        if not self._stream_buffer:
            self._stream_buffer = bytearray(STREAM_READ_BYTES)
        self._streaming = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(WholeAnswer(self._status, self._headers, b""))
        if framed:
            self._state = _PARSED  # llhttp unframes chunks (or counts a Content-Length)
            if leftover:
                self._feed(leftover)
        else:
            self._state = _UNTIL_EOF
            if leftover:
                self._keep_piece(bytes(leftover))

    def _wake_reader(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def pieces(self, read_timeout: float) -> AsyncIterator[bytes]:
        """The streamed body as it arrives; TimeoutError after `read_timeout` s of silence."""
        while True:
            while self._queue:
                piece = self._queue.popleft()
                self._queued -= len(piece)
                if self._paused and self._queued <= STREAM_HIGH_WATER // 2 and self.transport is not None:
                    self._paused = False
                    self.transport.resume_reading()
                yield piece
            if self._error is not None:
                raise self._error
            if self._ended:
                return
            self._wake = self._loop.create_future()
            try:
                async with asyncio.timeout(read_timeout):
                    await self._wake
            finally:
                self._wake = None

    @property
    def stream_ended(self) -> bool:
        return self._ended and not self._queue

    @property
    def streaming(self) -> bool:
        return self._streaming

    def end_stream(self) -> None:
        """Back to whole-answer reads; the stream's read buffer goes (64 idle connections would
        hold 16 MiB of them)."""
        self._streaming = False
        if self._stream_buffer:
            self._stream_buffer = bytearray()


def _decoded(body: bytes | bytearray, encoding: str | None) -> bytes | bytearray:
    """The body without its gzip/deflate content coding (bounded, against a decompression bomb)."""
    if not encoding or encoding.strip().lower() == "identity":
        return body
    name = encoding.strip().lower()
    if name in ("gzip", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif name == "deflate":
        wbits = zlib.MAX_WBITS if body[:1] == b"\x78" else -zlib.MAX_WBITS  # zlib-wrapped or raw
    else:
        raise H1Error(f"the upstream used a content coding not asked for ({name[:20]!r})")
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, MAX_ANSWER_BYTES)
    except zlib.error:
        raise H1Error("the upstream's compressed answer is corrupt") from None
    if inflater.unconsumed_tail:
        raise H1Error("the upstream's answer is too large")
    return out


class H1Pool:
    """Keep-alive connections to one origin (scheme, host, port), bound to the loop it runs in."""

    def __init__(
        self,
        *,
        connect_timeout: float,
        read_timeout: float,
        ssl_context: ssl.SSLContext | Callable[[], ssl.SSLContext],
        max_connections: int,
        keepalive_seconds: float,
    ) -> None:
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        # A context, or what makes one when the first https connection is made (building one
        # loads the trust store: a pool that only speaks plain HTTP never needs it).
        self._ssl = ssl_context
        self._keepalive = keepalive_seconds
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: dict[tuple[str, str, int], deque[_Connection]] = {}
        self._busy: set[_Connection] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self.closed = False

    async def post(
        self, url: yarl.URL, body: Bytes, headers: Mapping[str, str], *, limit: int
    ) -> WholeAnswer:
        """POST `body` as it is and read the answer whole (one not 200: its first `limit` bytes)."""
        origin, connection, answer = await self._exchange(url, body, headers, limit=limit, stream=False)
        self._release(origin, connection)
        return answer

    async def _exchange(
        self, url: yarl.URL, body: Bytes, headers: Mapping[str, str], *, limit: int, stream: bool
    ) -> tuple[tuple[str, str, int], _Connection, WholeAnswer]:
        """One request on a pooled connection, holding a slot until `_release` (given back here
        if the call fails)."""
        head = request_head(url, headers, len(body))
        async with asyncio.timeout(self._connect_timeout):
            await self._slots.acquire()
        origin = (url.scheme, url.raw_host or "", url.port or 0)
        try:
            connection = await self._connection(origin)
            self._busy.add(connection)
            try:
                answer = await connection.call(
                    head, body, read_timeout=self._read_timeout, limit=limit, stream=stream
                )
            except BaseException:
                self._busy.discard(connection)
                raise
        except BaseException:
            self._slots.release()
            raise
        return origin, connection, answer

    async def _connection(self, origin: tuple[str, str, int]) -> _Connection:
        loop = asyncio.get_running_loop()
        idle = self._idle.get(origin)
        now = loop.time()
        while idle:
            connection = idle.pop()  # the most recently used: the least likely to be timed out
            transport = connection.transport
            fresh = now - connection.idle_since < self._keepalive
            if fresh and not connection.closed and transport is not None and not transport.is_closing():
                return connection
            connection.abort()
        scheme, host, port = origin
        secure = scheme == "https"
        async with asyncio.timeout(self._connect_timeout):
            _, protocol = await loop.create_connection(
                lambda: _Connection(loop),
                host,
                port,
                ssl=self._tls() if secure else None,
                server_hostname=host if secure else None,
            )
        return protocol

    def _tls(self) -> ssl.SSLContext:
        if not isinstance(self._ssl, ssl.SSLContext):
            self._ssl = self._ssl()
        return self._ssl

    async def open_stream(
        self, url: yarl.URL, body: Bytes, headers: Mapping[str, str], *, limit: int
    ) -> StreamedAnswer:
        """POST `body` and return the answer once its head is read: a 200's body then comes from
        `StreamedAnswer.pieces()`; any other status comes read whole (its first `limit` bytes).
        The caller must `close()` it (in a `finally`)."""
        origin, connection, answer = await self._exchange(url, body, headers, limit=limit, stream=True)
        streamed = StreamedAnswer(self, origin, connection, answer, self._read_timeout)
        if answer.status != 200:
            streamed.close()  # read whole already: the connection goes back at once
        return streamed

    def _release(self, origin: tuple[str, str, int], connection: _Connection) -> None:
        """A call is over: its connection back to the pool (a stream only if read to its end)
        and its slot given back."""
        self._busy.discard(connection)
        try:
            if connection.stream_ended or not connection.streaming:
                connection.end_stream()
                self._put_back(origin, connection)
            else:
                connection.abort()  # left early: the upstream must stop working for nobody
        finally:
            self._slots.release()

    def _put_back(self, origin: tuple[str, str, int], connection: _Connection) -> None:
        if self.closed or not connection.reusable:
            connection.abort()
            return
        loop = asyncio.get_running_loop()
        connection.idle_since = loop.time()
        self._idle.setdefault(origin, deque()).append(connection)
        if self._sweeper is None:
            self._sweeper = loop.call_later(self._keepalive, self._sweep)

    def _sweep(self) -> None:
        """Closes connections idle for longer than the keep-alive time."""
        self._sweeper = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        left = False
        for idle in self._idle.values():
            while idle and (idle[0].closed or now - idle[0].idle_since >= self._keepalive):
                idle.popleft().abort()
            left = left or bool(idle)
        if left and not self.closed:
            self._sweeper = loop.call_later(self._keepalive, self._sweep)

    def close(self) -> None:
        self.closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for idle in self._idle.values():
            while idle:
                idle.pop().abort()
        for connection in list(self._busy):
            connection.abort()


class StreamedAnswer:
    """An answer whose 200 body is read as it arrives (`H1Pool.open_stream`)."""

    def __init__(
        self,
        pool: H1Pool,
        origin: tuple[str, str, int],
        connection: _Connection,
        answer: WholeAnswer,
        read_timeout: float,
    ) -> None:
        self._pool = pool
        self._origin = origin
        self._connection = connection
        self._read_timeout = read_timeout
        self.status = answer.status
        self.headers = answer.headers
        self.body = answer.body  # empty for a streamed 200
        self._closed = False

    def pieces(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive, in pieces of any size."""
        return self._connection.pieces(self._read_timeout)

    def close(self) -> None:
        """Back to the pool when the body was read to its end; the connection is dropped if not."""
        if not self._closed:
            self._closed = True
            self._pool._release(self._origin, self._connection)
