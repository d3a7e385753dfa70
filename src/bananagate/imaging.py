"""Safe decoding of untrusted image bytes.

Images arrive from clients as Base64 and may be hostile: a few hundred bytes of PNG can claim
100000×100000 pixels and allocate tens of gigabytes once decoded. Every decode therefore checks
the header-declared size against a pixel budget *before* any pixel data is read, and turns
every way Pillow can fail into one small exception hierarchy the caller maps to a 400.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterable

from PIL import Image

DEFAULT_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "GIF")


class ImageRejected(ValueError):
    """Base of every refusal to decode an image; the message is safe to show to a client."""


class ImageInvalid(ImageRejected):
    """The bytes are not an image Pillow can read (truncated, corrupt, unknown format)."""


class ImageTooLarge(ImageRejected):
    """The declared pixel count exceeds the budget (or Pillow's own decompression-bomb limit)."""

    def __init__(self, message: str, size: tuple[int, int] | None = None) -> None:
        super().__init__(message)
        self.size = size


class ImageFormatNotAllowed(ImageRejected):
    """A real image, but in a format we do not accept."""

    def __init__(self, message: str, image_format: str | None = None) -> None:
        super().__init__(message)
        self.image_format = image_format


def decode_image(
    data: bytes,
    *,
    max_pixels: int,
    allowed_formats: Iterable[str] = DEFAULT_FORMATS,
    draft: tuple[int, int] | None = None,
) -> Image.Image:
    """Open, check and fully load `data`; the returned image owns its pixels (no file handle).

    `draft` lets JPEG decoding skip detail (DCT scaling) when only a preview of at least that
    size is needed; other formats ignore it. Raises an `ImageRejected` subclass on any problem.
    """
    allowed = {f.upper() for f in allowed_formats}
    if not data:
        raise ImageInvalid("Provided image is not valid: empty data")
    with warnings.catch_warnings():
        # Pillow only *warns* between MAX_IMAGE_PIXELS and twice that; treat it as fatal.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageTooLarge(f"Provided image is too large: {exc}") from None
        except Exception as exc:
            # Untrusted input: plugins raise OSError, SyntaxError, ValueError, struct.error... —
            # all mean the same thing to a client.
            raise ImageInvalid(f"Provided image is not valid: {_reason(exc)}") from None

        fmt = (image.format or "").upper()
        if fmt not in allowed:
            image.close()
            raise ImageFormatNotAllowed(
                f"Provided image format {fmt or 'unknown'} is not allowed "
                f"(allowed: {', '.join(sorted(allowed))})",
                fmt or None,
            )
        width, height = image.size
        # Checked before load(): nothing proportional to the claimed size has been allocated yet.
        if width <= 0 or height <= 0:
            image.close()
            raise ImageInvalid(f"Provided image is not valid: bad dimensions {width}x{height}")
        if width * height > max_pixels:
            image.close()
            raise ImageTooLarge(
                f"Provided image is too large: {width}x{height} pixels exceeds the limit of "
                f"{max_pixels} pixels",
                (width, height),
            )
        try:
            if draft is not None and fmt == "JPEG":
                image.draft("RGB", draft)
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            image.close()
            raise ImageTooLarge(f"Provided image is too large: {exc}", (width, height)) from None
        except Exception as exc:
            image.close()
            raise ImageInvalid(f"Provided image is not valid: {_reason(exc)}") from None
    return image


def image_size_of(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header alone, or None when unreadable.

    Images beyond Pillow's decompression-bomb threshold also give None: Pillow refuses them
    while opening, and they would be rejected by `decode_image` anyway.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as image:
                return image.size
        except Exception:
            return None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."


__all__ = [
    "DEFAULT_FORMATS",
    "ImageFormatNotAllowed",
    "ImageInvalid",
    "ImageRejected",
    "ImageTooLarge",
    "decode_image",
    "image_size_of",
]
