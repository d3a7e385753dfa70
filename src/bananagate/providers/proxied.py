"""Gemini-native calls through an HTTP(S) proxy from the environment, over aiohttp.

`providers.h1pool` speaks to origins only; a channel whose base URL an `HTTP_PROXY` /
`HTTPS_PROXY` applies to (and `NO_PROXY` does not exempt) goes through here instead. aiohttp is
imported only by this module, so a gateway without proxies never loads it. Its errors leave as
`H1Error` (named by type only: their text may hold the URL, and with it a `?key=`).
"""

from __future__ import annotations

import ssl
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import aiohttp
import yarl
from aiohttp.abc import AbstractStreamWriter
from aiohttp.helpers import get_env_proxy_for_url

from bananagate.protocol.scan import Bytes
from bananagate.providers.h1pool import H1Error, WholeAnswer


@dataclass(frozen=True, slots=True)
class ProxyRoute:
    proxy: yarl.URL
    auth: aiohttp.BasicAuth | None


def env_proxy_route(base_url: str) -> ProxyRoute | None:
    """The proxy the environment names for `base_url`, or None (also when NO_PROXY exempts it)."""
    try:
        proxy, auth = get_env_proxy_for_url(yarl.URL(base_url))
    except LookupError:
        return None
    return ProxyRoute(proxy, auth)


class ProxiedSession:
    """One channel's aiohttp session through its proxy (bound to the loop it was made in)."""

    def __init__(
        self,
        route: ProxyRoute,
        *,
        connect_timeout: float,
        read_timeout: float,
        ssl_context: ssl.SSLContext,
        user_agent: str,
        max_connections: int,
        keepalive_seconds: float,
    ) -> None:
        self._route = route
        self._read_timeout = read_timeout
        # `connect` bounds getting a connection at all (a pool slot, DNS, TCP, TLS); `sock_read`
        # is the longest silence from the upstream.
        timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout, sock_connect=connect_timeout, sock_read=read_timeout
        )
        connector = aiohttp.TCPConnector(
            limit=max_connections, keepalive_timeout=keepalive_seconds, ssl=ssl_context
        )
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=timeout, headers={"user-agent": user_agent}, raise_for_status=False
        )

    async def _post(self, url: yarl.URL, body: Bytes, headers: dict[str, str]) -> aiohttp.ClientResponse:
        try:
            return await self._session.post(
                url,
                data=RawBody(body, headers.get("content-type", "application/json")),
                headers=headers,
                allow_redirects=False,
                proxy=self._route.proxy,
                proxy_auth=self._route.auth,
            )
        except aiohttp.ClientError as exc:
            raise H1Error(type(exc).__name__) from None

    async def call(self, url: yarl.URL, body: Bytes, headers: dict[str, str], *, limit: int) -> WholeAnswer:
        """The whole answer (one that is not a 200: its first `limit` bytes)."""
        response = await self._post(url, body, headers)
        try:
            if response.status != 200:
                return WholeAnswer(response.status, response.headers, await read_capped(response, limit))
            return WholeAnswer(response.status, response.headers, await read_whole(response))
        except aiohttp.ClientError as exc:
            raise H1Error(type(exc).__name__) from None
        finally:
            # Back to the pool when the body was read whole; closed otherwise (cancelled, cut).
            response.release()

    async def open_stream(
        self, url: yarl.URL, body: Bytes, headers: dict[str, str], *, limit: int
    ) -> ProxiedStream:
        """The answer at its head (a 200 streams from `pieces()`; others come read whole)."""
        response = await self._post(url, body, headers)
        try:
            error = await read_capped(response, limit) if response.status != 200 else b""
        except aiohttp.ClientError as exc:
            response.close()
            raise H1Error(type(exc).__name__) from None
        except BaseException:
            response.close()
            raise
        return ProxiedStream(response, error)

    async def aclose(self) -> None:
        await self._session.close()


class ProxiedStream:
    """An aiohttp answer with `h1pool.StreamedAnswer`'s shape."""

    def __init__(self, response: aiohttp.ClientResponse, error_body: bytes) -> None:
        self._response = response
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers
        self.body: bytes | bytearray = error_body

    async def pieces(self) -> AsyncIterator[bytes]:
        try:
            async for piece in self._response.content.iter_any():
                yield piece
        except aiohttp.ClientError as exc:
            raise H1Error(type(exc).__name__) from None

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

    def __init__(self, value: Bytes, content_type: str = "application/json") -> None:
        aiohttp.payload.Payload.__init__(self, value, content_type=content_type)
        self._size = self._length = len(value)

    async def write_with_length(self, writer: AbstractStreamWriter, content_length: int | None) -> None:
        send_headers = getattr(writer, "send_headers", None)  # aiohttp < 3.12 sends it at once
        if self._length > COALESCE_LIMIT and send_headers is not None:
            # aiohttp joins the buffered head with the first body write (a copy of the whole body
            # on Pythons before 3.12.9, where it avoids writelines): send the head on its own.
            send_headers()
        await super().write_with_length(writer, content_length)


async def read_whole(response: aiohttp.ClientResponse) -> bytes:
    """The whole body, as `response.read()` gives it, with one copy of it made instead of three
    (`readchunk` hands over the parser's own pieces, joined once). Timeouts (`sock_read`),
    cut-offs and decompression behave as with `read()`."""
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


async def read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The start of a response's body, at most `limit` bytes."""
    out = bytearray()
    while len(out) < limit:
        chunk = await response.content.read(limit - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)
