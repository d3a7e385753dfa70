"""Building `generateContent` requests: pure functions from arguments to an `HttpRequest`.

Bodies are camelCase with bare standard Base64, text before images as the guide shows
(protocol reference §3). What the model table knows (input image limit, ratios, sizes) is
checked here, so a call that cannot succeed fails before it costs a request; unknown models
(a newer one behind CometAPI, say) are passed through unchecked.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import orjson

from bananagate import __version__
from bananagate.client.config import ClientConfig
from bananagate.client.errors import InvalidInputError, TooManyImagesError
from bananagate.client.inputs import InputImage
from bananagate.protocol.catalog import find_model, strip_model_prefix

USER_AGENT = f"bananagate-python/{__version__}"
IDEMPOTENCY_HEADER = "Idempotency-Key"


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """Everything needed to send one request; the clients only add the I/O."""

    method: str
    url: str
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    model: str = ""

    @property
    def content(self) -> bytes:
        return orjson.dumps(self.body)

    def with_idempotency_key(self) -> HttpRequest:
        """This request with an `Idempotency-Key`, unless it has one. The clients add it once per
        call and send it on every retry of that call, so a gateway that already answered (the
        reply was lost on the way) replays that answer instead of generating and charging twice."""
        if any(name.lower() == IDEMPOTENCY_HEADER.lower() for name in self.headers):
            return self
        headers = {**self.headers, IDEMPOTENCY_HEADER: str(uuid.uuid4())}
        return dataclasses.replace(self, headers=headers)


def image_part(image: InputImage) -> dict[str, Any]:
    return {"inlineData": {"mimeType": image.mime_type, "data": image.b64()}}


def user_turn(prompt: str, images: Sequence[InputImage] = ()) -> dict[str, Any]:
    """One user `Content`: the prompt text, then each image."""
    parts: list[dict[str, Any]] = []
    if prompt:
        parts.append({"text": prompt})
    parts.extend(image_part(img) for img in images)
    if not parts:
        raise InvalidInputError("a request needs a prompt or at least one image")
    return {"role": "user", "parts": parts}


def count_user_images(contents: Sequence[Mapping[str, Any]]) -> int:
    """Images in non-model turns: what the server counts against the model's limit."""
    total = 0
    for content in contents:
        if str(content.get("role") or "user").lower() == "model":
            continue
        for part in content.get("parts") or []:
            if isinstance(part, dict) and ("inlineData" in part or "inline_data" in part):
                total += 1
    return total


def normalize_size(image_size: str | int | None) -> str | None:
    # Gemini rejects a lowercase "2k"; accepting it here costs nothing and saves a 400.
    return None if image_size is None else str(image_size).strip().upper()


def check_request(
    model: str, contents: Sequence[Mapping[str, Any]], aspect_ratio: str | None, image_size: str | None
) -> None:
    """Refuse locally what the model table says the server will refuse."""
    info = find_model(model)
    if info is None:
        return
    count = count_user_images(contents)
    if count > info.max_input_images:
        raise TooManyImagesError(info.id, count, info.max_input_images)
    if aspect_ratio is not None and aspect_ratio not in info.sizes:
        raise InvalidInputError(
            f"{info.id} does not support aspect ratio {aspect_ratio!r}; "
            f"supported: {', '.join(info.aspect_ratios)}"
        )
    if image_size is not None and image_size not in info.image_tokens:
        raise InvalidInputError(
            f"{info.id} does not support image size {image_size!r}; supported: {', '.join(info.image_sizes)}"
        )


def generate_body(
    contents: Sequence[Mapping[str, Any]],
    *,
    aspect_ratio: str | None = None,
    image_size: str | None = None,
    response_modalities: Sequence[str] = ("TEXT", "IMAGE"),
) -> dict[str, Any]:
    config: dict[str, Any] = {"responseModalities": list(response_modalities)}
    image_config: dict[str, str] = {}
    if aspect_ratio is not None:
        image_config["aspectRatio"] = aspect_ratio
    if image_size is not None:
        image_config["imageSize"] = image_size
    if image_config:
        config["imageConfig"] = image_config
    return {"contents": [dict(c) for c in contents], "generationConfig": config}


def model_url(config: ClientConfig, model: str, method: str = "generateContent") -> str:
    model_id = strip_model_prefix(model)
    if not model_id or any(bad in model_id for bad in ("..", "?", "&", "/", "#")):
        raise InvalidInputError(f"invalid model name {model!r}")
    return f"{config.base_url}/{config.api_version}/models/{quote(model_id, safe='-._')}:{method}"


def http_request(
    config: ClientConfig,
    model: str,
    body: dict[str, Any],
    extra_headers: Mapping[str, str] | None = None,
) -> HttpRequest:
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        **config.headers,
        **config.auth_headers(),
        **(extra_headers or {}),
    }
    return HttpRequest(
        method="POST",
        url=model_url(config, model),
        body=body,
        headers=headers,
        params=config.auth_params(),
        model=strip_model_prefix(model),
    )


def build_generate(
    config: ClientConfig,
    contents: Sequence[Mapping[str, Any]],
    *,
    model: str | None = None,
    aspect_ratio: str | None = None,
    image_size: str | int | None = None,
    headers: Mapping[str, str] | None = None,
) -> HttpRequest:
    """Check and build one `generateContent` request for `contents` (the full conversation)."""
    model_id = model or config.default_model
    size = normalize_size(image_size)
    check_request(model_id, contents, aspect_ratio, size)
    body = generate_body(contents, aspect_ratio=aspect_ratio, image_size=size)
    return http_request(config, model_id, body, headers)
