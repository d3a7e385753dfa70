"""The offline emulator: answers `generateContent` like a Gemini image model, without a network.

Answers are deterministic: the image, texts, thought signature and token counts derive from a
SHA-256 fingerprint of the canonical request plus the model id, so the same request always gets
the same bytes. Faults are injected on demand (see `faults` for the directive grammar).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import math
import secrets
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
import orjson
from PIL import Image, ImageOps

from bananagate.imaging import ImageRejected, ImageTooLarge, decode_image
from bananagate.protocol import base64codec
from bananagate.protocol.catalog import ImageModel
from bananagate.protocol.errors import FieldViolation, invalid_argument
from bananagate.protocol.response import Candidate, Usage, generate_response, image_part, text_part
from bananagate.protocol.wire import GenerateContentRequest
from bananagate.providers.base import Answer, Call, UpstreamError
from bananagate.providers.emulator import faults
from bananagate.providers.emulator.faults import Directives
from bananagate.providers.emulator.render import Scene, Tile, render

# Inputs are shrunk to this before composing: the canvas is drawn at ~2 MP anyway, and keeping
# 14 full-size decoded inputs alive at once would cost gigabytes.
PREVIEW_SIZE = 1600
# Bound on the `times=N` counters, so a long-running gateway's memory stays flat.
MAX_COUNTERS = 10_000
MAX_QUOTED_PROMPT = 1000
NEUTRAL: tuple[int, int, int] = (128, 128, 128)


@dataclass(slots=True)
class _Job:
    """What the emulator derived from one call before doing any real work."""

    call: Call
    faults: Directives
    prompt: str  # the prompt to draw and quote (directives removed)
    fingerprint: bytes
    response_id: str


@dataclass(slots=True)
class _Inputs:
    """Decoded inputs and the output geometry they imply."""

    tiles: tuple[Tile, ...]
    ratio: str
    size_label: str
    width: int
    height: int


@dataclass(slots=True)
class _Outcome:
    """The answer minus the image pixels: parts before the image, finish, and token counts."""

    parts: list[dict[str, Any]]
    want_image: bool
    finish_reason: str
    finish_message: str | None
    prompt_tokens: int
    prompt_image_tokens: int
    image_tokens: int
    thoughts_tokens: int
    signature: bytes | None
    text_tokens: list[int] = field(default_factory=list)

    def usage(self, parts_sent: int, *, final: bool) -> Usage:
        text = sum(self.text_tokens[:parts_sent])
        image = self.image_tokens if final and self.want_image else 0
        return Usage(
            prompt_tokens=self.prompt_tokens,
            prompt_image_tokens=self.prompt_image_tokens,
            candidates_tokens=text + image,
            candidates_image_tokens=image,
            thoughts_tokens=self.thoughts_tokens,
        )


class EmulatorProvider:
    """A `Provider` that draws images locally (see module docstring)."""

    name = "emulator"

    def __init__(self, *, faults_enabled: bool = True, max_image_pixels: int = 64_000_000) -> None:
        self.faults_enabled = faults_enabled
        self.max_image_pixels = max_image_pixels
        self._counters: OrderedDict[str, int] = OrderedDict()

    # --- Provider interface -------------------------------------------------------------------

    async def generate(self, call: Call) -> Answer:
        job = await self._start(call)
        if job.faults.block:
            return self._blocked(job)
        inputs = await anyio.to_thread.run_sync(self._decode_inputs, call.full_request(), call.model)
        outcome = self._outcome(job, inputs)
        parts = list(outcome.parts)
        if outcome.want_image:
            parts.append(await self._image_part(job, inputs, outcome))
        candidate = Candidate(parts, outcome.finish_reason, outcome.finish_message)
        usage = outcome.usage(len(outcome.parts), final=True)
        return Answer(
            body=self._dump(generate_response(candidate, usage, **self._ids(job))),
            usage=usage,
            finish_reason=outcome.finish_reason,
            image_count=1 if outcome.want_image else 0,
        )

    async def stream(self, call: Call) -> AsyncIterator[bytes]:
        """One complete response per event: [thought] → [text] → image with finish and usage."""
        job = await self._start(call)
        if job.faults.block:
            yield bytes(self._blocked(job).body)  # already bytes: no copy
            return
        inputs = await anyio.to_thread.run_sync(self._decode_inputs, call.full_request(), call.model)
        outcome = self._outcome(job, inputs)
        count = max(1, len(outcome.parts) + (1 if outcome.want_image else 0))
        error_after = job.faults.stream_error_after
        for index in range(count):
            if error_after is not None and index >= error_after:
                break
            if index and job.faults.event_delay:
                await anyio.sleep(job.faults.event_delay)
            final = index == count - 1
            if index < len(outcome.parts):
                parts = [outcome.parts[index]]
            elif outcome.want_image:
                parts = [await self._image_part(job, inputs, outcome)]
            else:
                parts = []
            candidate = Candidate(
                parts,
                outcome.finish_reason if final else None,
                outcome.finish_message if final else None,
            )
            usage = outcome.usage(min(index + 1, len(outcome.parts)), final=final)
            yield self._dump(generate_response(candidate, usage, **self._ids(job)))
        if error_after is not None:
            if job.faults.event_delay:
                await anyio.sleep(job.faults.event_delay)
            yield self._dump(faults.stream_error().to_dict())

    async def aclose(self) -> None:
        self._counters.clear()

    # --- steps ----------------------------------------------------------------------------------

    async def _start(self, call: Call) -> _Job:
        """Directives, fingerprint, `times` bookkeeping, then the delay and status faults."""
        raw_prompt = call.request.prompt_text()
        if self.faults_enabled:
            directives, prompt = faults.resolve(call.headers, raw_prompt)
        else:
            directives, prompt = Directives(), raw_prompt
        # Hashing a 20 MB body is real work: keep it off the event loop.
        # The emulator looks at the images: a lean request is parsed in full (in the thread too).
        fingerprint = await anyio.to_thread.run_sync(lambda: fingerprint_of(call.full_request(), call.model))
        if directives.times is not None and not self._count(fingerprint, directives):
            directives = Directives()
        job = _Job(call, directives, prompt, fingerprint, response_id_for(call.request_id))
        if directives.delay:
            await anyio.sleep(directives.delay)
        if directives.status is not None:
            error, delay = faults.status_error(directives)
            raise UpstreamError(error, retryable=directives.retryable, retry_after=delay)
        return job

    def _count(self, fingerprint: bytes, directives: Directives) -> bool:
        """Record one more request for this fingerprint; True while within `times`."""
        key = hashlib.sha256(fingerprint + directives.to_string().encode()).hexdigest()
        seen = self._counters.pop(key, 0) + 1
        self._counters[key] = seen
        while len(self._counters) > MAX_COUNTERS:
            self._counters.popitem(last=False)
        return seen <= (directives.times or 0)

    def _blocked(self, job: _Job) -> Answer:
        text_tokens, image_tokens = self._prompt_tokens(job.call)
        usage = Usage(prompt_tokens=text_tokens + image_tokens, prompt_image_tokens=image_tokens)
        body = {
            "promptFeedback": {"blockReason": job.faults.block},
            "usageMetadata": usage.to_wire(),
            "modelVersion": job.call.model_id,
            "responseId": job.response_id,
        }
        return Answer(body=self._dump(body), usage=usage, finish_reason=None, image_count=0)

    def _decode_inputs(self, request: GenerateContentRequest, model: ImageModel) -> _Inputs:
        """Decode every input image (400 on bad ones) and pick the output geometry. Runs in a thread."""
        tiles: list[Tile] = []
        last_size: tuple[int, int] | None = None
        for image in request.input_images():
            if image.data is None:
                tiles.append(Tile(None, f"fileData (not fetched)\n{image.uri or '(no fileUri)'}"))
                continue
            tile = self._decode_one(image.data, image.path)
            if tile.image is not None:
                last_size = tile.image.size
                tile.image.thumbnail((PREVIEW_SIZE, PREVIEW_SIZE), Image.Resampling.BILINEAR)
            tiles.append(tile)

        ratio = request.aspect_ratio
        if ratio is None:
            ratio = model.closest_ratio(*last_size) if last_size else "1:1"
        size_label = request.image_size or model.default_image_size
        # The caller validated both; re-checked so a bypass is a 400, not a KeyError.
        if ratio not in model.sizes or size_label not in model.image_tokens:
            raise invalid_argument(f"Unsupported image configuration {ratio} / {size_label} for {model.id}.")
        width, height = model.size_for(ratio, size_label)
        return _Inputs(tuple(tiles), ratio, size_label, width, height)

    def _decode_one(self, data: str, path: str) -> Tile:
        not_valid = "Provided image is not valid"  # Google's wording (§3.2)
        try:
            raw = base64codec.decode(data)
        except ValueError:
            raise invalid_argument(not_valid, [FieldViolation(f"{path}.data", not_valid)]) from None
        try:
            decoded = decode_image(raw, max_pixels=self.max_image_pixels, draft=(PREVIEW_SIZE, PREVIEW_SIZE))
        except ImageTooLarge as exc:
            raise invalid_argument(str(exc), [FieldViolation(f"{path}.data", str(exc))]) from None
        except ImageRejected:
            if _looks_like_heif(raw):
                # Pillow has no HEIF decoder without a plugin; Gemini accepts HEIC, so draw a stand-in.
                return Tile(None, "HEIC/HEIF image (not decoded by the emulator)")
            raise invalid_argument(not_valid, [FieldViolation(f"{path}.data", not_valid)]) from None
        return Tile(_to_rgb(decoded))

    def _outcome(self, job: _Job, inputs: _Inputs) -> _Outcome:
        call, f = job.call, job.faults
        model, request = call.model, call.request
        modalities = {m.upper() for m in request.response_modalities}
        want_image = "IMAGE" in modalities or "TEXT" not in modalities
        quoted = _quote(job.prompt)
        size_text = f"{inputs.size_label} {inputs.width}x{inputs.height}"
        label = f"bananagate emulator, {call.model_id}, {inputs.ratio}, {size_text}"

        parts: list[dict[str, Any]] = []
        finish, message = "STOP", None
        if model.thinking and request.include_thoughts:
            parts.append(text_part(_thought_text(job, inputs), thought=True))
        if f.finish is not None and f.finish != "STOP":
            finish, want_image = f.finish, False
            if f.finish in faults.TEXT_FINISH_REASONS:
                parts.append(text_part(_finish_text(f.finish, quoted, label)))
            else:
                parts, message = [], _finish_message(f.finish)
        elif f.text_only:
            want_image = False
            parts.append(text_part(f"Here is a text-only answer for: {quoted} ({label}; no image)"))
        elif "TEXT" in modalities:
            parts.append(text_part(f"Here is your image: {quoted} ({label})"))

        signature = _signature(job.fingerprint) if model.thinking else None
        if signature is not None and not want_image:
            # Without an image the signature rides on the last non-thought part (§4.1).
            for part in reversed(parts):
                if not part.get("thought"):
                    part["thoughtSignature"] = base64codec.encode(signature)
                    break
        text_tokens, prompt_image_tokens = self._prompt_tokens(call)
        return _Outcome(
            parts=parts,
            want_image=want_image,
            finish_reason=finish,
            finish_message=message,
            prompt_tokens=text_tokens + prompt_image_tokens,
            prompt_image_tokens=prompt_image_tokens,
            image_tokens=model.tokens_for(inputs.size_label) if want_image else 0,
            thoughts_tokens=100 + job.fingerprint[4] % 151 if model.thinking else 0,
            signature=signature,
            text_tokens=[0 if p.get("thought") else _tokens(p["text"]) for p in parts],
        )

    async def _image_part(self, job: _Job, inputs: _Inputs, outcome: _Outcome) -> dict[str, Any]:
        scene = Scene(
            width=inputs.width,
            height=inputs.height,
            mime_type=job.call.model.output_mime_type,
            prompt=job.prompt,
            model_id=job.call.model_id,
            ratio=inputs.ratio,
            size_label=inputs.size_label,
            fingerprint=job.fingerprint,
            tiles=inputs.tiles,
        )
        data = await anyio.to_thread.run_sync(render, scene)
        return image_part(data, scene.mime_type, thought_signature=outcome.signature)

    # --- small helpers --------------------------------------------------------------------------

    @staticmethod
    def _prompt_tokens(call: Call) -> tuple[int, int]:
        """(text tokens, image tokens) of the prompt."""
        images = len(call.request.input_images())
        return _tokens(call.request.prompt_text()), images * call.model.input_image_tokens

    @staticmethod
    def _ids(job: _Job) -> dict[str, str]:
        """Keyword arguments of `generate_response` naming the model and the response."""
        return {"model_version": job.call.model_id, "response_id": job.response_id}

    @staticmethod
    def _dump(obj: dict[str, Any]) -> bytes:
        return orjson.dumps(obj)  # compact, one line: one SSE event each


def fingerprint_of(request: GenerateContentRequest, model: ImageModel) -> bytes:
    """SHA-256 of the model id and the canonical (camelCase, sorted, standard Base64) request."""
    canonical = orjson.dumps(request.to_wire(), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(model.id.encode() + b"\n" + canonical).digest()


def response_id_for(request_id: str) -> str:
    """A Google-looking opaque id (20 URL-safe characters), stable per gateway request id."""
    if not request_id:
        return secrets.token_urlsafe(15)
    digest = hashlib.sha256(b"bananagate-response:" + request_id.encode()).digest()
    return base64.urlsafe_b64encode(digest[:15]).decode()


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def _quote(prompt: str) -> str:
    text = prompt if len(prompt) <= MAX_QUOTED_PROMPT else prompt[:MAX_QUOTED_PROMPT] + "…"
    return f'"{text}"'


def _signature(fingerprint: bytes) -> bytes:
    return hashlib.sha256(b"bananagate-thought-signature:" + fingerprint).digest() + fingerprint[:16]


def _thought_text(job: _Job, inputs: _Inputs) -> str:
    hue = int.from_bytes(job.fingerprint[0:2], "big") * 360 // 65536
    using = f" from {len(inputs.tiles)} input image(s)" if inputs.tiles else ""
    return (
        f"**Planning the image**\n\nThe request asks for {_quote(job.prompt)}. I'll compose a "
        f"{inputs.ratio} picture at {inputs.size_label} ({inputs.width}x{inputs.height}){using}, "
        f"with a palette around hue {hue} degrees, and write the prompt on it so it is easy to check."
    )


def _finish_text(reason: str, quoted: str, label: str) -> str:
    if reason == "NO_IMAGE":
        return f"I could not produce an image for {quoted}. ({label}; emulated finishReason NO_IMAGE)"
    # MAX_TOKENS: an answer cut short, as a real truncated one would be.
    full = f"Here is your image: {quoted} ({label})"
    return full[: max(1, len(full) // 2)]


def _finish_message(reason: str) -> str:
    return (
        "The model output could not be generated. This output was filtered with finish reason "
        f"{reason} (emulated by bananagate). Try rephrasing your prompt."
    )


def _looks_like_heif(data: bytes) -> bool:
    """ISO-BMFF container (`....ftyp`), the shape of HEIC/HEIF/AVIF files."""
    return len(data) >= 12 and data[4:8] == b"ftyp"


def _to_rgb(image: Image.Image) -> Image.Image:
    """Upright RGB: EXIF orientation applied, transparency flattened onto grey."""
    # A broken EXIF block is no reason to refuse an otherwise fine image.
    with contextlib.suppress(Exception):
        image = ImageOps.exif_transpose(image)
    if image.mode == "RGB":
        return image
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (*NEUTRAL, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")
