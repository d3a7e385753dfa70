"""The `bananagate` command: one Click group, each face's commands in its own module."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from pydantic import ValidationError

from bananagate import __version__
from bananagate.settings import Settings

if TYPE_CHECKING:
    from bananagate.store import Store


def build_settings(data_dir: Path | None = None, **overrides: object) -> Settings:
    """Settings from the environment, with explicit flags taking precedence."""
    values: dict[str, object] = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    try:
        return Settings(**values)  # type: ignore[arg-type]
    except ValidationError as exc:  # one line per bad setting, named as the user set it
        raise click.UsageError("; ".join(_setting_problem(e) for e in exc.errors())) from None


def _setting_problem(error: Any) -> str:
    name = "BANANAGATE_" + "_".join(map(str, error["loc"])).upper() if error["loc"] else "settings"
    got = error.get("input")
    return f"{name}: {error['msg']}" + (f" (got {got!r})" if isinstance(got, str | int | float) else "")


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


# Command name -> "module:attribute". Modules load when their command runs (or for `--help`):
# `serve` then never pays for the other commands' imports (Rich's tables, Pillow, the SDK),
# which keeps a gateway worker's resident memory down.
COMMANDS = {
    "serve": "serve:serve",
    "keys": "keys:keys",
    "channels": "channels:channels",
    "collage": "collage:collage",
    "generate": "generate:generate",
    "edit": "generate:edit",
    "compose": "generate:compose",
    "batch": "batch:batch",
    "usage": "usage:usage",
    "worker": "worker:worker",
    "submit": "jobs:submit",
    "wait": "jobs:wait",
}


class LazyGroup(click.Group):
    """A Click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        spec = COMMANDS.get(cmd_name)
        if spec is None:
            return super().get_command(ctx, cmd_name)
        module_name, _, attribute = spec.partition(":")
        module = importlib.import_module(f"bananagate.cli.{module_name}")
        command = getattr(module, attribute)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bananagate")
def cli() -> None:
    """bananagate: a gateway, offline emulator, SDK and CLI for Gemini image models."""


def main() -> None:
    cli()
