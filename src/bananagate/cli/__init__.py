"""The `bananagate` command: one Click group, each face's commands in its own module."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from bananagate import __version__
from bananagate.settings import Settings

if TYPE_CHECKING:
    from bananagate.store import Store


def build_settings(data_dir: Path | None = None, **overrides: object) -> Settings:
    """Settings from the environment, with explicit flags taking precedence."""
    values: dict[str, object] = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    return Settings(**values)  # type: ignore[arg-type]


@contextmanager
def open_store(settings: Settings) -> Iterator[Store]:
    """The store for a command; its errors become one clean `Error:` line instead of a traceback."""
    from bananagate.store import Store, StoreError

    try:
        store = Store.from_settings(settings)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(f"cannot use data directory {settings.data_dir}: {exc}") from exc
    try:
        yield store
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        store.close()


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Data directory (default: $BANANAGATE_DATA_DIR, else the platform's user data dir).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bananagate")
def cli() -> None:
    """bananagate: a gateway, offline emulator, SDK and CLI for Gemini image models."""


def _register() -> None:
    # Imported here so each command module can import `cli` helpers above without cycles.
    from bananagate.cli import batch, channels, collage, generate, keys, serve

    cli.add_command(serve.serve)
    cli.add_command(keys.keys)
    cli.add_command(channels.channels)
    cli.add_command(collage.collage)
    cli.add_command(generate.generate)
    cli.add_command(generate.edit)
    cli.add_command(generate.compose)
    cli.add_command(batch.batch)
    from bananagate.cli import usage

    cli.add_command(usage.usage)
    from bananagate.cli import jobs, worker

    cli.add_command(worker.worker)
    cli.add_command(jobs.submit)
    cli.add_command(jobs.wait)


_register()


def main() -> None:
    cli()
