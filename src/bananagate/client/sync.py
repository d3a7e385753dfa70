"""`bananagate.Client`: the blocking client."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, Self

import httpx

from bananagate.client.base import ClientBase, ComposeMethod, Preset
from bananagate.client.chat import ChatSession
from bananagate.client.inputs import Images
from bananagate.client.jobs_mixin import JobsMixin
from bananagate.client.request import HttpRequest
from bananagate.client.result import GenerateResult
from bananagate.client.retry import RetryPolicy


class Client(JobsMixin, ClientBase):
    """A client for a Gemini-native image API: the local gateway, CometAPI, Google, or any base URL.

    `api_key`/`base_url`/`auth` default to `BANANAGATE_API_KEY` / `BANANAGATE_BASE_URL` /
    `BANANAGATE_AUTH`, then to the local gateway at http://127.0.0.1:8000 with the key its
    `serve` wrote to `<data dir>/default.key`. `auth` is `raw` (`Authorization: <key>`),
    `bearer`, `goog` (`x-goog-api-key`) or `query` (`?key=`). `model` is the default model,
    `timeout` seconds (or an httpx.Timeout), `retry` the RetryPolicy (`max_attempts` overrides
    its attempt cap; 1 disables retries). Use `Client.cometapi(key)` / `Client.google(key)` for
    the hosted services. `submit` / `wait` / `submit_batch` / `wait_batch` (from `JobsMixin`,
    client/jobs_mixin.py) queue work on a bananagate gateway and collect it later.
    """

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
        transport: httpx.BaseTransport | None = None,
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
        self._http = httpx.Client(timeout=self.config.timeout, transport=transport)

    def send(self, request: HttpRequest) -> GenerateResult:
        """Send a prepared request with retries; the result has an image or this raises.

        Every attempt carries the same `Idempotency-Key` (the request's own, else a new one)."""
        request = request.with_idempotency_key()
        state = self._retry_state()
        while True:
            state.start_attempt()
            try:
                response = self._http.request(
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
            time.sleep(step.delay)

    def generate(
        self,
        prompt: str,
        *,
        model: str | None = None,
        aspect_ratio: str | None = None,
        image_size: str | int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> GenerateResult:
        """Text to image. `aspect_ratio` like "16:9", `image_size` "512"/"1K"/"2K"/"4K"."""
        return self.send(
            self._prepare_generate(
                prompt, model=model, aspect_ratio=aspect_ratio, image_size=image_size, headers=headers
            )
        )

    def edit(
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
        return self.send(
            self._prepare_edit(
                prompt, images, model=model, aspect_ratio=aspect_ratio, image_size=image_size, headers=headers
            )
        )

    def compose(
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
        return self.send(
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
    ) -> ChatSession:
        """A multi-turn editing session that keeps history and thought signatures."""
        return ChatSession(
            self, model=model, aspect_ratio=aspect_ratio, image_size=image_size, history=history
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
