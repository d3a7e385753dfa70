"""OpenAI `size` strings -> Gemini `imageConfig` (aspect ratio and image size label).

OpenAI clients ask for pixels (`"1024x1536"`); Gemini image models take a ratio from a fixed
list and a size label (`1K`, `2K`, ...), and produce the pixel size their own table gives for
that pair. The mapping is one documented table (README, "OpenAI-compatible API"):

* the OpenAI sizes `1024x1024`, `1536x1024`, `1024x1536`, `1792x1024`, `1024x1792` and
  `2048x2048` map to the nearest Gemini ratio at 1K (2K for `2048x2048`);
* `auto` sends no `imageConfig`: the model's default (1:1 for text prompts, the input's ratio
  for edits) at its default size;
* the `WxH` of every entry of every Gemini output table (protocol reference §6.2-6.4) selects
  that entry's ratio and size label. No two tables give one `WxH` different meanings, so the
  union is unambiguous; the model then draws its own pixel size for the pair (asking
  gemini-3-pro-image-preview for 2.5 Flash's 16:9 `1344x768` gives 16:9 1K = 1376x768).

A pair the chosen model does not offer (a 1:4 ratio on 3 Pro, `2048x2048` on the 1K-only 2.5
Flash) is refused rather than quietly degraded: a client asking for pixels should learn it
will not get them. Pure data and lookups; no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bananagate.protocol.catalog import MODELS, ImageModel

AUTO = "auto"

# OpenAI's own sizes (DALL-E 3 / gpt-image) -> (ratio, size label). 1792x1024 is 1.75:1, whose
# nearest Gemini ratio is 16:9 (1.78:1); 1536x1024 is exactly 3:2.
OPENAI_SIZES: dict[str, tuple[str, str]] = {
    "1024x1024": ("1:1", "1K"),
    "1536x1024": ("3:2", "1K"),
    "1024x1536": ("2:3", "1K"),
    "1792x1024": ("16:9", "1K"),
    "1024x1792": ("9:16", "1K"),
    "2048x2048": ("1:1", "2K"),
}


def _gemini_table() -> dict[str, tuple[str, str]]:
    table: dict[str, tuple[str, str]] = {}
    for model in MODELS:
        for ratio, by_label in model.sizes.items():
            for label, (width, height) in by_label.items():
                key = f"{width}x{height}"
                previous = table.setdefault(key, (ratio, label))
                # Import-time guarantee behind "the union is unambiguous" above.
                if previous != (ratio, label):
                    raise AssertionError(f"{key} means both {previous} and {(ratio, label)}")
    return table


GEMINI_SIZES: dict[str, tuple[str, str]] = _gemini_table()

# Every size string we accept (besides `auto`), in the order the README lists them.
SIZE_TABLE: dict[str, tuple[str, str]] = {**OPENAI_SIZES, **GEMINI_SIZES}

_SIZE_RE = re.compile(r"\s*(\d{1,6})\s*[x×X*]\s*(\d{1,6})\s*")


@dataclass(frozen=True, slots=True)
class SizeChoice:
    """What a `size` means for one model: `None` fields leave the choice to the model."""

    aspect_ratio: str | None
    image_size: str | None

    def image_config(self, model: ImageModel) -> dict[str, str]:
        """The Gemini `imageConfig` object (camelCase) for this choice; empty for `auto`."""
        config: dict[str, str] = {}
        if self.aspect_ratio is not None:
            config["aspectRatio"] = self.aspect_ratio
        # A model with a single size (2.5 Flash: 1K only) is not sent `imageSize` at all: how
        # the real service treats it there is unconfirmed (protocol reference §3.3).
        if self.image_size is not None and len(model.image_tokens) > 1:
            config["imageSize"] = self.image_size
        return config

    def pixels(self, model: ImageModel) -> tuple[int, int] | None:
        """The pixel size the model produces for this choice, when it is known in advance."""
        if self.aspect_ratio is None:
            return None
        return model.size_for(self.aspect_ratio, self.image_size)


class SizeError(ValueError):
    """A `size` that is malformed or not available on the model; the message is for the client."""


def normalize(size: str) -> str:
    """`" 1024 X 1024 "` -> `"1024x1024"`; anything else is returned lower-cased and stripped."""
    match = _SIZE_RE.fullmatch(size)
    if match is None:
        return size.strip().lower()
    return f"{int(match.group(1))}x{int(match.group(2))}"


def sizes_for(model: ImageModel) -> list[str]:
    """Every size string that works on `model`, `auto` first."""
    return [AUTO] + [s for s, (r, label) in SIZE_TABLE.items() if _offers(model, r, label)]


def resolve_size(size: str | None, model: ImageModel) -> SizeChoice:
    """The ratio and size label `size` stands for on `model`; raises SizeError when it has none."""
    if size is None:
        return SizeChoice(None, None)
    key = normalize(size)
    if key == AUTO:
        return SizeChoice(None, None)
    entry = SIZE_TABLE.get(key)
    if entry is None:
        raise SizeError(
            f"Invalid size {size!r}. Supported values for {model.id} are: {', '.join(sizes_for(model))}."
        )
    ratio, label = entry
    if not _offers(model, ratio, label):
        raise SizeError(
            f"Size {key} ({ratio} at {label}) is not available on {model.id}. "
            f"Supported values are: {', '.join(sizes_for(model))}."
        )
    return SizeChoice(ratio, label)


def _offers(model: ImageModel, ratio: str, label: str) -> bool:
    return ratio in model.sizes and label in model.image_tokens
