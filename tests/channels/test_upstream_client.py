"""The gateway→upstream HTTP client of Gemini-native channels (aiohttp), against a raw HTTP/1.1
server in the test's own loop: what goes up, what comes back, keep-alive, how each transport
failure is reported, and that a cancelled call hangs up on the upstream at once."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import gzip
import itertools
import logging
import subprocess
import sys
import time
import tracemalloc
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import orjson
import pytest
import uvloop

from bananagate import __version__
from bananagate.config import ChannelConfig
from bananagate.protocol.catalog import find_model
from bananagate.protocol.errors import ApiError
from bananagate.protocol.validation import parse_and_check
from bananagate.providers.base import Call, Method, Provider, UpstreamError, UpstreamTimeout
from bananagate.providers.factory import BuiltChannel, build_channel
from bananagate.providers.upstream_errors import UpstreamUnreachable
from bananagate.server.deadlines import bounded_by
from tests.channels.conftest import FLASH_25, simple_body
from tests.upstreams import FakeGoogle, gemini_answer, png

KEY = "AIzaSyTEST-raw-client-0123456789abcdef"
ANSWER = orjson.dumps(gemini_answer(FLASH_25, png((1, 2, 3)), text="served by raw"))

Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter
# Answers one request; False when the connection is finished.
Action = Callable[[Reader, Writer], Awaitable[bool]]


@dataclass
class Seen:
    head: bytes
    body: bytes

    @property
    def target(self) -> str:
        return self.head.split(b"\r\n", 1)[0].split(b" ")[1].decode()

    @property
    def headers(self) -> dict[str, str]:
        lines = self.head.decode("latin-1").split("\r\n")[1:]
        pairs = (line.split(":", 1) for line in lines)
        return {name.strip().lower(): value.strip() for name, value in pairs}


@dataclass
class RawUpstream:
    """Keep-alive HTTP/1.1 on raw streams; each request takes the next scripted action (else 200)."""

    script: list[Action] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    keep_bodies: bool = True  # False: bodies are read and dropped (a memory test's own upstream)
    hung_up: list[float] = field(default_factory=list)  # when a connection ended (monotonic)
    url: str = ""

    async def _serve(self, reader: Reader, writer: Writer) -> None:
        self.connections += 1
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n"))[:-4]
                length = int(Seen(head, b"").headers.get("content-length", "0"))
                if self.keep_bodies:
                    self.seen.append(Seen(head, await reader.readexactly(length)))
                else:
                    while length:
                        length -= len(await reader.read(min(length, 65536)))
                    self.seen.append(Seen(head, b""))
                action = self.script.pop(0) if self.script else reply(200, ANSWER)
                if not await action(reader, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.hung_up.append(time.monotonic())
            writer.close()

    async def wait_hung_up(self, count: int = 1, within: float = 1.0) -> float:
        """How long after now the `count`-th connection ended (fails after `within`)."""
        started = time.monotonic()
        while len(self.hung_up) < count:
            assert time.monotonic() - started < within, "the gateway kept the upstream connection open"
            await asyncio.sleep(0.01)
        return self.hung_up[count - 1] - started


def reply(status: int, body: bytes, headers: str = "", declared: int | None = None) -> Action:
    async def act(reader: Reader, writer: Writer) -> bool:
        length = len(body) if declared is None else declared
        writer.write(
            f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n"
            f"{headers}\r\n".encode()
            + body
        )
        await writer.drain()
        return declared is None

    return act


async def hold(reader: Reader, writer: Writer) -> bool:
    """Never answer; read until the gateway hangs up."""
    while await reader.read(65536):
        pass
    return False


async def garbage(reader: Reader, writer: Writer) -> bool:
    writer.write(b"this is not HTTP at all\r\n\r\n")
    await writer.drain()
    return False


def sse(*events: bytes, then_hold: bool = False) -> Action:
    """An event stream of these events; then the end, or silence until the gateway hangs up."""

    async def act(reader: Reader, writer: Writer) -> bool:
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        for event in events:
            frame = b"data: " + event + b"\r\n\r\n"
            writer.write(f"{len(frame):x}\r\n".encode() + frame + b"\r\n")
        if then_hold:
            await writer.drain()
            return await hold(reader, writer)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    return act


@contextlib.asynccontextmanager
async def serving(raw: RawUpstream) -> AsyncIterator[RawUpstream]:
    server = await asyncio.start_server(raw._serve, "127.0.0.1", 0)
    raw.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with server:
        yield raw
        server.close()


@pytest.fixture
async def upstream() -> AsyncIterator[RawUpstream]:
    async with serving(RawUpstream()) as raw:
        yield raw


def channel(url: str, *, auth: str = "query", read_timeout: float = 5.0) -> BuiltChannel:
    config = ChannelConfig.model_validate(
        {"name": "raw", "kind": "gemini", "base_url": url, "auth": auth, "keys": [KEY]}
        | {"read_timeout": read_timeout, "connect_timeout": 2.0}
    )
    return build_channel(config)


def call(body: bytes | None = None, method: Method = "generateContent") -> Call:
    model = find_model(FLASH_25)
    assert model is not None
    body = body or simple_body()
    return Call(model, FLASH_25, method, body, parse_and_check(body, model))


def provider(built: BuiltChannel) -> Provider:
    return built.providers[0]


def assert_no_secret(text: str) -> None:
    assert KEY not in text and "key=" not in text


# --- what goes up, what comes back ---------------------------------------------------------------


async def test_body_goes_up_and_the_answer_comes_back_byte_for_byte(upstream: RawUpstream) -> None:
    big = b"x" * (3 * 1024 * 1024)
    body = b'{"contents": [{"parts": [{"text": "hi"}]}], "pad": "' + big + b'"}'
    answer = b'{ "candidates" : [],\n "filler": "' + big[: 1400 * 1024] + b'" }'
    upstream.script.append(reply(200, answer))
    built = channel(upstream.url)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # e.g. aiohttp's ResourceWarning for big bytes bodies
            got = await provider(built).generate(call(body))
    finally:
        await built.aclose()
    assert upstream.seen[0].body == body
    assert got.body == answer


def in_pieces(body: bytes, sizes: list[int], *, chunked: bool, gzipped: bool = False) -> Action:
    """A 200 answer written in pieces of these sizes (cycled), each after a pause: as a socket
    delivers it, or as HTTP chunks (an empty chunk ends it)."""

    async def act(reader: Reader, writer: Writer) -> bool:
        data = gzip.compress(body) if gzipped else body
        framing = "transfer-encoding: chunked" if chunked else f"content-length: {len(data)}"
        encoding = "content-encoding: gzip\r\n" if gzipped else ""
        writer.write(
            f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{encoding}{framing}\r\n\r\n".encode()
        )
        at = 0
        for size in itertools.cycle(sizes):
            if at >= len(data):
                break
            piece = data[at : at + size]
            at += size
            writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked else piece)
            await writer.drain()
            await asyncio.sleep(0)
        if chunked:
            writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    return act


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("gzipped", [False, True])
@pytest.mark.parametrize("sizes", [[1 << 30], [1], [7, 65536, 3], [300_000], [4096, 1]])
async def test_an_answer_read_whole_is_the_same_however_it_arrives(
    upstream: RawUpstream, chunked: bool, gzipped: bool, sizes: list[int]
) -> None:
    answer = (
        b'{"candidates": [], "filler": "' + bytes(range(48, 58)) * (70_000 if sizes != [1] else 300) + b'"}'
    )
    upstream.script += [in_pieces(answer, sizes, chunked=chunked, gzipped=gzipped), reply(200, ANSWER)]
    built = channel(upstream.url)
    try:
        got = await provider(built).generate(call())
        again = await provider(built).generate(call())  # the connection went back to the pool intact
    finally:
        await built.aclose()
    assert got.body == answer
    assert again.body == ANSWER
    assert upstream.connections == 1


def test_a_big_body_is_not_copied_on_its_way_up() -> None:
    """On uvloop, as the gateway runs (asyncio's own transport copies what a write leaves unsent)."""
    body = b'{"contents": [], "pad": "' + b"x" * (16 * 1024 * 1024) + b'"}'

    async def peak_while_sending() -> int:
        async with serving(RawUpstream(keep_bodies=False)) as upstream:
            built = channel(upstream.url)
            try:
                await provider(built).generate(call())  # the session and its connection exist
                big = call()
                big.body = body  # only the bytes matter: a forwarding provider never reparses them
                tracemalloc.start()
                try:
                    await provider(built).generate(big)
                    return tracemalloc.get_traced_memory()[1]
                finally:
                    tracemalloc.stop()
            finally:
                await built.aclose()

    # A copy anywhere (aiohttp joining the body with the request head...) would show.
    assert uvloop.run(peak_while_sending()) < len(body) // 4


async def test_the_upstream_sees_only_these_headers(upstream: RawUpstream) -> None:
    upstream.script += [reply(200, ANSWER), sse(ANSWER)]
    built = channel(upstream.url)
    try:
        await provider(built).generate(call())
        events = [e async for e in provider(built).stream(call(method="streamGenerateContent"))]
        assert events == [ANSWER]
    finally:
        await built.aclose()
    plain, streamed = upstream.seen
    assert plain.target == f"/v1beta/models/{FLASH_25}:generateContent?key={KEY}"
    assert streamed.target == f"/v1beta/models/{FLASH_25}:streamGenerateContent?key={KEY}&alt=sse"
    for seen in upstream.seen:
        headers = seen.headers
        # What httpx sent before, less its redundant `connection: keep-alive`: no cookies, no extras.
        assert set(headers) == {
            "host", "user-agent", "accept", "accept-encoding", "content-type", "content-length",
        }  # fmt: skip
        assert headers["user-agent"] == f"bananagate/{__version__}"
        assert headers["content-type"] == "application/json"
        assert headers["accept-encoding"] == "gzip, deflate"


async def test_one_keep_alive_connection_serves_call_after_call(upstream: RawUpstream) -> None:
    built = channel(upstream.url, auth="goog")
    try:
        for _ in range(3):
            await provider(built).generate(call())
        # An error answer read whole leaves the connection reusable too.
        upstream.script.append(reply(503, b'{"error": {"code": 503, "message": "busy"}}'))
        with pytest.raises(UpstreamError):
            await provider(built).generate(call())
        await provider(built).generate(call())
        assert upstream.connections == 1 and not upstream.hung_up
    finally:
        await built.aclose()
    await upstream.wait_hung_up()  # closing the channel closes its pool


async def test_a_closed_channel_refuses_calls_as_unreachable(upstream: RawUpstream) -> None:
    built = channel(upstream.url)  # built outside any call: its session is made on first use
    await built.aclose()
    with pytest.raises(UpstreamUnreachable):
        await provider(built).generate(call())
    assert upstream.connections == 0


def test_a_channel_is_built_outside_an_event_loop() -> None:
    """Channels are built before the server's loop runs (aiohttp sessions need a running loop)."""
    built = channel("http://127.0.0.1:9")
    assert built.client is not None and len(built.providers) == 1


# The first loop's connection is left to the garbage collector (nothing can close it once its
# loop is gone): collected here, so its ResourceWarnings land in this test and are expected.
@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_channel_serves_a_new_loop_after_its_first_one_ended() -> None:
    """A harness restarting its loop (successive `asyncio.run`s) gets a fresh session: an aiohttp
    session cannot outlive the loop it was made in."""
    with FakeGoogle(keys=[KEY]) as google:
        built = channel(google.url, auth="goog")
        first = asyncio.run(provider(built).generate(call()))

        async def again_then_close() -> bytes:
            try:
                return (await provider(built).generate(call())).body
            finally:
                await built.aclose()

        assert b"served by google" in first.body and b"served by google" in asyncio.run(again_then_close())
        assert len(google.requests) == 2
    gc.collect()


# --- failures ------------------------------------------------------------------------------------


async def test_error_status_honours_retry_after_and_caps_what_it_reads(upstream: RawUpstream) -> None:
    huge = b'{"error": {"code": 429, "message": "slow down"' + b" " * (3 * 1024 * 1024) + b"}}"
    upstream.script.append(reply(429, huge, headers="retry-after: 7\r\n"))
    built = channel(upstream.url)
    try:
        with pytest.raises(UpstreamError) as caught:
            await provider(built).generate(call())
        assert caught.value.retryable and caught.value.retry_after == 7
        assert caught.value.error.code == 429
        # Only the first MB was read, so that connection could not be reused: a new one is opened.
        await upstream.wait_hung_up()
        await provider(built).generate(call())
        assert upstream.connections == 2
    finally:
        await built.aclose()


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        pytest.param(reply(200, ANSWER, declared=len(ANSWER) * 2), UpstreamUnreachable, id="cut-body"),
        pytest.param(reply(200, ANSWER[:200]), UpstreamUnreachable, id="truncated-json"),
        pytest.param(garbage, UpstreamUnreachable, id="not-http"),
        pytest.param(hold, UpstreamTimeout, id="silence"),
    ],
)
async def test_transport_failures_are_reported_without_the_key(
    upstream: RawUpstream, script: Action, expected: type[Exception], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    upstream.script.append(script)
    built = channel(upstream.url, read_timeout=0.3)
    try:
        with pytest.raises(expected) as caught:
            await provider(built).generate(call())
    finally:
        await built.aclose()
    assert_no_secret(str(caught.value))
    if isinstance(caught.value, UpstreamError):
        assert_no_secret(caught.value.error.message)
    assert_no_secret(caplog.text)


async def test_connection_refused_is_unreachable(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    built = channel(f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(UpstreamUnreachable) as caught:
            await provider(built).generate(call())
    finally:
        await built.aclose()
    assert_no_secret(str(caught.value))
    assert_no_secret(caplog.text)


async def test_an_error_event_before_the_first_event_is_an_error_answer(upstream: RawUpstream) -> None:
    error = orjson.dumps({"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}})
    upstream.script.append(sse(error, then_hold=True))
    built = channel(upstream.url)
    try:
        with pytest.raises(UpstreamError) as caught:
            await anext(aiter(provider(built).stream(call(method="streamGenerateContent"))))
        assert caught.value.error.code == 503 and caught.value.retryable
        await upstream.wait_hung_up()  # and the upstream is let go at once
    finally:
        await built.aclose()


# --- cancellation hangs up on the upstream at once ----------------------------------------------


async def test_a_call_cut_by_its_deadline_hangs_up_on_the_upstream(upstream: RawUpstream) -> None:
    upstream.script.append(hold)
    built = channel(upstream.url)
    try:
        with pytest.raises(ApiError) as caught, bounded_by(time.monotonic() + 0.3):
            await provider(built).generate(call())
        assert caught.value.code == 504
        assert await upstream.wait_hung_up(within=0.5) < 0.2
        await provider(built).generate(call())  # the pool is fine: a new connection serves
        assert upstream.connections == 2
    finally:
        await built.aclose()


async def test_a_stream_left_early_hangs_up_on_the_upstream(upstream: RawUpstream) -> None:
    first = orjson.dumps({"candidates": [{"content": {"parts": [{"text": "drawing"}]}}]})
    upstream.script += [sse(first, then_hold=True), sse(first, then_hold=True)]
    built = channel(upstream.url)
    try:
        # The client goes away after the first event: the generator is closed.
        events = provider(built).stream(call(method="streamGenerateContent"))
        assert await anext(aiter(events)) == first
        await events.aclose()  # type: ignore[attr-defined]
        assert await upstream.wait_hung_up(within=0.5) < 0.2
        # The deadline passes while waiting for the second event (each step is bounded).
        events = aiter(provider(built).stream(call(method="streamGenerateContent")))
        assert await anext(events) == first
        with pytest.raises(ApiError), bounded_by(time.monotonic() + 0.2):
            await anext(events)
        assert await upstream.wait_hung_up(2, within=0.5) < 0.2
    finally:
        await built.aclose()


# --- proxies --------------------------------------------------------------------------------------


async def test_a_proxy_from_the_environment_carries_whole_answer_calls(
    upstream: RawUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The buffered pool speaks to origins only: with HTTP(S)_PROXY set for the channel's host,
    calls go through aiohttp and the proxy (here the raw upstream, which sees the full URL)."""
    for name in ("NO_PROXY", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", upstream.url)
    built = channel("http://upstream.example.test")
    try:
        got = await provider(built).generate(call())
    finally:
        await built.aclose()
    assert got.body == ANSWER
    assert upstream.seen[0].target.startswith("http://upstream.example.test/v1beta/models/")


async def test_a_proxy_carries_streams_too_and_a_gateway_without_one_never_loads_aiohttp(
    upstream: RawUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("NO_PROXY", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", upstream.url)
    upstream.script.append(sse(ANSWER, ANSWER))
    built = channel("http://upstream.example.test")
    try:
        events = [e async for e in provider(built).stream(call(method="streamGenerateContent"))]
    finally:
        await built.aclose()
    assert events == [ANSWER, ANSWER]
    assert upstream.seen[0].target.startswith("http://upstream.example.test/v1beta/models/")
    # The server's own modules leave aiohttp alone (it is ~9 MB of memory).
    probe = "import sys, bananagate.cli.serve, bananagate.server.app; print('aiohttp' in sys.modules)"
    env = {"PATH": "/usr/bin:/bin"}
    assert (
        subprocess.run([sys.executable, "-c", probe], capture_output=True, env=env, check=True).stdout
        == b"False\n"
    )
