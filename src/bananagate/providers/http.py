"""What the HTTP providers share: the pooled clients, the auth styles, transport failures.

Gemini-native channels call their upstream through `providers.h1pool` (keep-alive HTTP/1.1 whose
answers land in one buffer, issue #9), or through aiohttp when a proxy from the environment
applies (`providers.proxied`); `openai-images` channels keep their httpx client (multipart uploads
and URL downloads, off the hot path).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import ssl
import sys
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar
from urllib.parse import urlencode, urlsplit

import yarl

from bananagate import __version__
from bananagate.config import AuthStyle
from bananagate.protocol.scan import Bytes
from bananagate.providers.base import ProviderError, UpstreamTimeout
from bananagate.providers.h1pool import H1Error, H1Pool, WholeAnswer
from bananagate.providers.upstream_errors import unreachable

if TYPE_CHECKING:
    import httpx

    from bananagate.providers.proxied import ProxiedSession, ProxyRoute

T = TypeVar("T")

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
    # httpx (~3 MB with what it imports) loads with the first channel that needs it, not with
    # every gateway: Gemini-native channels over plain HTTP never do.
    import httpx

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
    """The trust store httpx uses (and channels used when they ran on it): SSL_CERT_FILE, else
    SSL_CERT_DIR, else certifi's bundle. (aiohttp would use the system store, which a slim
    container may not have.)"""
    import certifi

    if cafile := os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=cafile)
    if capath := os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=capath)
    return ssl.create_default_context(cafile=certifi.where())


class _PerLoop(Generic[T]):
    """One object per running loop: a pool binds to the loop it was made in and cannot outlive
    it (a harness restarting its loop gets a new one; the old one's connections are past
    closing, and the garbage collector takes them)."""

    def __init__(self) -> None:
        self._value: T | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self, make: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        if self._value is None or self._loop is not loop:
            self._value, self._loop = make(), loop
        return self._value

    def take(self) -> T | None:
        """The object, if it belongs to the running loop (to close it); forgotten either way."""
        value, self._value = self._value, None
        return value if value is not None and self._loop is asyncio.get_running_loop() else None


class ChannelSession:
    """One channel's keep-alive pool: an `H1Pool`, made on first use (it binds to the running
    loop, and channels are built before the server's loop runs); through a proxy from the
    environment, an aiohttp session instead (`providers.proxied`, imported only then)."""

    def __init__(self, channel: str, *, base_url: str, connect_timeout: float, read_timeout: float) -> None:
        self.channel = channel
        self._base_url = base_url
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._pool: _PerLoop[H1Pool] = _PerLoop()
        self._proxied: _PerLoop[ProxiedSession] = _PerLoop()
        self._proxy_known = False
        self._proxy_route: ProxyRoute | None = None
        self.closed = False

    def _proxy(self) -> ProxyRoute | None:
        # Proxies from the environment (HTTPS_PROXY, NO_PROXY...), as httpx honoured them; looked
        # up once, not per request. aiohttp is imported only when a proxy variable is set.
        if not self._proxy_known:
            self._proxy_known = True
            scheme = urlsplit(self._base_url).scheme
            if scheme in urllib.request.getproxies():
                from bananagate.providers.proxied import env_proxy_route

                self._proxy_route = env_proxy_route(self._base_url)
        return self._proxy_route

    def _open(self) -> None:
        if self.closed:
            # A request that picked the channel just before a reload retired it: let it fail over.
            raise unreachable(self.channel, "the channel was closed")

    def _through_proxy(self, route: ProxyRoute) -> ProxiedSession:
        from bananagate.providers.proxied import ProxiedSession

        def make() -> ProxiedSession:
            self._open()
            return ProxiedSession(
                route,
                connect_timeout=self._connect_timeout,
                read_timeout=self._read_timeout,
                ssl_context=_tls_context(),
                user_agent=USER_AGENT,
                max_connections=MAX_CONNECTIONS,
                keepalive_seconds=KEEPALIVE_SECONDS,
            )

        return self._proxied.get(make)

    def _buffered_pool(self) -> H1Pool:
        def make() -> H1Pool:
            self._open()
            return H1Pool(
                connect_timeout=self._connect_timeout,
                read_timeout=self._read_timeout,
                ssl_context=_tls_context,
                max_connections=MAX_CONNECTIONS,
                keepalive_seconds=KEEPALIVE_SECONDS,
            )

        return self._pool.get(make)

    async def call(self, url: yarl.URL, body: Bytes, headers: dict[str, str]) -> WholeAnswer:
        """POST `body` as it is and read the whole answer (one that is not a 200: its first
        `MAX_ERROR_BODY` bytes)."""
        route = self._proxy()
        if route is not None:
            return await self._through_proxy(route).call(url, body, headers, limit=MAX_ERROR_BODY)
        return await self._buffered_pool().post(url, body, {**BASE_HEADERS, **headers}, limit=MAX_ERROR_BODY)

    async def open_stream(self, url: yarl.URL, body: Bytes, headers: dict[str, str]) -> Streamed:
        """POST `body`; the answer once its head is read (a 200's body then comes from its
        `pieces()`, any other status read whole, its first `MAX_ERROR_BODY` bytes). The caller
        closes it: a stream read to its end goes back to the pool, one left early is hung up."""
        route = self._proxy()
        if route is not None:
            return await self._through_proxy(route).open_stream(url, body, headers, limit=MAX_ERROR_BODY)
        pool = self._buffered_pool()
        return await pool.open_stream(url, body, {**BASE_HEADERS, **headers}, limit=MAX_ERROR_BODY)

    async def aclose(self) -> None:
        self.closed = True
        pool = self._pool.take()
        if pool is not None:
            pool.close()
        proxied = self._proxied.take()
        if proxied is not None:
            await proxied.aclose()


class Streamed(Protocol):
    """A streamed answer: `StreamedAnswer`, or `ProxiedStream` through a proxy."""

    status: int
    headers: Mapping[str, str]
    body: Bytes

    def pieces(self) -> AsyncIterator[bytes]: ...

    def close(self) -> None: ...


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
    """A transport exception as the provider error the router understands.

    Only the exception's type is named (an H1Error's own text, which never holds one): an
    exception's text may hold the request URL, and with it a `?key=`.
    """
    if _is_timeout(exc):
        return UpstreamTimeout(f"upstream channel {channel!r} timed out ({type(exc).__name__})")
    return unreachable(channel, str(exc) if type(exc) is H1Error else type(exc).__name__)


def _is_timeout(exc: BaseException) -> bool:
    if isinstance(exc, TimeoutError):
        return True
    httpx = sys.modules.get("httpx")  # no httpx error without httpx imported
    return httpx is not None and isinstance(exc, httpx.TimeoutException)


# What an upstream call can raise short of an HTTP answer: the pool's H1Error (aiohttp's errors
# through a proxy are turned into it), OSError when it cannot connect, TimeoutError.
TRANSPORT_ERRORS = (TimeoutError, H1Error, OSError)
