"""Client-side collage: several images on one canvas (the guide's multi-image "Method 1").

Used when a request would carry more images than the model takes, or by choice: the model then
sees one image with every input laid out in a grid, optionally labelled.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont, ImageOps

from bananagate.client.inputs import InputImage


def grid_shape(count: int, columns: int | None = None) -> tuple[int, int]:
    """(columns, rows) for `count` tiles: as square as possible unless `columns` is given."""
    if count < 1:
        raise ValueError("a collage needs at least one image")
    cols = columns or math.ceil(math.sqrt(count))
    cols = max(1, min(cols, count))
    return cols, math.ceil(count / cols)


def make_collage(
    images: Sequence[Image.Image],
    *,
    columns: int | None = None,
    cell: int = 512,
    gap: int = 16,
    labels: Sequence[str] | None = None,
    background: str = "#f0f0f0",
) -> Image.Image:
    """A grid of `images`, each fitted (aspect kept) into a `cell`-pixel square, with optional labels."""
    if labels is not None and len(labels) != len(images):
        raise ValueError("labels must match images one to one")
    cols, rows = grid_shape(len(images), columns)
    label_height = max(18, cell // 12) if labels else 0
    tile_h = cell + label_height
    canvas = Image.new("RGB", (cols * cell + (cols + 1) * gap, rows * tile_h + (rows + 1) * gap), background)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=max(12, label_height * 3 // 4)) if labels else None
    for index, image in enumerate(images):
        col, row = index % cols, index // cols
        x0 = gap + col * (cell + gap)
        y0 = gap + row * (tile_h + gap)
        fitted = ImageOps.contain(image.convert("RGB"), (cell, cell))
        canvas.paste(fitted, (x0 + (cell - fitted.width) // 2, y0 + (cell - fitted.height) // 2))
        if labels and font is not None:
            draw.text(
                (x0 + cell // 2, y0 + cell + label_height // 2),
                labels[index],
                fill="black",
                font=font,
                anchor="mm",
            )
    return canvas


def collage_input(
    images: Sequence[InputImage],
    *,
    labels: bool | Sequence[str] | None = None,
    columns: int | None = None,
    cell: int = 512,
) -> InputImage:
    """The guide's Method 1 as one request image: `images` in a grid, encoded as PNG.

    `labels=True` numbers the tiles 1..n (so a prompt can say "the person from tile 1"); a list
    gives the captions; None/False draws none.
    """
    captions: list[str] | None
    if labels is True:
        captions = [str(i) for i in range(1, len(images) + 1)]
    elif labels:
        captions = list(labels)
    else:
        captions = None
    canvas = make_collage([img.to_pil() for img in images], columns=columns, cell=cell, labels=captions)
    out = io.BytesIO()
    # PNG keeps the tiles lossless: the model should see the references, not JPEG artefacts.
    canvas.save(out, format="PNG")
    return InputImage(out.getvalue(), "image/png", "collage")
