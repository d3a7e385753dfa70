"""`openai-images` upstreams: a Gemini image request sent to OpenAI's Images API and the answer
translated back (the translation itself is `bananagate.protocol.openai_images`)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import httpx
import orjson

from bananagate.config import AuthStyle
from bananagate.protocol import base64codec
from bananagate.protocol import openai_images as oai
from bananagate.protocol.errors import ApiError
from bananagate.providers.base import Answer, Call, UpstreamError
from bananagate.providers.http import MAX_ERROR_BODY, auth_parts, join_url, transport_failure
from bananagate.providers.upstream_errors import error_from_response

# A DALL·E upstream may answer with URLs despite `response_format`; images are fetched this far.
MAX_IMAGE_DOWNLOAD = 64 * 1024 * 1024


class OpenAIImagesProvider:
    """One channel key's view of an OpenAI-compatible Images API. The channel owns `client`."""

    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        auth: AuthStyle,
        key: str,
        client: httpx.AsyncClient,
        sizes: tuple[str, ...] = oai.DEFAULT_SIZES,
    ) -> None:
        self.name = name
        self._base_url = base_url
        self._key = key
        self._headers, self._params = auth_parts(auth, key)
        self._client = client
        self._sizes = sizes

    async def generate(self, call: Call) -> Answer:
        # call.model_id is the upstream's model name (the router applied aliases and model_map).
        translated = oai.build_request(call.full_request(), call.model, call.model_id, self._sizes)
        url = join_url(self._base_url, "v1", f"images/{translated.endpoint}")
        try:
            if translated.endpoint == "edits":
                files = [(f.field, (f.filename, f.data, f.mime_type)) for f in translated.files]
                data = {k: str(v) for k, v in translated.fields.items()}
                response = await self._client.post(
                    url, data=data, files=files, headers=self._headers, params=self._params
                )
            else:
                response = await self._client.post(
                    url, json=translated.fields, headers=self._headers, params=self._params
                )
        except httpx.HTTPError as exc:
            raise transport_failure(self.name, exc) from None
        return await self._answer(call, translated, response)

    async def _answer(
        self, call: Call, translated: oai.OpenAIImageRequest, response: httpx.Response
    ) -> Answer:
        body = response.content
        prompt = call.request.prompt_text()
        ids = {"model_version": call.model_id, "response_id": secrets.token_urlsafe(15)}
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = None
        if response.status_code != 200:
            if oai.is_moderation_error(response.status_code, parsed):
                message = str(parsed["error"].get("message") or "Rejected by the upstream's safety system.")
                block, usage = oai.safety_block(message, prompt=prompt, **ids)
                return Answer(body=orjson.dumps(block), usage=usage, finish_reason="IMAGE_SAFETY")
            raise error_from_response(
                response.status_code,
                body[:MAX_ERROR_BODY],
                response.headers,
                channel=self.name,
                secrets=(self._key,),
            )
        if not isinstance(parsed, dict):
            raise UpstreamError(
                ApiError(
                    502, f"Upstream channel {self.name!r} sent an answer that is not JSON.", "UNAVAILABLE"
                ),
                retryable=True,
            )
        await self._inline_urls(parsed)
        gemini, usage, images = oai.to_gemini(
            parsed,
            model=call.model,
            want_text="TEXT" in {m.upper() for m in call.request.response_modalities},
            size_label=translated.size_label,
            prompt=prompt,
            **ids,
        )
        return Answer(
            body=orjson.dumps(gemini),
            usage=usage,
            finish_reason=gemini["candidates"][0]["finishReason"],
            image_count=images,
        )

    async def _inline_urls(self, answer: dict[str, object]) -> None:
        """Replace `url` items by `b64_json` ones, downloading each image (bounded)."""
        for item in answer.get("data") or []:  # type: ignore[attr-defined]
            if isinstance(item, dict) and not item.get("b64_json") and isinstance(item.get("url"), str):
                try:
                    async with self._client.stream("GET", item["url"]) as response:
                        if response.status_code != 200:
                            continue
                        raw = bytearray()
                        async for chunk in response.aiter_bytes():
                            raw += chunk
                            if len(raw) > MAX_IMAGE_DOWNLOAD:
                                break
                except httpx.HTTPError as exc:
                    raise transport_failure(self.name, exc) from None
                if len(raw) <= MAX_IMAGE_DOWNLOAD:
                    item["b64_json"] = base64codec.encode(bytes(raw))

    async def stream(self, call: Call) -> AsyncIterator[bytes]:
        # The Images API has no Gemini-shaped stream: the whole answer is the one event.
        answer = await self.generate(call)
        yield bytes(answer.body)  # already bytes: no copy

    async def aclose(self) -> None:
        return None  # the pooled client belongs to the channel, which closes it
