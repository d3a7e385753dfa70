"""The buffered HTTP/1.1 pool that reads whole upstream answers (providers/h1pool.py): framing
however the bytes arrive, keep-alive, caps, timeouts, and that the answer is not copied."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import ipaddress
import itertools
import ssl
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import uvloop
import yarl
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bananagate.providers.h1pool import (
    MAX_HEAD_BYTES,
    STREAM_HIGH_WATER,
    STREAM_READ_BYTES,
    H1Error,
    H1Pool,
    WholeAnswer,
    request_head,
)
from bananagate.providers.http import _tls_context

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head, await reader.readexactly(length)


@contextlib.asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[yarl.URL]:
    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(guarded, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield yarl.URL(f"http://127.0.0.1:{port}/v1beta/models/m:generateContent?key=k")
    finally:
        srv.close()


def pool(*, read_timeout: float = 5.0, keepalive: float = 30.0) -> H1Pool:
    return H1Pool(
        connect_timeout=2.0,
        read_timeout=read_timeout,
        ssl_context=ssl.create_default_context(),
        max_connections=10,
        keepalive_seconds=keepalive,
    )


def scripted(*answers: list[bytes], pause: float = 0.0) -> tuple[Handler, list[int]]:
    """A handler that answers successive requests on one connection with these answers, each
    written in the given pieces (the connection closes after the last). Counts connections."""
    script = list(answers)
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        while script:
            await read_request(reader)
            for piece in script.pop(0):
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(pause)

    return handle, connections


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


def framed(body: bytes, framing: str, *, interim: bool, status: int = 200) -> bytes:
    head = f"HTTP/1.1 {status} OK\r\ncontent-type: application/json\r\n"
    if framing == "length":
        wire = f"{head}content-length: {len(body)}\r\n\r\n".encode() + body
    elif framing == "chunked":
        chunks = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in split(body, [7, 100, 5000]) if p)
        wire = f"{head}transfer-encoding: chunked\r\n\r\n".encode() + chunks + b"0\r\n\r\n"
    else:  # delimited by the close
        wire = f"{head}connection: close\r\n\r\n".encode() + body
    return (b"HTTP/1.1 100 Continue\r\n\r\n" if interim else b"") + wire


# --- framing, however the bytes arrive (property) -----------------------------------------------


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.binary(min_size=0, max_size=20_000),
    framing=st.sampled_from(["length", "chunked", "close"]),
    interim=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=30_000), max_size=8),
)
def test_any_framing_in_any_pieces_gives_the_same_body(
    body: bytes, framing: str, interim: bool, cuts: list[int]
) -> None:
    wire = framed(body, framing, interim=interim)

    async def run() -> tuple[WholeAnswer, WholeAnswer | None, int]:
        again = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"
        # A close-delimited answer ends with the connection: nothing follows it.
        follow = [] if framing == "close" else [[again]]
        handler, connections = scripted(split(wire, cuts), *follow)
        async with server(handler) as url:
            p = pool()
            try:
                first = await p.post(url, b"{}", {}, limit=1 << 20)
                second = await p.post(url, b"{}", {}, limit=1 << 20) if framing != "close" else None
            finally:
                p.close()
        return first, second, len(connections)

    first, second, connections = uvloop.run(run())
    assert first.status == 200 and bytes(first.body) == body
    assert first.headers["content-type"] == "application/json"
    if second is not None:  # the connection went back to the pool and served again
        assert bytes(second.body) == b"{}" and connections == 1


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate"])
async def test_compressed_answers_are_decoded(encoding: str) -> None:
    body = b'{"candidates": [], "pad": "' + b"ab" * 50_000 + b'"}'
    if encoding == "gzip":
        data = gzip.compress(body)
    elif encoding == "deflate":
        data = zlib.compress(body)
    else:
        squeezer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        data = squeezer.compress(body) + squeezer.flush()
    name = "gzip" if encoding == "gzip" else "deflate"
    wire = f"HTTP/1.1 200 OK\r\ncontent-encoding: {name}\r\ncontent-length: {len(data)}\r\n\r\n".encode()
    handler, _ = scripted([wire + data])
    async with server(handler) as url:
        p = pool()
        try:
            got = await p.post(url, b"{}", {}, limit=1 << 20)
        finally:
            p.close()
    assert bytes(got.body) == body


async def test_a_compression_bomb_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bananagate.providers.h1pool.MAX_ANSWER_BYTES", 1 << 20)
    data = gzip.compress(b"\0" * (8 << 20))
    wire = f"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: {len(data)}\r\n\r\n".encode()
    handler, _ = scripted([wire + data])
    async with server(handler) as url:
        p = pool()
        try:
            with pytest.raises(H1Error, match="too large"):
                await p.post(url, b"{}", {}, limit=1 << 20)
        finally:
            p.close()


# --- what goes up -------------------------------------------------------------------------------


def test_the_request_head_is_the_url_as_encoded_and_the_headers_given() -> None:
    url = yarl.URL("https://example.test:8443/v1beta/models/a%2Fb:generateContent?key=x%20y", encoded=True)
    head = request_head(url, {"x-goog-api-key": "k"}, 12)
    assert head == (
        b"POST /v1beta/models/a%2Fb:generateContent?key=x%20y HTTP/1.1\r\nhost: example.test:8443\r\n"
        b"x-goog-api-key: k\r\ncontent-length: 12\r\n\r\n"
    )
    assert b"host: [::1]\r\n" in request_head(yarl.URL("http://[::1]/x"), {}, 0)


@pytest.mark.parametrize("value", ["k\r\nx-evil: 1", "k\nx", "k\r"])
def test_a_header_with_a_line_break_is_never_sent(value: str) -> None:
    with pytest.raises(H1Error):
        request_head(yarl.URL("http://h/x"), {"authorization": value}, 0)


async def test_the_body_goes_up_byte_for_byte_and_is_not_copied() -> None:
    body = b'{"pad": "' + b"x" * (8 << 20) + b'"}'
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append((await read_request(reader))[1])
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
        await writer.drain()

    async with server(handle) as url:
        p = pool()
        try:
            assert (await p.post(url, body, {}, limit=1 << 20)).status == 200
        finally:
            p.close()
    assert seen == [body]


# --- the answer lands in one buffer --------------------------------------------------------------


def test_a_big_answer_is_read_into_one_buffer() -> None:
    """The answer's bytes are allocated once (its buffer); aiohttp held two to three times it."""
    body = b'{"candidates": [], "pad": "' + b"y" * (6 << 20) + b'"}'
    wire = f"HTTP/1.1 200 OK\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body

    async def run() -> tuple[WholeAnswer, int]:
        # The server's copy of `wire` and its writes happen before tracing starts.
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(wire)
            await writer.drain()

        async with server(handle) as url:
            p = pool()
            try:
                tracemalloc.start()
                answer = await p.post(url, b"{}", {}, limit=1 << 20)
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
            finally:
                p.close()
        return answer, peak

    answer, peak = uvloop.run(run())
    assert isinstance(answer.body, bytearray) and answer.body == body
    # One buffer of the answer's size, and small change (a copy anywhere would double it).
    assert len(body) <= peak < len(body) * 1.25


# --- keep-alive and caps --------------------------------------------------------------------------


async def test_an_error_answer_is_read_to_its_cap_and_its_connection_dropped() -> None:
    big = b'{"error": {"code": 429}, "pad": "' + b" " * 100_000 + b'"}'
    error = f"HTTP/1.1 429 Too Many\r\nretry-after: 7\r\ncontent-length: {len(big)}\r\n\r\n".encode() + big
    small = b"HTTP/1.1 503 Busy\r\ncontent-length: 2\r\n\r\n{}"
    ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"
    handler, connections = scripted([small], [error], [ok])
    async with server(handler) as url:
        p = pool()
        try:
            assert (await p.post(url, b"{}", {}, limit=1000)).status == 503
            capped = await p.post(url, b"{}", {}, limit=1000)  # same connection: 503 was read whole
            assert capped.status == 429 and bytes(capped.body) == big[:1000]
            assert capped.headers["retry-after"] == "7"
            # Its unread rest would garble the next answer: that connection was dropped.
            assert bytes((await p.post(url, b"{}", {}, limit=1000)).body) == b"{}"
        finally:
            p.close()
    assert len(connections) == 2


async def test_a_200_beyond_the_answer_cap_is_refused_before_it_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("bananagate.providers.h1pool.MAX_ANSWER_BYTES", 1000)
    handler, _ = scripted([b"HTTP/1.1 200 OK\r\ncontent-length: 5000000000\r\n\r\n{"])
    async with server(handler) as url:
        p = pool()
        try:
            with pytest.raises(H1Error, match="too large"):
                await p.post(url, b"{}", {}, limit=1000)
        finally:
            p.close()


async def test_repeated_headers_are_joined_and_names_lower_cased() -> None:
    wire = b"HTTP/1.1 200 OK\r\nX-Thing: a\r\nx-thing: b\r\nContent-Length: 2\r\n\r\n{}"
    handler, _ = scripted([wire])
    async with server(handler) as url:
        p = pool()
        try:
            got = await p.post(url, b"{}", {}, limit=10)
        finally:
            p.close()
    assert got.headers["x-thing"] == "a, b" and got.headers["content-length"] == "2"


async def test_204_has_no_body_and_keeps_the_connection() -> None:
    handler, connections = scripted(
        [b"HTTP/1.1 204 No Content\r\n\r\n"], [b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"]
    )
    async with server(handler) as url:
        p = pool()
        try:
            assert (await p.post(url, b"{}", {}, limit=10)).status == 204
            assert bytes((await p.post(url, b"{}", {}, limit=10)).body) == b""
        finally:
            p.close()
    assert len(connections) == 1


async def test_an_idle_connection_past_its_keepalive_is_not_reused() -> None:
    ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"
    handler, connections = scripted([ok], [ok])
    async with server(handler) as url:
        p = pool(keepalive=0.05)
        try:
            await p.post(url, b"{}", {}, limit=10)
            await asyncio.sleep(0.15)  # past the keep-alive time: the sweeper closed it
            await p.post(url, b"{}", {}, limit=10)
        finally:
            p.close()
    assert len(connections) == 2


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{}", id="cut-body"),
        pytest.param(b"not http at all\r\n\r\n", id="garbage"),
        pytest.param(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n", id="bad-length"),
        pytest.param(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab", id="cut-chunk"),
        pytest.param(b"HTTP/1.1 200 OK\r\nx: " + b"a" * MAX_HEAD_BYTES, id="huge-head"),
    ],
)
async def test_broken_answers_are_errors_and_their_connection_is_dropped(wire: bytes) -> None:
    handler, _ = scripted([wire])  # then the connection closes
    async with server(handler) as url:
        p = pool()
        try:
            with pytest.raises(H1Error):
                await p.post(url, b"{}", {}, limit=10)
        finally:
            p.close()


# --- time -----------------------------------------------------------------------------------------


async def test_silence_times_out_and_hangs_up() -> None:
    closed = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()  # until the client hangs up
        closed.set()

    async with server(handle) as url:
        p = pool(read_timeout=0.2)
        try:
            with pytest.raises(TimeoutError):
                await p.post(url, b"{}", {}, limit=10)
            await asyncio.wait_for(closed.wait(), 1.0)
        finally:
            p.close()


async def test_a_slow_but_steady_answer_is_not_silence() -> None:
    body = b"0123456789" * 10
    wire = f"HTTP/1.1 200 OK\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body
    handler, _ = scripted([wire[i : i + 20] for i in range(0, len(wire), 20)], pause=0.05)
    async with server(handler) as url:
        p = pool(read_timeout=0.15)  # the whole answer takes ~0.4 s, no gap reaches 0.15 s
        try:
            assert bytes((await p.post(url, b"{}", {}, limit=10)).body) == body
        finally:
            p.close()


async def test_a_cancelled_call_hangs_up_and_the_pool_goes_on() -> None:
    hung_up = asyncio.Event()
    ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"
    calls = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal calls
        calls += 1
        await read_request(reader)
        if calls == 1:
            await reader.read()
            hung_up.set()
            return
        writer.write(ok)
        await writer.drain()

    async with server(handle) as url:
        p = pool()
        try:
            task = asyncio.create_task(p.post(url, b"{}", {}, limit=10))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.wait_for(hung_up.wait(), 1.0)
            assert bytes((await p.post(url, b"{}", {}, limit=10)).body) == b"{}"
        finally:
            p.close()


# --- TLS ------------------------------------------------------------------------------------------


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_answers_over_tls_land_in_one_buffer_too(tmp_path: Path, loop: str) -> None:
    cert, key = _self_signed(tmp_path)
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert, key)
    made: list[ssl.SSLContext] = []

    def client_side() -> ssl.SSLContext:  # made with the first https connection, once
        made.append(ssl.create_default_context(cafile=str(cert)))
        return made[-1]

    body = b'{"candidates": [], "pad": "' + b"z" * 3_000_000 + b'"}'
    wire = f"HTTP/1.1 200 OK\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body

    async def run() -> list[bytes]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                for _ in range(2):
                    await read_request(reader)
                    writer.write(wire)
                    await writer.drain()
            finally:
                writer.close()

        srv = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_side)
        port = srv.sockets[0].getsockname()[1]
        url = yarl.URL(f"https://127.0.0.1:{port}/v1beta/models/m:generateContent")
        p = H1Pool(
            connect_timeout=5.0,
            read_timeout=5.0,
            ssl_context=client_side,
            max_connections=2,
            keepalive_seconds=30.0,
        )
        try:
            return [bytes((await p.post(url, b"{}", {}, limit=10)).body) for _ in range(2)]
        finally:
            p.close()
            srv.close()

    got = uvloop.run(run()) if loop == "uvloop" else asyncio.run(run())
    assert got == [body, body]
    assert len(made) == 1


def test_channels_trust_ssl_cert_file_else_certifi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, _ = _self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    _tls_context.cache_clear()
    try:
        subjects = [dict(item[0] for item in ca["subject"]) for ca in _tls_context().get_ca_certs()]
        assert subjects == [{"commonName": "127.0.0.1"}]
        monkeypatch.delenv("SSL_CERT_FILE")
        monkeypatch.delenv("SSL_CERT_DIR", raising=False)
        _tls_context.cache_clear()
        assert len(_tls_context().get_ca_certs()) > 50  # certifi's bundle
    finally:
        _tls_context.cache_clear()


async def test_an_answer_before_the_request_was_sent_drops_the_connection() -> None:
    """An upstream that refuses a big body before reading it (an early 413): the unsent rest of
    the request must not become the start of the next one on that connection."""
    body = b'{"pad": "' + b"x" * (32 << 20) + b'"}'
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        head = await reader.readuntil(b"\r\n\r\n")
        if b"content-length: 2\r\n" in head:
            await reader.readexactly(2)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
        else:  # answer at once, read nothing of the body, keep the connection open
            writer.write(b"HTTP/1.1 413 Too Large\r\ncontent-length: 2\r\n\r\n{}")
        await writer.drain()
        await asyncio.sleep(1.0)

    async with server(handle) as url:
        p = pool()
        try:
            assert (await p.post(url, body, {}, limit=10)).status == 413
            assert bytes((await p.post(url, b"{}", {}, limit=10)).body) == b"{}"
        finally:
            p.close()
    assert connections == 2


# --- streamed answers -----------------------------------------------------------------------------


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def test_a_stream_hands_over_each_piece_as_it_arrives_and_then_serves_on() -> None:
    go_on = asyncio.Event()
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunk(b"data: one\r\n\r\n"))
        await writer.drain()
        await go_on.wait()  # the second piece only after the client has the first
        writer.write(chunk(b"data: two\r\n\r\n") + b"0\r\n\r\n")
        await writer.drain()
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
        await writer.drain()

    async with server(handle) as url:
        p = pool()
        try:
            answer = await p.open_stream(url, b"{}", {}, limit=10)
            got = []
            try:
                assert answer.status == 200
                async for piece in answer.pieces():
                    got.append(piece)
                    go_on.set()
            finally:
                answer.close()
            assert b"".join(got) == b"data: one\r\n\r\ndata: two\r\n\r\n" and got[0] == b"data: one\r\n\r\n"
            assert bytes((await p.post(url, b"{}", {}, limit=10)).body) == b"{}"  # same connection
        finally:
            p.close()
    assert connections == 1


async def test_a_stream_left_early_hangs_up_and_an_error_status_comes_whole() -> None:
    hung_up = asyncio.Event()
    calls = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal calls
        calls += 1
        await read_request(reader)
        if calls == 1:
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunk(b"data: 1\r\n\r\n"))
            await writer.drain()
            await reader.read()
            hung_up.set()
            return
        writer.write(b'HTTP/1.1 503 Busy\r\ncontent-length: 9\r\n\r\n{"e": 1}\n')
        await writer.drain()
        await asyncio.sleep(0.5)

    async with server(handle) as url:
        p = pool()
        try:
            answer = await p.open_stream(url, b"{}", {}, limit=100)
            async for _ in answer.pieces():
                break
            answer.close()
            await asyncio.wait_for(hung_up.wait(), 1.0)
            error = await p.open_stream(url, b"{}", {}, limit=100)
            assert error.status == 503 and bytes(error.body) == b'{"e": 1}\n'
            error.close()
        finally:
            p.close()


async def test_a_silent_stream_times_out() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunk(b"data: 1\r\n\r\n"))
        await writer.drain()
        await reader.read()

    async with server(handle) as url:
        p = pool(read_timeout=0.2)
        try:
            answer = await p.open_stream(url, b"{}", {}, limit=10)
            pieces = answer.pieces()
            try:
                assert await anext(pieces) == b"data: 1\r\n\r\n"
                with pytest.raises(TimeoutError):
                    await anext(pieces)
            finally:
                answer.close()
        finally:
            p.close()


async def test_a_fast_stream_to_a_slow_reader_is_held_back_not_buffered() -> None:
    """The upstream is paused while the reader lags, so unread bytes stay bounded."""
    piece = b"data: " + b"x" * 1_000_000 + b"\r\n\r\n"
    total = 40

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(total):
            writer.write(chunk(piece))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async with server(handle) as url:
        p = pool()
        try:
            answer = await p.open_stream(url, b"{}", {}, limit=10)
            received, most_queued = 0, 0
            try:
                async for data in answer.pieces():
                    received += len(data)
                    most_queued = max(most_queued, answer._connection._queued)
                    await asyncio.sleep(0.002)  # a slow client
            finally:
                answer.close()
        finally:
            p.close()
    assert received == total * len(piece)
    assert most_queued <= STREAM_HIGH_WATER + 2 * STREAM_READ_BYTES
