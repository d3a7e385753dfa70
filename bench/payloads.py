"""The bytes the benchmark sends and answers: request bodies and Gemini image responses.

Images are real PNGs of random noise (incompressible, so a PNG of N bytes is about N bytes of
pixels), sized so that their Base64 is close to the size asked for. Everything is seeded, so a
run sends the same bytes every time.
"""

from __future__ import annotations

import base64
import io
import math
import random
from functools import lru_cache
from typing import Any

import orjson

MB = 1_000_000  # the benchmark speaks decimal megabytes: "1.4 MB" is 1,400,000 bytes

MODEL = "gemini-2.5-flash-image"  # takes up to 3 input images, so all workloads fit one model


@lru_cache(maxsize=8)
def noise_png(b64_bytes: int, seed: int = 0) -> bytes:
    """A PNG of random pixels whose Base64 is about `b64_bytes` long (within a few hundred bytes)."""
    from PIL import Image  # the project depends on Pillow; imported here to keep start-up light

    raw = max(48, b64_bytes * 3 // 4)
    side = max(4, math.isqrt(raw // 3))
    rng = random.Random(seed)
    pixels = rng.randbytes(side * side * 3)
    image = Image.frombytes("RGB", (side, side), pixels)
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=1)
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def usage_metadata(prompt_tokens: int = 12, image_tokens: int = 1290) -> dict[str, Any]:
    return {
        "promptTokenCount": prompt_tokens,
        "candidatesTokenCount": image_tokens,
        "totalTokenCount": prompt_tokens + image_tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}],
        "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": image_tokens}],
    }


def answer_json(answer_bytes: int) -> bytes:
    """A `GenerateContentResponse` with one text part and one PNG, about `answer_bytes` long."""
    image = noise_png(max(64, answer_bytes - 600), seed=1)
    body = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "Here is your image."},
                        {"inlineData": {"mimeType": "image/png", "data": b64(image)}},
                    ],
                },
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": usage_metadata(),
        "modelVersion": MODEL,
        "responseId": "bench-response",
    }
    return orjson.dumps(body)


def answer_sse(answer_bytes: int) -> bytes:
    """The same answer as `answer_json` as Google streams it (protocol reference §1.3): a text
    event, then the whole image with `finishReason` and usage in one event; CRLF framing."""
    image = noise_png(max(64, answer_bytes - 600), seed=1)
    first = {
        "candidates": [{"content": {"role": "model", "parts": [{"text": "Here is "}]}, "index": 0}],
        "modelVersion": MODEL,
        "responseId": "bench-stream",
    }
    last = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "your image."},
                        {"inlineData": {"mimeType": "image/png", "data": b64(image)}},
                    ],
                },
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": usage_metadata(),
        "modelVersion": MODEL,
        "responseId": "bench-stream",
    }
    return b"".join(b"data: " + orjson.dumps(event) + b"\r\n\r\n" for event in (first, last))


def request_body(prompt: str, images: list[bytes]) -> bytes:
    """A `generateContent` body: the prompt, then each image as `inline_data` (the guide's casing)."""
    parts: list[dict[str, Any]] = [{"text": prompt}]
    parts += [{"inline_data": {"mime_type": "image/png", "data": b64(img)}} for img in images]
    body = {
        "contents": [{"role": "user", "parts": parts}],
        "generationConfig": {"responseModalities": ["TEXT", "IMAGE"], "imageConfig": {"aspectRatio": "1:1"}},
    }
    return orjson.dumps(body)


def split_sse(stream: bytes) -> list[bytes]:
    """The frames of an SSE body (each ending with its blank line), for writing one at a time."""
    frames = []
    for piece in stream.split(b"\r\n\r\n"):
        if piece:
            frames.append(piece + b"\r\n\r\n")
    return frames
