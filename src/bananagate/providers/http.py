"""What the HTTP providers share: the pooled client, the auth styles, transport failures."""

from __future__ import annotations

import logging

import httpx

from bananagate import __version__
from bananagate.config import AuthStyle
from bananagate.providers.base import ProviderError, UpstreamTimeout
from bananagate.providers.upstream_errors import unreachable

# httpx logs every request URL at INFO, and with `?key=` auth the URL holds the upstream key.
# Upstream keys must never reach a log line, so these loggers only speak up for warnings.
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).setLevel(logging.WARNING)

# Error bodies are read only this far: enough for any real envelope, bounded for a rogue one.
MAX_ERROR_BODY = 1024 * 1024


def make_client(*, connect_timeout: float, read_timeout: float) -> httpx.AsyncClient:
    """A keep-alive HTTP/1.1 pool for one channel. `read_timeout` also bounds writes (big bodies)."""
    timeout = httpx.Timeout(read_timeout, connect=connect_timeout, pool=connect_timeout)
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=30)
    headers = {"user-agent": f"bananagate/{__version__}"}
    return httpx.AsyncClient(
        timeout=timeout, limits=limits, headers=headers, http2=False, follow_redirects=False
    )


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


def transport_failure(channel: str, exc: httpx.HTTPError) -> ProviderError:
    """An httpx exception as the provider error the router understands (never with the URL)."""
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"upstream channel {channel!r} timed out ({type(exc).__name__})")
    return unreachable(channel, type(exc).__name__)


async def read_capped(response: httpx.Response, limit: int = MAX_ERROR_BODY) -> bytes:
    """The start of a streamed response's body, at most `limit` bytes."""
    out = bytearray()
    async for chunk in response.aiter_bytes():
        out += chunk
        if len(out) >= limit:
            break
    return bytes(out[:limit])
