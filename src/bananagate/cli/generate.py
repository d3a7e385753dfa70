"""`bananagate generate | edit | compose`: one request through the SDK, images saved to disk.

Prompts of `edit` and `compose` go in `-p/--prompt` (images are the positional arguments), so a
file whose name looks like a prompt can never be mistaken for one. An IMAGE is a path, `-`
(read from stdin) or a `data:image/...;base64,` URL.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from bananagate.client import Client, GenerateResult, RetryPolicy
from bananagate.client.batch import slug
from bananagate.client.errors import (
    APIError,
    ConfigurationError,
    InvalidInputError,
    NoImageError,
    TransportError,
)
from bananagate.client.inputs import ImageInput

F = TypeVar("F", bound=Callable[..., Any])

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def client_options(func: F) -> F:
    """--base-url/--api-key/--auth/--timeout/--retries, shared by every client command."""
    options = [
        click.option(
            "--base-url",
            default=None,
            metavar="URL",
            help="Server (default: $BANANAGATE_BASE_URL, else http://127.0.0.1:8000).",
        ),
        click.option(
            "--api-key",
            default=None,
            metavar="KEY",
            help="Key (default: $BANANAGATE_API_KEY, else the local gateway's default.key).",
        ),
        click.option(
            "--auth",
            type=click.Choice(["raw", "bearer", "goog", "query"]),
            default=None,
            help="How the key is sent: Authorization raw/Bearer, x-goog-api-key, or ?key= (default goog).",
        ),
        click.option("--timeout", type=float, default=None, help="Seconds per attempt (default 300)."),
        click.option(
            "--retries",
            type=click.IntRange(min=0),
            default=None,
            help="Retries after the first attempt on 429/5xx/timeouts (default 3; 0 = none).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def client_kwargs(
    base_url: str | None, api_key: str | None, auth: str | None, timeout: float | None, retries: int | None
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"base_url": base_url, "api_key": api_key, "auth": auth, "timeout": timeout}
    if retries is not None:
        kwargs["retry"] = RetryPolicy(max_attempts=retries + 1)
    return kwargs


def generation_options(func: F) -> F:
    options = [
        click.option("-m", "--model", default=None, help="Model id (default gemini-2.5-flash-image)."),
        click.option(
            "--aspect", "aspect_ratio", default=None, metavar="W:H", help="Aspect ratio, e.g. 16:9."
        ),
        click.option("--size", "image_size", default=None, metavar="SIZE", help="512, 1K, 2K or 4K."),
        click.option(
            "-o",
            "--output",
            type=click.Path(path_type=Path),
            default=None,
            help="File stem or path; the extension follows the image type (default: from the prompt).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def image_argument(value: str) -> ImageInput:
    if value == "-":
        return sys.stdin.buffer
    if value[:5].lower() == "data:":
        return value
    path = Path(value)
    if not path.is_file():
        raise click.BadParameter(f"{value}: no such file", param_hint="IMAGE")
    return path


def image_label(value: str, position: int) -> str:
    return Path(value).stem if value != "-" and value[:5].lower() != "data:" else str(position)


def output_stem(output: Path | None, prompt: str) -> Path:
    if output is None:
        return Path(slug(prompt, 48))
    if output.is_dir() or str(output).endswith(("/", "\\")):
        return output / slug(prompt, 48)
    return output


@contextmanager
def reported_errors() -> Iterator[None]:
    """SDK errors as CLI outcomes: local refusals are usage errors (exit 2), the rest exit 1."""
    try:
        yield
    except (InvalidInputError, ConfigurationError) as exc:
        raise click.UsageError(str(exc)) from None
    except (NoImageError, APIError, TransportError) as exc:
        err.print(f"[red]{type(exc).__name__}:[/] {exc}")
        raise click.exceptions.Exit(1) from None


def report(result: GenerateResult, stem: Path, started: float) -> None:
    """Save every image and print path, size, type, cost and time, one line each."""
    seconds = time.monotonic() - started
    cost = "n/a" if result.cost is None else f"${result.cost:.4f}"
    for image, path in zip(result.images, result.save(stem), strict=True):
        width, height = image.size
        out.print(f"saved {path}  {width}x{height}  {image.mime_type}  cost {cost}  {seconds:.2f}s")
    if result.text.strip():
        out.print(f"[dim]text: {result.text.strip()}[/]")


@click.command()
@click.argument("prompt")
@generation_options
@client_options
def generate(
    prompt: str,
    model: str | None,
    aspect_ratio: str | None,
    image_size: str | None,
    output: Path | None,
    **conn: Any,
) -> None:
    """Text to image: generate an image from PROMPT."""
    started = time.monotonic()
    with reported_errors(), Client(**client_kwargs(**conn)) as client:
        result = client.generate(prompt, model=model, aspect_ratio=aspect_ratio, image_size=image_size)
    report(result, output_stem(output, prompt), started)


@click.command()
@click.argument("images", nargs=-1, required=True)
@click.option("-p", "--prompt", required=True, help="What to change.")
@generation_options
@client_options
def edit(
    images: tuple[str, ...],
    prompt: str,
    model: str | None,
    aspect_ratio: str | None,
    image_size: str | None,
    output: Path | None,
    **conn: Any,
) -> None:
    """Image to image: edit IMAGE... (path, - for stdin, or data: URL) following --prompt."""
    inputs = [image_argument(v) for v in images]
    started = time.monotonic()
    with reported_errors(), Client(**client_kwargs(**conn)) as client:
        result = client.edit(prompt, inputs, model=model, aspect_ratio=aspect_ratio, image_size=image_size)
    report(result, output_stem(output, prompt), started)


@click.command()
@click.argument("images", nargs=-1, required=True)
@click.option("-p", "--prompt", required=True, help="What to make of the images.")
@click.option("--collage", is_flag=True, help="Send one grid of all images (the guide's Method 1).")
@click.option("--labels", is_flag=True, help="With --collage: caption each tile with its file name.")
@click.option("--columns", type=click.IntRange(min=1), default=None, help="With --collage: tiles per row.")
@generation_options
@client_options
def compose(
    images: tuple[str, ...],
    prompt: str,
    collage: bool,
    labels: bool,
    columns: int | None,
    model: str | None,
    aspect_ratio: str | None,
    image_size: str | None,
    output: Path | None,
    **conn: Any,
) -> None:
    """Several images to one: IMAGE... sent inline (Method 2) or as a --collage (Method 1)."""
    inputs = [image_argument(v) for v in images]
    captions = [image_label(v, i) for i, v in enumerate(images, start=1)] if labels else None
    started = time.monotonic()
    with reported_errors(), Client(**client_kwargs(**conn)) as client:
        result = client.compose(
            prompt,
            inputs,
            method="collage" if collage else "inline",
            labels=captions,
            columns=columns,
            model=model,
            aspect_ratio=aspect_ratio,
            image_size=image_size,
        )
    report(result, output_stem(output, prompt), started)
