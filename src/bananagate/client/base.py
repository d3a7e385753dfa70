"""What `Client` and `AsyncClient` share: configuration, request preparation, and what to do with
each answer. The two clients add only the I/O (send, sleep), the way httpx splits its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Self

import httpx

from bananagate.client.collage import collage_input
from bananagate.client.config import ClientConfig, resolve_config
from bananagate.client.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BananagateError,
    InvalidInputError,
    TransportError,
)
from bananagate.client.inputs import Images, InputImage, load_images
from bananagate.client.parse import error_from_response, load_body, parse_result, require_image
from bananagate.client.request import HttpRequest, build_generate, user_turn
from bananagate.client.result import GenerateResult
from bananagate.client.retry import RetryPolicy, RetryState
from bananagate.protocol.catalog import find_model

ComposeMethod = Literal["inline", "collage", "auto"]
Preset = Literal["bananagate", "cometapi", "google"]

_NO_KEY_HINT = (
    " [no API key was configured: pass api_key=..., set BANANAGATE_API_KEY, "
    "or start `bananagate serve` once so it writes <data dir>/default.key]"
)


@dataclass(frozen=True, slots=True)
class Step:
    """The outcome of one attempt: a result, or an error to raise now or after `delay` seconds."""

    result: GenerateResult | None = None
    error: BaseException | None = None
    delay: float | None = None


class ClientBase:
    """Configuration and pure per-call logic. See `Client` for the arguments."""

    @classmethod
    def cometapi(cls, api_key: str | None = None, **kwargs: Any) -> Self:
        """CometAPI: https://api.cometapi.com, raw `Authorization` key (default `$COMETAPI_KEY`)."""
        return cls(api_key, preset="cometapi", **kwargs)

    @classmethod
    def google(cls, api_key: str | None = None, **kwargs: Any) -> Self:
        """Google's Gemini API with `x-goog-api-key` (default `$GOOGLE_API_KEY` / `$GEMINI_API_KEY`)."""
        return cls(api_key, preset="google", **kwargs)

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
    ) -> None:
        if max_attempts is not None:
            retry = dataclasses.replace(retry or RetryPolicy(), max_attempts=max_attempts)
        self.config: ClientConfig = resolve_config(
            api_key=api_key,
            base_url=base_url,
            auth=auth,
            preset=preset,
            timeout=timeout,
            retry=retry,
            model=model,
            headers=headers,
        )

    # --- preparing requests (pure) -------------------------------------------------------------

    def build_request(
        self,
        contents: Sequence[Mapping[str, Any]],
        *,
        model: str | None = None,
        aspect_ratio: str | None = None,
        image_size: str | int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> HttpRequest:
        """The request a call would send for `contents` (checked against the model table)."""
        return build_generate(
            self.config,
            contents,
            model=model,
            aspect_ratio=aspect_ratio,
            image_size=image_size,
            headers=headers,
        )

    def _compose_images(
        self,
        images: Images,
        method: ComposeMethod,
        model: str | None,
        labels: bool | Sequence[str] | None,
        columns: int | None,
    ) -> list[InputImage]:
        loaded = load_images(images)
        if not loaded:
            raise InvalidInputError("compose needs at least one image")
        if method not in ("inline", "collage", "auto"):
            raise InvalidInputError(f"unknown compose method {method!r}; use 'inline', 'collage' or 'auto'")
        info = find_model(model or self.config.default_model)
        too_many = info is not None and len(loaded) > info.max_input_images
        if method == "collage" or (method == "auto" and too_many):
            return [collage_input(loaded, labels=labels, columns=columns)]
        return loaded

    # --- interpreting answers (pure) -----------------------------------------------------------

    def _after_response(
        self, state: RetryState, status: int, headers: Mapping[str, str], content: bytes
    ) -> Step:
        if status == 200:
            body = load_body(content)
            if not isinstance(body, dict):
                return Step(error=APIError(200, "the answer is not a JSON object", body=body))
            result = parse_result(body, headers, elapsed=state.elapsed, attempts=state.attempts)
            try:
                return Step(result=require_image(result))
            except BananagateError as exc:
                return Step(error=exc)
        error = error_from_response(status, headers, content, attempts=state.attempts)
        if isinstance(error, AuthenticationError) and not self.config.api_key:
            error.message += _NO_KEY_HINT
            error.args = (error._describe(),)
        return Step(error=error, delay=state.delay_after_status(status, error.retry_after))

    def _after_exception(self, state: RetryState, exc: httpx.TransportError) -> Step:
        kind: type[TransportError] = (
            APITimeoutError if isinstance(exc, httpx.TimeoutException) else APIConnectionError
        )
        what = "timed out" if kind is APITimeoutError else "failed"
        error = kind(
            f"request to {self.config.base_url} {what} after {state.attempts} attempt(s): "
            f"{type(exc).__name__}: {exc}",
            attempts=state.attempts,
        )
        error.__cause__ = exc
        return Step(error=error, delay=state.delay_after_exception(exc))

    def _retry_state(self) -> RetryState:
        return RetryState(self.config.retry)

    def _prepare_generate(
        self,
        prompt: str,
        images: Sequence[InputImage] = (),
        *,
        model: str | None = None,
        aspect_ratio: str | None = None,
        image_size: str | int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> HttpRequest:
        return self.build_request(
            [user_turn(prompt, images)],
            model=model,
            aspect_ratio=aspect_ratio,
            image_size=image_size,
            headers=headers,
        )

    def _prepare_edit(self, prompt: str, images: Images, **options: Any) -> HttpRequest:
        loaded = load_images(images)
        if not loaded:
            raise InvalidInputError("edit needs at least one image")
        return self._prepare_generate(prompt, loaded, **options)

    def _prepare_compose(
        self,
        prompt: str,
        images: Images,
        *,
        method: ComposeMethod,
        labels: bool | Sequence[str] | None,
        columns: int | None,
        **options: Any,
    ) -> HttpRequest:
        loaded = self._compose_images(images, method, options.get("model"), labels, columns)
        return self._prepare_generate(prompt, loaded, **options)
