"""`bananagate collage`: build the guide's multi-image collage locally (no request is sent)."""

from __future__ import annotations

from pathlib import Path

import click
from PIL import Image

from bananagate.client.collage import make_collage


@click.command()
@click.argument(
    "images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--columns", type=int, default=None, help="Tiles per row (default: as square as possible).")
@click.option("--cell", type=int, default=512, show_default=True, help="Tile size in pixels.")
@click.option("--labels/--no-labels", default=False, help="Write each file's name under its tile.")
def collage(images: tuple[Path, ...], output: Path, columns: int | None, cell: int, labels: bool) -> None:
    """Lay IMAGES out in one grid image, to send to a model as a single input."""
    opened = [Image.open(p) for p in images]
    result = make_collage(
        opened, columns=columns, cell=cell, labels=[p.stem for p in images] if labels else None
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    result.save(output)
    click.echo(f"{output} ({result.width}x{result.height}, {len(images)} images)")
