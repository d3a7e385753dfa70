"""The image models we know: output tables, input limits, token counts (protocol reference §1.4, §6).

Pure data and lookups; no I/O. Other layers ask this module what a model accepts and produces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

Size = tuple[int, int]


@dataclass(frozen=True, slots=True)
class ImageModel:
    """One Gemini image model as the wire sees it."""

    id: str
    display_name: str
    description: str
    version: str
    input_token_limit: int
    output_token_limit: int
    max_input_images: int
    output_mime_type: str
    # aspect ratio -> image size label -> (width, height)
    sizes: dict[str, dict[str, Size]]
    # image size label -> output image tokens
    image_tokens: dict[str, int]
    default_image_size: str = "1K"
    # tokens billed per input image
    input_image_tokens: int = 258
    thinking: bool = False
    aliases: tuple[str, ...] = ()
    supported_methods: tuple[str, ...] = ("generateContent", "countTokens", "batchGenerateContent")
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"models/{self.id}"

    @property
    def aspect_ratios(self) -> tuple[str, ...]:
        return tuple(self.sizes)

    @property
    def image_sizes(self) -> tuple[str, ...]:
        return tuple(self.image_tokens)

    def size_for(self, aspect_ratio: str, image_size: str | None = None) -> Size:
        """Pixel size of the output for a ratio and size label (default size when None)."""
        return self.sizes[aspect_ratio][image_size or self.default_image_size]

    def tokens_for(self, image_size: str | None = None) -> int:
        return self.image_tokens[image_size or self.default_image_size]

    def closest_ratio(self, width: int, height: int) -> str:
        """The table ratio nearest to width:height (compared on a log scale, so 2:1 and 1:2 are symmetric)."""
        import math

        target = math.log(width / height)
        return min(self.sizes, key=lambda r: abs(math.log(float(_ratio_value(r))) - target))


def _ratio_value(ratio: str) -> Fraction:
    w, h = ratio.split(":")
    return Fraction(int(w), int(h))


def _table(rows: dict[str, tuple[Size, ...]], labels: tuple[str, ...]) -> dict[str, dict[str, Size]]:
    return {ratio: dict(zip(labels, sizes, strict=True)) for ratio, sizes in rows.items()}


_FLASH_25_SIZES = _table(
    {
        "1:1": ((1024, 1024),),
        "2:3": ((832, 1248),),
        "3:2": ((1248, 832),),
        "3:4": ((864, 1184),),
        "4:3": ((1184, 864),),
        "4:5": ((896, 1152),),
        "5:4": ((1152, 896),),
        "9:16": ((768, 1344),),
        "16:9": ((1344, 768),),
        "21:9": ((1536, 672),),
    },
    ("1K",),
)

_PRO_3_SIZES = _table(
    {
        "1:1": ((1024, 1024), (2048, 2048), (4096, 4096)),
        "2:3": ((848, 1264), (1696, 2528), (3392, 5056)),
        "3:2": ((1264, 848), (2528, 1696), (5056, 3392)),
        "3:4": ((896, 1200), (1792, 2400), (3584, 4800)),
        "4:3": ((1200, 896), (2400, 1792), (4800, 3584)),
        "4:5": ((928, 1152), (1856, 2304), (3712, 4608)),
        "5:4": ((1152, 928), (2304, 1856), (4608, 3712)),
        "9:16": ((768, 1376), (1536, 2752), (3072, 5504)),
        "16:9": ((1376, 768), (2752, 1536), (5504, 3072)),
        "21:9": ((1584, 672), (3168, 1344), (6336, 2688)),
    },
    ("1K", "2K", "4K"),
)

# 3.1 Flash: the 512 column of 21:9 is published as 792x168, which is a typo for 792x336
# (every other 512 entry is half of 1K); we serve the consistent value.
_FLASH_31_SIZES = _table(
    {
        "1:1": ((512, 512), (1024, 1024), (2048, 2048), (4096, 4096)),
        "1:4": ((256, 1024), (512, 2048), (1024, 4096), (2048, 8192)),
        "1:8": ((192, 1536), (384, 3072), (768, 6144), (1536, 12288)),
        "2:3": ((424, 632), (848, 1264), (1696, 2528), (3392, 5056)),
        "3:2": ((632, 424), (1264, 848), (2528, 1696), (5056, 3392)),
        "3:4": ((448, 600), (896, 1200), (1792, 2400), (3584, 4800)),
        "4:1": ((1024, 256), (2048, 512), (4096, 1024), (8192, 2048)),
        "4:3": ((600, 448), (1200, 896), (2400, 1792), (4800, 3584)),
        "4:5": ((464, 576), (928, 1152), (1856, 2304), (3712, 4608)),
        "5:4": ((576, 464), (1152, 928), (2304, 1856), (4608, 3712)),
        "8:1": ((1536, 192), (3072, 384), (6144, 768), (12288, 1536)),
        "9:16": ((384, 688), (768, 1376), (1536, 2752), (3072, 5504)),
        "16:9": ((688, 384), (1376, 768), (2752, 1536), (5504, 3072)),
        "21:9": ((792, 336), (1584, 672), (3168, 1344), (6336, 2688)),
    },
    ("512", "1K", "2K", "4K"),
)

FLASH_25 = ImageModel(
    id="gemini-2.5-flash-image",
    display_name="Nano Banana",
    description="Gemini 2.5 Flash Preview Image",
    version="2.0",
    input_token_limit=32768,
    output_token_limit=32768,
    max_input_images=3,
    output_mime_type="image/png",
    sizes=_FLASH_25_SIZES,
    image_tokens={"1K": 1290},
    aliases=("gemini-2.5-flash-image-preview",),
)

PRO_3 = ImageModel(
    id="gemini-3-pro-image-preview",
    display_name="Nano Banana Pro",
    description="Gemini 3 Pro Image Preview",
    version="3.0",
    input_token_limit=131072,
    output_token_limit=32768,
    max_input_images=14,
    output_mime_type="image/jpeg",
    sizes=_PRO_3_SIZES,
    image_tokens={"1K": 1120, "2K": 1120, "4K": 2000},
    input_image_tokens=560,
    thinking=True,
    aliases=("gemini-3-pro-image", "nano-banana-pro-preview"),
)

FLASH_31 = ImageModel(
    id="gemini-3.1-flash-image-preview",
    display_name="Nano Banana 2",
    description="Gemini 3.1 Flash Image Preview.",
    version="3.0",
    input_token_limit=65536,
    output_token_limit=65536,
    max_input_images=14,
    output_mime_type="image/jpeg",
    sizes=_FLASH_31_SIZES,
    image_tokens={"512": 747, "1K": 1120, "2K": 1680, "4K": 2520},
    input_image_tokens=1120,
    thinking=True,
    aliases=("gemini-3.1-flash-image",),
)

# The preview name is listed as its own model (aggregators still advertise it) but shares the table.
FLASH_25_PREVIEW = ImageModel(
    id="gemini-2.5-flash-image-preview",
    display_name="Nano Banana (preview)",
    description="Gemini 2.5 Flash Preview Image (retired name, served as gemini-2.5-flash-image)",
    version="2.0",
    input_token_limit=32768,
    output_token_limit=32768,
    max_input_images=3,
    output_mime_type="image/png",
    sizes=_FLASH_25_SIZES,
    image_tokens={"1K": 1290},
)

MODELS: tuple[ImageModel, ...] = (FLASH_25, FLASH_25_PREVIEW, PRO_3, FLASH_31)

_BY_ID: dict[str, ImageModel] = {m.id: m for m in MODELS}
for _m in MODELS:
    for _alias in _m.aliases:
        _BY_ID.setdefault(_alias, _m)

INPUT_IMAGE_MIME_TYPES: frozenset[str] = frozenset(
    {"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"}
)

MIME_EXTENSIONS: dict[str, str] = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/heic": ".heic",
    "image/heif": ".heif",
    "image/gif": ".gif",
}


def strip_model_prefix(model: str) -> str:
    """`models/x` -> `x`; a bare id is returned unchanged."""
    return model[len("models/") :] if model.startswith("models/") else model


def find_model(model: str) -> ImageModel | None:
    """The model for an id, `models/` name or alias, or None when unknown."""
    return _BY_ID.get(strip_model_prefix(model))


def extension_for(mime_type: str) -> str:
    """File extension (with dot) for an image MIME type; `.bin` when unknown."""
    return MIME_EXTENSIONS.get(mime_type.split(";")[0].strip().lower(), ".bin")
