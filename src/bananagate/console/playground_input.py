"""The playground form -> a Gemini `generateContent` body, exactly as an API client would send it.

Beyond the model's input-image limit the images can be combined into one labelled collage (the
guide's "Method 1"), built here with the SDK's `make_collage`; otherwise too many images is an
error the page shows before anything is sent.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson
from starlette.datastructures import FormData, UploadFile

from bananagate.protocol import base64codec
from bananagate.protocol.catalog import INPUT_IMAGE_MIME_TYPES, ImageModel

if TYPE_CHECKING:
    from PIL import Image

PROMPT_MAX_CHARS = 20_000
MAX_UPLOADS = 32
COLLAGE_CELL = 512


class PlaygroundError(ValueError):
    """Something wrong with the form; the message is shown next to it."""


@dataclass
class PlaygroundInput:
    prompt: str
    model: ImageModel
    model_id: str
    aspect_ratio: str | None = None
    image_size: str | None = None
    images: list[tuple[str, bytes]] = field(default_factory=list)  # (MIME type, bytes)
    collage: bool = False

    @property
    def needs_collage(self) -> bool:
        return len(self.images) > self.model.max_input_images


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


async def read_form(form: FormData, models: dict[str, ImageModel]) -> PlaygroundInput:
    """Check the fields against the chosen model's tables; read the uploaded images."""
    prompt = _text(form, "prompt")
    if not prompt:
        raise PlaygroundError("Write a prompt.")
    if len(prompt) > PROMPT_MAX_CHARS:
        raise PlaygroundError(f"The prompt is longer than {PROMPT_MAX_CHARS} characters.")
    model_id = _text(form, "model")
    model = models.get(model_id)
    if model is None:
        raise PlaygroundError(f"Unknown or unserved model {model_id!r}.")
    ratio = _text(form, "aspect_ratio") or None
    if ratio is not None and ratio not in model.sizes:
        raise PlaygroundError(
            f"{model.id} has no aspect ratio {ratio}: choose one of {', '.join(model.sizes)}."
        )
    size = _text(form, "image_size") or None
    if size is not None and size not in model.image_tokens:
        raise PlaygroundError(f"{model.id} has no size {size}: choose one of {', '.join(model.image_sizes)}.")
    uploads = [f for f in form.getlist("images") if isinstance(f, UploadFile) and f.filename]
    if len(uploads) > MAX_UPLOADS:
        raise PlaygroundError(f"At most {MAX_UPLOADS} images at once.")
    images: list[tuple[str, bytes]] = []
    for upload in uploads:
        mime = (upload.content_type or "").split(";")[0].strip().lower()
        if mime == "image/jpg":
            mime = "image/jpeg"
        if mime not in INPUT_IMAGE_MIME_TYPES:
            raise PlaygroundError(f"{upload.filename}: not a PNG, JPEG, WebP, HEIC or HEIF image.")
        data = await upload.read()
        if not data:
            raise PlaygroundError(f"{upload.filename} is empty.")
        images.append((mime, data))
    result = PlaygroundInput(prompt, model, model_id, ratio, size, images, form.get("collage") == "on")
    if result.needs_collage and not result.collage:
        raise PlaygroundError(
            f"{model.id} takes at most {model.max_input_images} images and you gave {len(images)}: "
            "tick “combine into a collage” or remove some."
        )
    return result


def collage_bytes(images: list[tuple[str, bytes]], max_pixels: int) -> bytes:
    """One PNG grid of the images, tiles numbered 1..n (blocking: decodes every image)."""
    # Imported here: `bananagate.client` is the whole SDK, httpx included (~3 MB a gateway would
    # otherwise carry for a button few press).
    from bananagate.client.collage import make_collage
    from bananagate.imaging import ImageRejected, decode_image

    decoded: list[Image.Image] = []
    try:
        for index, (_, data) in enumerate(images, start=1):
            try:
                decoded.append(decode_image(data, max_pixels=max_pixels, draft=(COLLAGE_CELL, COLLAGE_CELL)))
            except ImageRejected as exc:
                raise PlaygroundError(f"Image {index}: {exc}") from None
        canvas = make_collage(decoded, cell=COLLAGE_CELL, labels=[str(i) for i in range(1, len(decoded) + 1)])
    finally:
        for image in decoded:
            image.close()
    out = io.BytesIO()
    canvas.save(out, format="PNG")
    return out.getvalue()


def request_body(data: PlaygroundInput, max_pixels: int) -> bytes:
    """The `generateContent` JSON (blocking when a collage has to be made)."""
    images = data.images
    if data.needs_collage:
        images = [("image/png", collage_bytes(images, max_pixels))]
    parts: list[dict[str, object]] = [{"text": data.prompt}]
    parts += [{"inlineData": {"mimeType": mime, "data": base64codec.encode(raw)}} for mime, raw in images]
    image_config: dict[str, str] = {}
    if data.aspect_ratio:
        image_config["aspectRatio"] = data.aspect_ratio
    # Only sent when chosen, and not to single-size models (2.5 Flash has no `imageSize` knob).
    if data.image_size and len(data.model.image_sizes) > 1:
        image_config["imageSize"] = data.image_size
    config: dict[str, object] = {"responseModalities": ["TEXT", "IMAGE"]}
    if image_config:
        config["imageConfig"] = image_config
    return orjson.dumps({"contents": [{"role": "user", "parts": parts}], "generationConfig": config})
