"""Gemini-native upstreams over HTTP: Google (`gemini`), CometAPI (`cometapi`) and any
`gemini-compatible` relay. They differ only in base URL and how the key is sent.

Fidelity is the point: the client's body bytes go up untouched (no parse-and-rebuild of
megabytes of Base64) and the answer's bytes come back untouched. Streams are requested with
`?alt=sse` and passed on event by event, as soon as each event is complete. Usage is read from
the answer bytes by `bananagate.protocol.scan`, without decoding images.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import quote

import httpx

from bananagate.config import AuthStyle
from bananagate.protocol.scan import (
    count_output_images,
    is_error_event,
    is_json_object,
    scan_finish_reason,
    scan_usage,
)
from bananagate.providers.base import Answer, Call, UpstreamError
from bananagate.providers.http import auth_parts, join_url, read_capped, transport_failure
from bananagate.providers.sse import EventTooLarge, SseSplitter
from bananagate.providers.upstream_errors import error_from_event, error_from_response, unreachable


class GeminiHttpProvider:
    """One channel key's view of a Gemini-native upstream. The channel owns `client`."""

    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        auth: AuthStyle,
        key: str,
        client: httpx.AsyncClient,
        api_version: str = "v1beta",
    ) -> None:
        self.name = name
        self._base_url = base_url
        self._version = api_version
        self._key = key
        self._headers, self._params = auth_parts(auth, key)
        self._headers["content-type"] = "application/json"
        self._client = client

    def _url(self, call: Call) -> str:
        # `call.model_id` is the upstream's name for the model (the router applied aliases).
        model = quote(call.model_id, safe="-._~")
        return join_url(self._base_url, self._version, f"models/{model}:{call.method}")

    async def generate(self, call: Call) -> Answer:
        try:
            response = await self._client.post(
                self._url(call), content=call.body, headers=self._headers, params=self._params
            )
        except httpx.HTTPError as exc:
            raise transport_failure(self.name, exc) from None
        body = response.content
        if response.status_code != 200:
            raise self._error(response.status_code, body, response.headers)
        if not is_json_object(body):
            # A cut-off 200 must not reach the client as an image, nor be charged as one.
            raise unreachable(self.name, "its 200 answer was not a whole JSON object")
        return Answer(
            body=body,
            usage=scan_usage(body),
            finish_reason=scan_finish_reason(body),
            image_count=count_output_images(body),
        )

    async def stream(self, call: Call) -> AsyncIterator[bytes]:
        params = {**self._params, "alt": "sse"}
        request = self._client.build_request(
            "POST", self._url(call), content=call.body, headers=self._headers, params=params
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise transport_failure(self.name, exc) from None
        try:
            if response.status_code != 200:
                raise self._error(response.status_code, await read_capped(response), response.headers)
            splitter = SseSplitter()
            first = True
            async for chunk in response.aiter_bytes():
                for event in splitter.feed(chunk):
                    if first and is_error_event(event):
                        # Nothing reached the client yet: let the router treat it like an error answer.
                        raise error_from_event(event, channel=self.name, secrets=(self._key,))
                    first = False
                    yield event
            for event in splitter.close():
                yield event
        except httpx.HTTPError as exc:
            raise transport_failure(self.name, exc) from None
        except EventTooLarge as exc:
            raise unreachable(self.name, str(exc)) from None
        finally:
            await response.aclose()

    def _error(self, status: int, body: bytes, headers: httpx.Headers) -> UpstreamError:
        return error_from_response(status, body, headers, channel=self.name, secrets=(self._key,))

    async def aclose(self) -> None:
        return None  # the pooled client belongs to the channel, which closes it
