"""`bananagate.AsyncClient`: the asyncio client (same API as `Client`, awaitable)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Self

import httpx

from bananagate.client.base import ClientBase, ComposeMethod, Preset
from bananagate.client.chat import AsyncChatSession
from bananagate.client.inputs import Images
from bananagate.client.jobs_mixin import AsyncJobsMixin
from bananagate.client.request import HttpRequest
from bananagate.client.result import GenerateResult
from bananagate.client.retry import RetryPolicy


class AsyncClient(AsyncJobsMixin, ClientBase):
    """The asyncio twin of `Client`: same arguments and methods, awaitable; close with `aclose`."""

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        auth: str | None = None,
        model: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        retry: RetryPolicy | None = None,
        max_attempts: int | None = None,
        headers: dict[str, str] | None = None,
        preset: Preset = "bananagate",
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            api_key,
            base_url=base_url,
            auth=auth,
            model=model,
            timeout=timeout,
            retry=retry,
            max_attempts=max_attempts,
            headers=headers,
            preset=preset,
        )
        self._http = httpx.AsyncClient(timeout=self.config.timeout, transport=transport)

    async def send(self, request: HttpRequest) -> GenerateResult:
        """Send a prepared request with retries; the result has an image or this raises.

        Every attempt carries the same `Idempotency-Key` (the request's own, else a new one)."""
        request = request.with_idempotency_key()
        state = self._retry_state()
        while True:
            state.start_attempt()
            try:
                response = await self._http.request(
                    request.method,
                    request.url,
                    headers=request.headers,
                    params=request.params,
                    content=request.content,
                )
                step = self._after_response(state, response.status_code, response.headers, response.content)
            except httpx.TransportError as exc:
                step = self._after_exception(state, exc)
            if step.result is not None:
                return step.result
            assert step.error is not None
            if step.delay is None:
                raise step.error
            await asyncio.sleep(step.delay)

    async def generate(
        self,
        prompt: str,
        *,
        model: str | None = None,
        aspect_ratio: str | None = None,
        image_size: str | int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> GenerateResult:
        """Text to image. `aspect_ratio` like "16:9", `image_size` "512"/"1K"/"2K"/"4K"."""
        return await self.send(
            self._prepare_generate(
                prompt, model=model, aspect_ratio=aspect_ratio, image_size=image_size, headers=headers
            )
        )

    async def edit(
        self,
        prompt: str,
        images: Images,
        *,
        model: str | None = None,
        aspect_ratio: str | None = None,
        image_size: str | int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> GenerateResult:
        """Edit one image (or several) following `prompt`; images are sent inline."""
        return await self.send(
            self._prepare_edit(
                prompt, images, model=model, aspect_ratio=aspect_ratio, image_size=image_size, headers=headers
            )
        )

    async def compose(
        self,
        prompt: str,
        images: Images,
        *,
        method: ComposeMethod = "inline",
        labels: bool | Sequence[str] | None = None,
        columns: int | None = None,
        model: str | None = None,
        aspect_ratio: str | None = None,
        image_size: str | int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> GenerateResult:
        """Several images into one. `method="inline"` sends each (the guide's Method 2, up to the
        model's limit); "collage" sends one grid built here (Method 1; `labels=True` numbers the
        tiles); "auto" uses a collage only when there are too many images."""
        return await self.send(
            self._prepare_compose(
                prompt,
                images,
                method=method,
                labels=labels,
                columns=columns,
                model=model,
                aspect_ratio=aspect_ratio,
                image_size=image_size,
                headers=headers,
            )
        )

    def chat(
        self,
        *,
        model: str | None = None,
        aspect_ratio: str | None = None,
        image_size: str | int | None = None,
        history: list[dict[str, Any]] | None = None,
    ) -> AsyncChatSession:
        """A multi-turn editing session that keeps history and thought signatures."""
        return AsyncChatSession(
            self, model=model, aspect_ratio=aspect_ratio, image_size=image_size, history=history
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
