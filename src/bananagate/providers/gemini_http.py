"""Gemini-native upstreams over HTTP: Google (`gemini`), CometAPI (`cometapi`) and any
`gemini-compatible` relay. They differ only in base URL and how the key is sent.

Fidelity is the point: the client's body bytes go up untouched (no parse-and-rebuild of
megabytes of Base64) and the answer's bytes come back untouched. Streams are requested with
`?alt=sse` and passed on event by event, as soon as each event is complete. Usage is read from
the answer bytes by `bananagate.protocol.scan`, without decoding images.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from urllib.parse import quote

import yarl

from bananagate.config import AuthStyle
from bananagate.protocol.scan import is_error_event
from bananagate.providers.base import Answer, Call, UpstreamError, scanned_answer
from bananagate.providers.http import (
    TRANSPORT_ERRORS,
    ChannelSession,
    auth_parts,
    join_url,
    transport_failure,
    with_query,
)
from bananagate.providers.sse import EventTooLarge, SseSplitter
from bananagate.providers.upstream_errors import error_from_event, error_from_response, unreachable

# Distinct (model, method) URLs a provider remembers; model ids come from the channel's config.
_URL_CACHE = 64


class GeminiHttpProvider:
    """One channel key's view of a Gemini-native upstream. The channel owns `session`."""

    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        auth: AuthStyle,
        key: str,
        session: ChannelSession,
        api_version: str = "v1beta",
    ) -> None:
        self.name = name
        self._base_url = base_url
        self._version = api_version
        self._key = key
        self._headers, self._params = auth_parts(auth, key)
        self._headers["content-type"] = "application/json"
        self._session = session
        self._urls: dict[tuple[str, str, bool], yarl.URL] = {}

    def _url(self, call: Call, *, sse: bool = False) -> yarl.URL:
        cached = self._urls.get((call.model_id, call.method, sse))
        if cached is not None:
            return cached
        # `call.model_id` is the upstream's name for the model (the router applied aliases).
        model = quote(call.model_id, safe="-._~")
        url = join_url(self._base_url, self._version, f"models/{model}:{call.method}")
        built = with_query(url, {**self._params, "alt": "sse"} if sse else self._params)
        if len(self._urls) >= _URL_CACHE:
            self._urls.clear()
        self._urls[(call.model_id, call.method, sse)] = built
        return built

    async def generate(self, call: Call) -> Answer:
        try:
            answer = await self._session.call(self._url(call), call.body, self._headers)
        except TRANSPORT_ERRORS as exc:
            raise transport_failure(self.name, exc) from None
        if answer.status != 200:
            raise self._error(answer.status, bytes(answer.body), answer.headers)
        # A bytearray when read by the buffered pool: bytes' methods, without a copy.
        whole = scanned_answer(answer.body)
        if whole is None:
            # A cut-off 200 must not reach the client as an image, nor be charged as one.
            raise unreachable(self.name, "its 200 answer was not a whole JSON object")
        return whole

    async def stream(self, call: Call) -> AsyncIterator[bytes]:
        try:
            answer = await self._session.open_stream(self._url(call, sse=True), call.body, self._headers)
        except TRANSPORT_ERRORS as exc:
            raise transport_failure(self.name, exc) from None
        try:
            if answer.status != 200:
                raise self._error(answer.status, bytes(answer.body), answer.headers)
            splitter = SseSplitter()
            first = True
            async for chunk in answer.pieces():
                for event in splitter.feed(chunk):
                    if first and is_error_event(event):
                        # Nothing reached the client yet: let the router treat it like an error answer.
                        raise error_from_event(event, channel=self.name, secrets=(self._key,))
                    first = False
                    yield event
            for event in splitter.close():
                yield event
        except TRANSPORT_ERRORS as exc:
            raise transport_failure(self.name, exc) from None
        except EventTooLarge as exc:
            raise unreachable(self.name, str(exc)) from None
        finally:
            # A stream left early (client gone, deadline, error event) must not keep the upstream
            # working: its connection is closed now. A finished one goes back to the pool.
            answer.close()

    def _error(self, status: int, body: bytes, headers: Mapping[str, str]) -> UpstreamError:
        return error_from_response(status, body, headers, channel=self.name, secrets=(self._key,))

    async def aclose(self) -> None:
        return None  # the pooled session belongs to the channel, which closes it
