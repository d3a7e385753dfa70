"""Translation between a Gemini image request/answer and OpenAI's Images API (§8.1, §8.2). No I/O.

A request with input images becomes `POST /v1/images/edits` (multipart: `image`, or `image[]`
once per file, as openai-python sends them); without, `POST /v1/images/generations` (JSON).
The prompt is the text of the last user turn. Each `b64_json` of the answer comes back as an
`inlineData` part, its MIME type read from the image's first bytes.

Sizes: the channel lists the sizes its upstream accepts (default: gpt-image-1's). The request's
`aspectRatio` picks the size whose shape is nearest on a log scale (2:1 and 1:2 are equally far
from 1:1), ties broken by the pixel count nearest to what Gemini would have produced for that
ratio and `imageSize`. Without `aspectRatio`, text-to-image asks for 1:1 (Gemini's default) and
an edit leaves `size` out (the upstream follows the input image). With the default sizes:

| aspectRatio | size |
|---|---|
| 1:1 | 1024x1024 |
| 4:5, 3:4, 2:3, 9:16, 1:4, 1:8 | 1024x1536 |
| 5:4, 4:3, 3:2, 16:9, 21:9, 4:1, 8:1 | 1536x1024 |
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from bananagate.protocol import base64codec
from bananagate.protocol.catalog import ImageModel, extension_for
from bananagate.protocol.errors import invalid_argument
from bananagate.protocol.response import Usage
from bananagate.protocol.wire import GenerateContentRequest

DEFAULT_SIZES: tuple[str, ...] = ("1024x1024", "1536x1024", "1024x1536")
MODERATION_CODES = frozenset({"moderation_blocked", "content_policy_violation"})

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"RIFF", "image/webp"),
    (b"GIF8", "image/gif"),
)


def parse_size(size: str) -> tuple[int, int]:
    width, _, height = size.partition("x")
    return int(width), int(height)


def _ratio(ratio: str) -> float:
    w, _, h = ratio.partition(":")
    return int(w) / int(h)


def nearest_size(aspect_ratio: str, sizes: tuple[str, ...], target_pixels: int | None = None) -> str:
    """The size in `sizes` whose shape is nearest `aspect_ratio` (see module docstring)."""
    want = math.log(_ratio(aspect_ratio))

    def distance(size: str) -> tuple[float, float]:
        w, h = parse_size(size)
        shape = round(abs(math.log(w / h) - want), 9)
        pixels = abs(math.log(w * h) - math.log(target_pixels)) if target_pixels else 0.0
        return shape, pixels

    return min(sizes, key=distance)


@dataclass(frozen=True, slots=True)
class ImageFile:
    """One multipart file of an edits request."""

    field: str
    filename: str
    mime_type: str
    data: bytes


@dataclass(slots=True)
class OpenAIImageRequest:
    endpoint: Literal["generations", "edits"]
    fields: dict[str, str | int]
    files: list[ImageFile] = field(default_factory=list)
    size_label: str | None = None  # Gemini's imageSize, for estimating usage


def _edit_images(request: GenerateContentRequest) -> list[tuple[str, str]]:
    """(mimeType, Base64) of the images to edit: the last user turn's, else the last image in the
    conversation (a chat edit refers to the model's previous picture)."""
    last_user: list[tuple[str, str]] = []
    anywhere: list[tuple[str, str]] = []
    for content in request.contents:
        turn: list[tuple[str, str]] = []
        for part in content.parts:
            if part.file_data is not None:
                raise invalid_argument("fileData parts cannot be sent to an OpenAI images upstream.")
            blob = part.inline_data
            if blob is not None and blob.data and not part.thought:
                turn.append((blob.mime_type or "image/png", blob.data))
        anywhere.extend(turn)
        if (content.role or "user").lower() != "model":
            last_user = turn
    return last_user or anywhere[-1:]


def build_request(
    request: GenerateContentRequest, model: ImageModel, upstream_model: str, sizes: tuple[str, ...]
) -> OpenAIImageRequest:
    """The OpenAI request for a Gemini one. Raises ApiError(400) for what cannot be translated."""
    prompt = request.prompt_text()
    if not prompt:
        raise invalid_argument("An OpenAI images upstream needs a text prompt.")
    images = _edit_images(request)
    fields: dict[str, str | int] = {"model": upstream_model, "prompt": prompt, "n": 1}
    ratio = request.aspect_ratio or (None if images else "1:1")
    if ratio is not None and ratio in model.sizes:
        w, h = model.size_for(ratio, request.image_size if request.image_size in model.image_tokens else None)
        fields["size"] = nearest_size(ratio, sizes, w * h)
    # gpt-image models always answer in Base64 and ignore this; DALL·E would otherwise send URLs.
    fields["response_format"] = "b64_json"
    if not images:
        return OpenAIImageRequest("generations", fields, size_label=request.image_size)
    name = "image" if len(images) == 1 else "image[]"
    files = [
        ImageFile(name, f"image_{i}{extension_for(mime)}", mime, base64codec.decode(data))
        for i, (mime, data) in enumerate(images)
    ]
    return OpenAIImageRequest("edits", fields, files, size_label=request.image_size)


def sniff_mime(b64: str) -> str:
    """MIME type of Base64 image data, from its first bytes (PNG when unknown)."""
    head = b64[:24]
    try:
        raw = base64codec.decode(head[: len(head) - len(head) % 4])
    except ValueError:
        return "image/png"
    for magic, mime in _MAGIC:
        if raw.startswith(magic):
            return mime
    return "image/png"


def _usage(openai_usage: Any, model: ImageModel, size_label: str | None, images: int, prompt: str) -> Usage:
    if isinstance(openai_usage, dict) and "output_tokens" in openai_usage:
        details = openai_usage.get("input_tokens_details") or {}
        return Usage(
            prompt_tokens=int(openai_usage.get("input_tokens") or 0),
            prompt_image_tokens=int(details.get("image_tokens") or 0) if isinstance(details, dict) else 0,
            candidates_tokens=int(openai_usage.get("output_tokens") or 0),
            candidates_image_tokens=int(openai_usage.get("output_tokens") or 0),
        )
    # No usage from the upstream: bill what Gemini would have for this model and size.
    label = size_label if size_label in model.image_tokens else None
    image_tokens = model.tokens_for(label) * images
    return Usage(
        prompt_tokens=max(1, math.ceil(len(prompt) / 4)),
        candidates_tokens=image_tokens,
        candidates_image_tokens=image_tokens,
    )


def to_gemini(
    answer: dict[str, Any],
    *,
    model: ImageModel,
    model_version: str,
    response_id: str,
    want_text: bool,
    size_label: str | None,
    prompt: str,
) -> tuple[dict[str, Any], Usage, int]:
    """(GenerateContentResponse, its usage, image count) for an OpenAI images answer."""
    parts: list[dict[str, Any]] = []
    images = 0
    for item in answer.get("data") or []:
        if not isinstance(item, dict):
            continue
        revised = item.get("revised_prompt")
        if want_text and isinstance(revised, str) and revised:
            parts.append({"text": revised})
        data = item.get("b64_json")
        if isinstance(data, str) and data:
            parts.append({"inlineData": {"mimeType": sniff_mime(data), "data": data}})
            images += 1
    usage = _usage(answer.get("usage"), model, size_label, images, prompt)
    content: dict[str, Any] = {"role": "model"}
    if parts:
        content["parts"] = parts
    candidate = {"content": content, "finishReason": "STOP" if images else "NO_IMAGE", "index": 0}
    body = {
        "candidates": [candidate],
        "usageMetadata": usage.to_wire(),
        "modelVersion": model_version,
        "responseId": response_id,
    }
    return body, usage, images


def is_moderation_error(status: int, answer: Any) -> bool:
    """An OpenAI refusal on content grounds (a Gemini upstream would answer 200 IMAGE_SAFETY)."""
    if status != 400 or not isinstance(answer, dict) or not isinstance(answer.get("error"), dict):
        return False
    return answer["error"].get("code") in MODERATION_CODES


def safety_block(
    message: str, *, model_version: str, response_id: str, prompt: str
) -> tuple[dict[str, Any], Usage]:
    usage = Usage(prompt_tokens=max(1, math.ceil(len(prompt) / 4)))
    candidate = {
        "content": {"role": "model"},
        "finishReason": "IMAGE_SAFETY",
        "finishMessage": message,
        "index": 0,
    }
    body = {
        "candidates": [candidate],
        "usageMetadata": usage.to_wire(),
        "modelVersion": model_version,
        "responseId": response_id,
    }
    return body, usage
