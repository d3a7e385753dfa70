"""What the HTTP providers share: the pooled clients, the auth styles, transport failures.

Gemini-native channels read whole answers (`generateContent`) through `providers.h1pool`, which
lands each answer in one buffer, and streams (and any call through a proxy) through aiohttp (a
keep-alive POST returning a 1.4 MB answer costs about a third of the CPU it does with httpx, issue
#9); `openai-images` channels keep their httpx client (multipart uploads and URL downloads, off the
hot path).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
import sys
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import aiohttp
import httpx
import yarl
from aiohttp.abc import AbstractStreamWriter
from aiohttp.helpers import get_env_proxy_for_url

from bananagate import __version__
from bananagate.config import AuthStyle
from bananagate.providers.base import ProviderError, UpstreamTimeout
from bananagate.providers.h1pool import H1Error, H1Pool, StreamedAnswer, WholeAnswer
from bananagate.providers.upstream_errors import unreachable

# httpx logs every request URL at INFO, and with `?key=` auth the URL holds the upstream key.
# Upstream keys must never reach a log line, so these loggers only speak up for warnings.
for _name in ("httpx", "httpcore", "aiohttp"):
    logging.getLogger(_name).setLevel(logging.WARNING)

# Error bodies are read only this far: enough for any real envelope, bounded for a rogue one.
MAX_ERROR_BODY = 1024 * 1024
USER_AGENT = f"bananagate/{__version__}"
# What every whole-answer call sends besides its own headers (aiohttp's defaults, as before).
BASE_HEADERS = {"user-agent": USER_AGENT, "accept": "*/*", "accept-encoding": "gzip, deflate"}
MAX_CONNECTIONS = 100
KEEPALIVE_SECONDS = 30.0


def make_client(*, connect_timeout: float, read_timeout: float) -> httpx.AsyncClient:
    """An httpx keep-alive pool (the `openai-images` channels). `read_timeout` also bounds writes."""
    timeout = httpx.Timeout(read_timeout, connect=connect_timeout, pool=connect_timeout)
    limits = httpx.Limits(
        max_connections=MAX_CONNECTIONS, max_keepalive_connections=20, keepalive_expiry=KEEPALIVE_SECONDS
    )
    headers = {"user-agent": USER_AGENT}
    return httpx.AsyncClient(
        timeout=timeout, limits=limits, headers=headers, http2=False, follow_redirects=False
    )


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # The trust store httpx used before: certifi's bundle, or SSL_CERT_FILE / SSL_CERT_DIR. (aiohttp
    # would use the system store, which a slim container may not have.)
    return httpx.create_ssl_context()


class ChannelSession:
    """One channel's keep-alive pool: an aiohttp `ClientSession`, made on first use (aiohttp binds a
    session to the running loop, and channels are built before the server's loop runs)."""

    def __init__(self, channel: str, *, base_url: str, connect_timeout: float, read_timeout: float) -> None:
        self.channel = channel
        self._base_url = base_url
        # `connect` bounds getting a connection at all (a pool slot, DNS, TCP, TLS), as httpx's
        # pool and connect timeouts did; `sock_read` is the longest silence from the upstream.
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._session: aiohttp.ClientSession | None = None
        self._pool: H1Pool | None = None
        self._pool_loop: asyncio.AbstractEventLoop | None = None
        self._proxy: yarl.URL | None = None
        self._proxy_auth: aiohttp.BasicAuth | None = None
        self._proxy_known = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False

    def get(self) -> aiohttp.ClientSession:
        """The session, made now if need be; must be called from the running loop."""
        loop = asyncio.get_running_loop()
        session = self._session
        if session is not None and self._loop is loop:
            return session
        if self.closed:
            # A request that picked the channel just before a reload retired it: let it fail over.
            raise unreachable(self.channel, "the channel was closed")
        # A new loop (a harness restarting its loop): a session cannot outlive its loop, and the
        # old one's connections are past closing (the garbage collector takes them).
        self._session, self._loop = self._make(), loop
        return self._session

    def _find_proxy(self) -> yarl.URL | None:
        # Proxies from the environment (HTTPS_PROXY, NO_PROXY...), as httpx honoured them; looked
        # up once, not per request (aiohttp's `trust_env` would, in a thread, and would add
        # ~/.netrc credentials).
        if not self._proxy_known:
            try:
                self._proxy, self._proxy_auth = get_env_proxy_for_url(yarl.URL(self._base_url))
            except LookupError:
                self._proxy, self._proxy_auth = None, None
            self._proxy_known = True
        return self._proxy

    def _make(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=MAX_CONNECTIONS, keepalive_timeout=KEEPALIVE_SECONDS, ssl=_tls_context()
        )
        self._find_proxy()
        return aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            headers={"user-agent": USER_AGENT},
            raise_for_status=False,
        )

    async def post(self, url: yarl.URL, body: bytes, headers: dict[str, str]) -> aiohttp.ClientResponse:
        """POST `body` as it is; the caller reads the answer, then releases or closes it."""
        return await self.get().post(
            url,
            data=RawBody(body, headers.get("content-type", "application/json")),
            headers=headers,
            allow_redirects=False,
            proxy=self._proxy,
            proxy_auth=self._proxy_auth,
        )

    async def call(self, url: yarl.URL, body: bytes, headers: dict[str, str]) -> WholeAnswer:
        """POST `body` as it is and read the whole answer (one that is not a 200: its first
        `MAX_ERROR_BODY` bytes). Through the buffered pool, or aiohttp when a proxy is set."""
        if self._find_proxy() is not None:
            response = await self.post(url, body, headers)
            try:
                if response.status != 200:
                    return WholeAnswer(response.status, response.headers, await read_capped(response))
                return WholeAnswer(response.status, response.headers, await read_whole(response))
            finally:
                # Back to the pool when the body was read whole; closed otherwise (cancelled, cut).
                response.release()
        return await self._buffered_pool().post(url, body, {**BASE_HEADERS, **headers}, limit=MAX_ERROR_BODY)

    async def open_stream(
        self, url: yarl.URL, body: bytes, headers: dict[str, str]
    ) -> StreamedAnswer | ProxiedStream:
        """POST `body`; the answer once its head is read (a 200's body then comes from its
        `pieces()`, any other status read whole, its first `MAX_ERROR_BODY` bytes). The caller
        closes it: a stream read to its end goes back to the pool, one left early is hung up."""
        if self._find_proxy() is not None:
            response = await self.post(url, body, headers)
            try:
                error = await read_capped(response) if response.status != 200 else b""
            except BaseException:
                response.close()
                raise
            return ProxiedStream(response, error)
        pool = self._buffered_pool()
        return await pool.open_stream(url, body, {**BASE_HEADERS, **headers}, limit=MAX_ERROR_BODY)

    def _buffered_pool(self) -> H1Pool:
        loop = asyncio.get_running_loop()
        pool = self._pool
        if pool is not None and self._pool_loop is loop:
            return pool
        if self.closed:
            raise unreachable(self.channel, "the channel was closed")
        # As with the aiohttp session: a pool cannot outlive its loop (a harness restarting one).
        self._pool, self._pool_loop = (
            H1Pool(
                connect_timeout=self._connect_timeout,
                read_timeout=self._read_timeout,
                ssl_context=_tls_context(),
                max_connections=MAX_CONNECTIONS,
                keepalive_seconds=KEEPALIVE_SECONDS,
            ),
            loop,
        )
        return self._pool

    async def aclose(self) -> None:
        self.closed = True
        pool, self._pool = self._pool, None
        if pool is not None and self._pool_loop is asyncio.get_running_loop():
            pool.close()
        session, self._session = self._session, None
        if session is not None and self._loop is asyncio.get_running_loop():
            await session.close()


class ProxiedStream:
    """An aiohttp answer with `StreamedAnswer`'s shape (calls through a proxy)."""

    def __init__(self, response: aiohttp.ClientResponse, error_body: bytes) -> None:
        self._response = response
        self.status = response.status
        self.headers = response.headers
        self.body = error_body

    def pieces(self) -> AsyncIterator[bytes]:
        return self._response.content.iter_any()

    def close(self) -> None:
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


# Bodies up to this size go out in one write with the request head (one small copy, one syscall).
COALESCE_LIMIT = 64 * 1024


class RawBody(aiohttp.BytesPayload):
    """Request bytes sent as they are, without a copy. BytesPayload itself warns above 1 MB, fearing
    a blocking write; a transport write never blocks, and image requests are routinely bigger."""

    def __init__(self, value: bytes, content_type: str = "application/json") -> None:
        aiohttp.payload.Payload.__init__(self, value, content_type=content_type)
        self._size = self._length = len(value)

    async def write_with_length(self, writer: AbstractStreamWriter, content_length: int | None) -> None:
        send_headers = getattr(writer, "send_headers", None)  # aiohttp < 3.12 sends it at once
        if self._length > COALESCE_LIMIT and send_headers is not None:
            # aiohttp joins the buffered head with the first body write (a copy of the whole body
            # on Pythons before 3.12.9, where it avoids writelines): send the head on its own.
            send_headers()
        await super().write_with_length(writer, content_length)


def auth_parts(style: AuthStyle, key: str) -> tuple[dict[str, str], dict[str, str]]:
    """(headers, query params) carrying `key` the way `style` says (protocol reference §2)."""
    if style == "raw":
        return {"authorization": key}, {}
    if style == "bearer":
        return {"authorization": f"Bearer {key}"}, {}
    if style == "goog":
        return {"x-goog-api-key": key}, {}
    return {}, {"key": key}


def join_url(base_url: str, version: str, path: str) -> str:
    """`base/version/path`, without doubling a version the base URL already ends with."""
    base = base_url.rstrip("/")
    if not base.endswith("/" + version):
        base = f"{base}/{version}"
    return f"{base}/{path.lstrip('/')}"


def with_query(url: str, params: dict[str, str]) -> yarl.URL:
    """`url` (already percent-encoded) with `params` form-encoded as httpx did, sent verbatim."""
    if params:
        url = f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"
    return yarl.URL(url, encoded=True)


def transport_failure(channel: str, exc: BaseException) -> ProviderError:
    """An aiohttp or httpx exception as the provider error the router understands.

    Only the exception's type is named: its text may hold the request URL, and with it a `?key=`.
    """
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return UpstreamTimeout(f"upstream channel {channel!r} timed out ({type(exc).__name__})")
    return unreachable(channel, type(exc).__name__)


# What an upstream call can raise short of an HTTP answer (aiohttp's timeouts are TimeoutErrors;
# the buffered pool raises H1Error, and OSError when it cannot connect).
TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError, H1Error, OSError)


async def read_whole(response: aiohttp.ClientResponse) -> bytes:
    """The whole body, as `response.read()` gives it, with one copy of it made instead of three.

    `read()` joins what is buffered at each wake-up and then joins those blocks again (~0.07 ms
    of CPU per 1.4 MB answer more than this, measured here). `readchunk` hands over the
    parser's own pieces (or whole HTTP chunks), and they are joined once. Timeouts
    (`sock_read`), cut-offs and decompression behave as with `read()`.
    """
    content = response.content
    content.set_read_chunk_size(sys.maxsize)  # as read() does: no pausing mid-answer
    pieces: list[bytes] = []
    while True:
        piece, end_of_http_chunk = await content.readchunk()
        if piece:
            pieces.append(piece)
        elif not end_of_http_chunk:
            break  # the end of the body
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


async def read_capped(response: aiohttp.ClientResponse, limit: int = MAX_ERROR_BODY) -> bytes:
    """The start of a response's body, at most `limit` bytes."""
    out = bytearray()
    while len(out) < limit:
        chunk = await response.content.read(limit - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)
