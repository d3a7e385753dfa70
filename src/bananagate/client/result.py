"""The typed answer of a generate/edit/compose call."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from bananagate.protocol.catalog import MIME_EXTENSIONS, extension_for
from bananagate.protocol.response import Usage

# Suffixes that name an image format: a path ending in one of these gets the right one instead.
_IMAGE_SUFFIXES = frozenset({*MIME_EXTENSIONS.values(), ".jpeg", ".jpe", ".tif", ".tiff", ".bmp", ".bin"})


@dataclass(frozen=True, slots=True)
class GeneratedImage:
    """One image of an answer: its bytes exactly as the server sent them (decoded) and MIME type."""

    data: bytes
    mime_type: str
    thought_signature: str | None = None

    @property
    def extension(self) -> str:
        """`.png`, `.jpg`, `.webp`, ... as the MIME type implies (`.bin` when unknown)."""
        return extension_for(self.mime_type)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels, read from the image header."""
        with Image.open(io.BytesIO(self.data)) as image:
            return image.size

    def to_pil(self) -> Image.Image:
        image = Image.open(io.BytesIO(self.data))
        image.load()
        return image

    def path_for(self, stem_or_path: str | os.PathLike[str]) -> Path:
        """Where `save` writes: the suffix always matches the MIME type.

        `out` -> `out.jpg`; `out.png` holding a JPEG -> `out.jpg`; `shot.v2` -> `shot.v2.jpg`.
        """
        path = Path(stem_or_path)
        if path.suffix.lower() in _IMAGE_SUFFIXES:
            return path.with_suffix(self.extension)
        return path.with_name(path.name + self.extension)

    def save(self, stem_or_path: str | os.PathLike[str]) -> Path:
        """Write the bytes unchanged (no re-encoding) and return the path written."""
        path = self.path_for(stem_or_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.data)
        return path


@dataclass(slots=True)
class GenerateResult:
    """A parsed `GenerateContentResponse`.

    `images` holds every non-thought image in order; the final image (the one Gemini means as
    its answer) is the last, `.image`. `text` joins the non-thought text parts. `cost` is in US
    dollars when the server reports it, else None. `elapsed` and `attempts` cover the whole call,
    retries included.
    """

    images: list[GeneratedImage]
    text: str
    finish_reason: str | None
    usage: Usage
    raw: dict[str, Any]
    block_reason: str | None = None
    finish_message: str | None = None
    cost: float | None = None
    request_id: str | None = None
    model_version: str | None = None
    response_id: str | None = None
    # The candidate's content exactly as received: what a chat sends back next turn.
    content: dict[str, Any] = field(default_factory=dict)
    elapsed: float = 0.0
    attempts: int = 1

    @property
    def image(self) -> GeneratedImage | None:
        """The final image, or None when the answer has none."""
        return self.images[-1] if self.images else None

    def save(self, stem_or_path: str | os.PathLike[str]) -> list[Path]:
        """Save every image: the final one at `stem_or_path`, earlier ones with `-1`, `-2`, ...

        Returns the paths written, in `images` order.
        """
        base = Path(stem_or_path)
        paths: list[Path] = []
        for index, img in enumerate(self.images):
            if index == len(self.images) - 1:
                target = base
            else:
                target = img.path_for(base).with_name(f"{img.path_for(base).stem}-{index + 1}")
            paths.append(img.save(target))
        return paths
