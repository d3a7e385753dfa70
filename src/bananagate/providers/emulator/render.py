"""Drawing the emulator's output images: deterministic, readable at a glance, and cheap.

Everything here is synchronous CPU work (the provider runs it in a worker thread) and depends
only on its `Scene`, so the same scene always gives the same bytes. Large outputs (up to
12288×1536) are drawn at about two megapixels and upscaled: the result must have the exact
table size, not be a work of art, and a 17-megapixel canvas would make every text and
compositing step ten times slower.
"""

from __future__ import annotations

import colorsys
import io
import math
import random
import unicodedata
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont, ImageOps

# Pixels actually drawn; bigger outputs are upscaled from this.
DRAW_BUDGET = 2_000_000
# Longest prompt drawn; the rest is elided (the text part carries the prompt in full).
MAX_DRAWN_PROMPT = 600
JPEG_QUALITY = 85
# zlib level 1: PNG output is 2.5 Flash only (1K), where level 6+ costs 5x for ~10% fewer bytes.
PNG_COMPRESS_LEVEL = 1

BANANA: tuple[int, int, int] = (255, 225, 53)

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
RGB = tuple[int, int, int]
Box = tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class Tile:
    """One input image to compose: decoded pixels, or a labelled placeholder when `image` is None."""

    image: Image.Image | None
    label: str = ""


@dataclass(frozen=True, slots=True)
class Scene:
    """Everything the picture depends on."""

    width: int
    height: int
    mime_type: str
    prompt: str
    model_id: str
    ratio: str
    size_label: str
    fingerprint: bytes
    tiles: tuple[Tile, ...] = ()


@dataclass(frozen=True, slots=True)
class Palette:
    dark: RGB
    mid: RGB
    light: RGB
    accent: RGB

    @classmethod
    def from_fingerprint(cls, fp: bytes) -> Palette:
        hue = int.from_bytes(fp[0:2], "big") / 65536
        spread = 0.12 + fp[2] / 255 * 0.3
        sat = 0.55 + fp[3] / 255 * 0.3

        def rgb(h: float, s: float, v: float) -> RGB:
            r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
            return round(r * 255), round(g * 255), round(b * 255)

        return cls(
            dark=rgb(hue, sat, 0.30),
            mid=rgb(hue + spread / 2, sat, 0.62),
            light=rgb(hue + spread, sat * 0.8, 0.93),
            accent=rgb(hue + 0.5, 0.75, 0.98),
        )


def render(scene: Scene) -> bytes:
    """The encoded image (PNG or JPEG per `scene.mime_type`) of exactly `scene.width×height`."""
    width, height = scene.width, scene.height
    scale = min(1.0, math.sqrt(DRAW_BUDGET / (width * height)))
    dw, dh = max(1, round(width * scale)), max(1, round(height * scale))
    rng = random.Random(int.from_bytes(scene.fingerprint[:16], "big"))
    palette = Palette.from_fingerprint(scene.fingerprint)

    canvas = _background(dw, dh, palette, rng)
    margin = max(2, round(min(dw, dh) * 0.04))
    if scene.tiles:
        tiles_box, band_box = _split_for_tiles(dw, dh, margin)
        _draw_tiles(canvas, tiles_box, scene.tiles, palette, margin)
        _draw_caption(canvas, band_box, scene, palette)
    else:
        _draw_caption(canvas, (margin, margin, dw - margin, dh - margin), scene, palette)

    if (dw, dh) != (width, height):
        canvas = canvas.resize((width, height), Image.Resampling.BILINEAR)
    return encode(canvas, scene.mime_type)


def encode(image: Image.Image, mime_type: str) -> bytes:
    buf = io.BytesIO()
    if mime_type == "image/png":
        image.save(buf, "PNG", compress_level=PNG_COMPRESS_LEVEL)
    else:
        (image if image.mode == "RGB" else image.convert("RGB")).save(buf, "JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


# --- background -----------------------------------------------------------------------------


def _background(w: int, h: int, palette: Palette, rng: random.Random) -> Image.Image:
    # A gradient whose direction and colours come from the fingerprint, plus translucent discs:
    # two requests that differ at all look different, even before reading the text.
    vertical = Image.linear_gradient("L")
    horizontal = vertical.transpose(Image.Transpose.ROTATE_90)
    mix = Image.blend(vertical, horizontal, rng.random())
    if rng.random() < 0.5:
        mix = mix.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    gray = mix.resize((w, h), Image.Resampling.BILINEAR)
    base = ImageOps.colorize(gray, black=palette.dark, white=palette.light, mid=palette.mid)

    # An "RGBA" Draw on an RGB image blends each translucent shape in place: no overlay layer,
    # no full-canvas composite and mode conversions.
    draw = ImageDraw.Draw(base, "RGBA")
    unit = math.sqrt(w * h)
    for _ in range(6 + int(rng.random() * 8)):
        cx, cy = rng.random() * w, rng.random() * h
        r = unit * (0.04 + rng.random() * 0.25)
        colour = palette.accent if rng.random() < 0.4 else palette.light
        alpha = 30 + int(rng.random() * 60)
        box = (cx - r, cy - r, cx + r, cy + r)
        if rng.random() < 0.5:
            draw.ellipse(box, fill=(*colour, alpha))
        else:
            draw.ellipse(box, outline=(*colour, alpha + 40), width=max(1, round(unit * 0.008)))
    return base


# --- text -----------------------------------------------------------------------------------


def _font(size: int) -> Font:
    # Pillow >= 10.1 embeds a scalable font; no font files to ship or find.
    return ImageFont.load_default(size=max(1, size))


# Characters the embedded font (Aileron) lacks and that do not decompose under NFKD.
_ASCII_STAND_INS = str.maketrans(
    {
        "—": "-",
        "–": "-",
        "•": "*",
        "€": "EUR",
        "£": "GBP",
        "¥": "JPY",
        "®": "(R)",
        "×": "x",
        "÷": "/",
        "¿": "?",
        "¡": "!",
        "ß": "ss",
        "æ": "ae",
        "Æ": "AE",
        "ø": "o",
        "Ø": "O",
        "œ": "oe",
        "Œ": "OE",
        "ð": "d",
        "þ": "th",
    }
)


def drawable(text: str) -> str:
    """Text the embedded font can show: accents folded (é -> e), controls dropped.

    Scripts the font does not cover at all (CJK, Cyrillic...) still draw as boxes; the text part
    of the answer carries the prompt verbatim.
    """
    folded = unicodedata.normalize("NFKD", text.translate(_ASCII_STAND_INS))
    out = []
    for ch in folded:
        if unicodedata.combining(ch):
            continue
        if ch == "\n" or ch.isprintable():
            out.append(ch)
        elif ch.isspace():
            out.append(" ")
    return "".join(out)


def _wrap(text: str, font: Font, width: int) -> list[str]:
    """Greedy word wrap; words longer than a line (URLs, CJK runs) are cut by characters."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if font.getlength(candidate) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            line = ""
            while font.getlength(word) > width and len(word) > 1:
                cut = _longest_prefix(word, font, width)
                lines.append(word[:cut])
                word = word[cut:]
            line = word
        lines.append(line)
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _longest_prefix(word: str, font: Font, width: int) -> int:
    lo, hi = 1, len(word)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if font.getlength(word[:mid]) <= width:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _fit(text: str, width: int, height: int, start: int, minimum: int) -> tuple[Font, list[str], int]:
    """Largest font (from `start` down) whose wrapped `text` fits; at `minimum`, lines are elided."""
    size = max(start, minimum)
    while True:
        font = _font(size)
        line_h = round(size * 1.25)
        lines = _wrap(text, font, width)
        if len(lines) * line_h <= height or size <= minimum:
            break
        size = max(minimum, int(size * 0.87))
    fitting = max(1, height // line_h)
    if len(lines) > fitting:
        lines = lines[:fitting]
        lines[-1] = lines[-1].rstrip() + " …"
    return font, lines, line_h


def _draw_caption(canvas: Image.Image, box: Box, scene: Scene, palette: Palette) -> None:
    """The prompt, large, over a translucent panel; a header and the model/size line small."""
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    if bw < 8 or bh < 8:
        return
    pad = max(2, round(min(bw, bh) * 0.06))
    # Sizes follow the box: a full canvas gets a big prompt, a caption band a proportionate one.
    small = max(8, min(round(bw * 0.025), round(bh * 0.09), 40))
    small_font = _font(small)
    small_h = round(small * 1.3)

    prompt = drawable(scene.prompt).strip() or "(no text prompt)"
    if len(prompt) > MAX_DRAWN_PROMPT:
        prompt = prompt[:MAX_DRAWN_PROMPT].rstrip() + " …"
    text_w = bw - 2 * pad
    text_h = bh - 2 * pad - 2 * small_h - small // 2
    start = max(small, min(round(bh * 0.3), round(bw / 10), 160))
    font, lines, line_h = _fit(prompt, text_w, max(small, text_h), start, small)

    block_h = 2 * small_h + small // 2 + len(lines) * line_h + 2 * pad
    top = y0 + max(0, (bh - block_h) // 2)
    ImageDraw.Draw(canvas, "RGBA").rounded_rectangle(
        (x0, top, x1, min(y1, top + block_h)), radius=pad, fill=(*palette.dark, 150)
    )

    draw = ImageDraw.Draw(canvas)
    y = top + pad
    draw.text((x0 + pad, y), "bananagate emulator", font=small_font, fill=BANANA)
    y += small_h + small // 2
    for line in lines:
        draw.text((x0 + pad, y), line, font=font, fill=(255, 255, 255))
        y += line_h
    footer = f"{scene.model_id} | {scene.ratio} | {scene.size_label} ({scene.width}x{scene.height})"
    footer_lines = _wrap(footer, small_font, text_w)[:1]
    if footer_lines:
        draw.text((x0 + pad, y), footer_lines[0], font=small_font, fill=(235, 235, 235))


# --- input images ---------------------------------------------------------------------------


def _split_for_tiles(w: int, h: int, margin: int) -> tuple[Box, Box]:
    """(area for the inputs, area for the caption band): band on the right of wide canvases."""
    if w >= 2.2 * h:
        band_w = round(w * 0.34)
        return (margin, margin, w - band_w - margin, h - margin), (w - band_w, margin, w - margin, h - margin)
    band_h = max(round(h * 0.26), min(h, 40))
    return (margin, margin, w - margin, h - band_h - margin), (margin, h - band_h, w - margin, h - margin)


def _grid(n: int, box_w: int, box_h: int, aspects: list[float]) -> tuple[int, int]:
    """Columns and rows that give the inputs the most visible area."""
    best, best_area = (1, n), -1.0
    for cols in range(1, n + 1):
        rows = math.ceil(n / cols)
        cw, ch = box_w / cols, box_h / rows
        area = sum(min(cw, ch * a) * min(ch, cw / a) for a in aspects)
        if area > best_area:
            best, best_area = (cols, rows), area
    return best


def _draw_tiles(canvas: Image.Image, box: Box, tiles: tuple[Tile, ...], palette: Palette, gap: int) -> None:
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    if bw < 4 or bh < 4:
        return
    aspects = [t.image.width / t.image.height if t.image else 1.0 for t in tiles]
    cols, rows = _grid(len(tiles), bw, bh, aspects)
    cw, ch = bw // cols, bh // rows
    gap = min(gap // 2, cw // 8, ch // 8)
    last_row = (len(tiles) - 1) // cols
    for index, tile in enumerate(tiles):
        row = index // cols
        # An incomplete last row is centred rather than left-aligned.
        shift = (cols * (row + 1) - len(tiles)) * cw // 2 if row == last_row else 0
        cx, cy = x0 + (index % cols) * cw + shift, y0 + row * ch
        cell = (cx + gap, cy + gap, cx + cw - gap, cy + ch - gap)
        if cell[2] - cell[0] < 2 or cell[3] - cell[1] < 2:
            continue
        if tile.image is not None:
            _paste_input(canvas, cell, tile.image, palette)
        else:
            _draw_placeholder(canvas, cell, tile.label, palette)


def _paste_input(canvas: Image.Image, cell: Box, image: Image.Image, palette: Palette) -> None:
    size = (cell[2] - cell[0], cell[3] - cell[1])
    fitted = ImageOps.contain(image, size, Image.Resampling.BILINEAR)
    # Tinted so the output is visibly "edited" and differs per request, yet the input stays legible.
    tinted = Image.blend(fitted, Image.new("RGB", fitted.size, palette.accent), 0.28)
    left = cell[0] + (size[0] - fitted.width) // 2
    top = cell[1] + (size[1] - fitted.height) // 2
    canvas.paste(tinted, (left, top))
    ImageDraw.Draw(canvas).rectangle(
        (left, top, left + fitted.width - 1, top + fitted.height - 1),
        outline=palette.accent,
        width=max(1, min(size) // 100),
    )


def _draw_placeholder(canvas: Image.Image, cell: Box, label: str, palette: Palette) -> None:
    draw = ImageDraw.Draw(canvas)
    w, h = cell[2] - cell[0], cell[3] - cell[1]
    draw.rectangle(cell, fill=(70, 70, 78), outline=palette.accent, width=max(1, min(w, h) // 60))
    draw.line((cell[0], cell[1], cell[2], cell[3]), fill=(95, 95, 105), width=max(1, min(w, h) // 80))
    draw.line((cell[0], cell[3], cell[2], cell[1]), fill=(95, 95, 105), width=max(1, min(w, h) // 80))
    pad = max(2, min(w, h) // 12)
    start = max(6, min(h // 8, w // 14))
    font, lines, line_h = _fit(drawable(label), w - 2 * pad, h - 2 * pad, start, 6)
    y = cell[1] + max(pad, (h - len(lines) * line_h) // 2)
    for line in lines:
        draw.text((cell[0] + pad, y), line, font=font, fill=(255, 255, 255))
        y += line_h
