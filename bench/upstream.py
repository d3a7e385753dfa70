"""A fast fake Gemini upstream: answers every `generateContent` with the same image response from
memory and every `streamGenerateContent` with the same SSE events, over keep-alive HTTP/1.1.

It is a bare `asyncio.Protocol` (on uvloop when importable) that parses just enough HTTP to find
where a request ends, discards the request body as it arrives, and writes pre-built bytes. Run it
as its own process so it never shares a GIL with a gateway or a load generator:

    python -m bench.upstream --answer answer.json --stream answer.sse [--port 0] [--delay 0]

It prints `READY <port> <loop>` on stdout once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import cast

from bench.payloads import split_sse

MAX_HEAD = 64 * 1024
JSON_TYPE = b"application/json; charset=UTF-8"


class Answers:
    """The pre-built responses (status line, headers and body), shared by every connection."""

    def __init__(self, answer: bytes, stream: bytes) -> None:
        self.json_head = (
            b"HTTP/1.1 200 OK\r\ncontent-type: "
            + JSON_TYPE
            + b"\r\ncontent-length: "
            + str(len(answer)).encode()
            + b"\r\n\r\n"
        )
        self.json_body = answer
        self.sse_head = (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        # One HTTP chunk per SSE event, as a server flushing each event would send them.
        self.sse_chunks = [b"%x\r\n" % len(frame) + frame + b"\r\n" for frame in split_sse(stream)]
        self.sse_chunks.append(b"0\r\n\r\n")
        health = b'{"status":"ok"}'
        self.health = (
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(health)).encode()
            + b"\r\n\r\n"
            + health
        )
        self.not_found = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
        self.bad = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class UpstreamProtocol(asyncio.Protocol):
    """One connection. States: reading a head, skipping a sized body, or skipping a chunked body."""

    def __init__(self, answers: Answers, delay: float) -> None:
        self.answers = answers
        self.delay = delay
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.state = "head"
        self.remaining = 0  # body bytes still to skip (sized body or current chunk, with its CRLF)
        self.request: tuple[bytes, bytes, bool] = (b"", b"", True)  # method, target, keep-alive

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport is not an `asyncio.Transport` subclass, but has its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self.state in ("body", "chunk-data") and not self.buffer:
                # The common case for big bodies: skip straight from the incoming data, no copy.
                take = min(self.remaining, len(view))
                view = view[take:]
                self.remaining -= take
                if self.remaining == 0:
                    if self.state == "body":
                        self._request_done()
                    else:
                        self.state = "chunk-size"
                continue
            self.buffer += view
            view = memoryview(b"")
            self._drain_buffer()

    def _drain_buffer(self) -> None:
        while self.buffer and self.transport is not None:
            if self.state == "head":
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buffer) > MAX_HEAD:
                        self._fail()
                    return
                head = bytes(self.buffer[:end])
                del self.buffer[: end + 4]
                self._start_request(head)
            elif self.state in ("body", "chunk-data"):
                take = min(self.remaining, len(self.buffer))
                del self.buffer[:take]
                self.remaining -= take
                if self.remaining:
                    return
                if self.state == "body":
                    self._request_done()
                else:
                    self.state = "chunk-size"
            elif self.state in ("chunk-size", "trailer"):
                end = self.buffer.find(b"\r\n")
                if end < 0:
                    return
                line = bytes(self.buffer[:end])
                del self.buffer[: end + 2]
                if self.state == "trailer":
                    if not line:
                        self._request_done()
                    continue
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    self._fail()
                    return
                if size == 0:
                    self.state = "trailer"
                else:
                    self.state = "chunk-data"
                    self.remaining = size + 2  # the chunk and its CRLF

    def _start_request(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            self._fail()
            return
        method, target, version = parts
        length = 0
        chunked = False
        keep_alive = version == b"HTTP/1.1"
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value.strip() or b"0")
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"expect" and value.strip().lower() == b"100-continue" and self.transport:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            elif name == b"connection":
                token = value.strip().lower()
                keep_alive = token != b"close" and (keep_alive or token == b"keep-alive")
        self.request = (method, target, keep_alive)
        if chunked:
            self.state = "chunk-size"
        elif length:
            self.state = "body"
            self.remaining = length
        else:
            self._request_done()

    def _request_done(self) -> None:
        self.state = "head"
        method, target, keep_alive = self.request
        if self.delay > 0:
            asyncio.get_running_loop().call_later(self.delay, self._respond, method, target, keep_alive)
        else:
            self._respond(method, target, keep_alive)

    def _respond(self, method: bytes, target: bytes, keep_alive: bool) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        answers = self.answers
        path = target.split(b"?", 1)[0]
        if method == b"POST" and path.endswith(b":streamGenerateContent"):
            transport.write(answers.sse_head)
            for chunk in answers.sse_chunks:
                transport.write(chunk)
        elif method == b"POST":
            transport.write(answers.json_head)
            transport.write(answers.json_body)
        elif method in (b"GET", b"HEAD") and path in (b"/healthz", b"/"):
            transport.write(answers.health)
        else:
            transport.write(answers.not_found)
        if not keep_alive:
            transport.close()

    def _fail(self) -> None:
        if self.transport is not None:
            self.transport.write(self.answers.bad)
            self.transport.close()
            self.transport = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


def install_fast_loop() -> str:
    """Use uvloop when it is importable; the name of the loop in use."""
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


async def serve(answers: Answers, host: str, port: int, delay: float, loop_name: str) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: UpstreamProtocol(answers, delay), host, port, backlog=1024, reuse_address=True
    )
    bound = server.sockets[0].getsockname()[1]
    print(f"READY {bound} {loop_name}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.upstream", description=__doc__.splitlines()[0])
    parser.add_argument("--answer", type=Path, required=True, help="body of generateContent answers")
    parser.add_argument("--stream", type=Path, required=True, help="SSE body of streamGenerateContent")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds to wait before each answer")
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the fake upstream only listens on loopback")
    answers = Answers(args.answer.read_bytes(), args.stream.read_bytes())
    loop_name = install_fast_loop()
    asyncio.run(serve(answers, args.host, args.port, args.delay, loop_name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
