"""`bananagate keys`: create, list and revoke the gateway's API keys.

Works against the same database as `bananagate serve` (SQLite in the data dir unless
`BANANAGATE_DATABASE_URL` is set), also while the server is running.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bananagate.cli import build_settings, data_dir_option
from bananagate.store import ApiKeyRecord, InvalidKeyName, KeyNameTaken, Store, StoreError


def _data_dir(ctx: click.Context, data_dir: Path | None) -> Path | None:
    """The subcommand's --data-dir, else the one given to the `keys` group."""
    if data_dir is not None:
        return data_dir
    parent = ctx.parent
    return parent.params.get("data_dir") if parent is not None else None


@contextmanager
def _open_store(ctx: click.Context, data_dir: Path | None) -> Iterator[Store]:
    settings = build_settings(_data_dir(ctx, data_dir))
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


def _when(value: datetime | None, never: str = "never") -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else never


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _as_json(record: ApiKeyRecord) -> dict[str, object]:
    return {
        "id": record.id,
        "name": record.name,
        "prefix": record.prefix,
        "created_at": _iso(record.created_at),
        "last_used_at": _iso(record.last_used_at),
        "revoked_at": _iso(record.revoked_at),
        "status": record.status,
    }


@click.group()
@data_dir_option
def keys(data_dir: Path | None) -> None:
    """Create, list and revoke API keys."""


@keys.command("create")
@click.option("--name", "-n", required=True, help="A unique name for the key, e.g. the client using it.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the key, for scripts.")
@data_dir_option
@click.pass_context
def create(ctx: click.Context, name: str, quiet: bool, data_dir: Path | None) -> None:
    """Create a key and print it (once: only its hash is stored).

    The key alone goes to standard output, so `KEY=$(bananagate keys create --name ci -q)`
    captures it; other messages go to standard error.
    """
    with _open_store(ctx, data_dir) as store:
        try:
            record, secret = store.keys.create_key(name)
        except InvalidKeyName as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param_hint="'--name'") from exc
        except KeyNameTaken as exc:
            existing = store.keys.get_key(name)
            revoked = existing is not None and not existing.active
            hint = " (it is revoked, but names of revoked keys stay taken)" if revoked else ""
            raise click.ClickException(f"{exc}{hint}") from exc
    if not quiet:
        Console(stderr=True).print(
            f"[green]Created API key[/] [bold]{escape(record.name)}[/]. "
            "Copy it now: it will not be shown again."
        )
    click.echo(secret)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--active", "active_only", is_flag=True, help="Leave out revoked keys.")
@data_dir_option
@click.pass_context
def list_(ctx: click.Context, as_json: bool, active_only: bool, data_dir: Path | None) -> None:
    """List keys (never their secrets). Times are in UTC."""
    with _open_store(ctx, data_dir) as store:
        records = store.keys.list_keys(include_revoked=not active_only)
    if as_json:
        click.echo(json.dumps([_as_json(r) for r in records], indent=2))
        return
    console = Console()
    if not records:
        console.print("No API keys yet. Create one with: bananagate keys create --name NAME", markup=False)
        return
    table = Table(box=None, header_style="bold")
    for column in ("name", "prefix", "created (UTC)", "last used (UTC)", "status"):
        table.add_column(column, no_wrap=column != "name")
    for r in records:
        status = "[green]active[/]" if r.active else "[red]revoked[/]"
        table.add_row(
            escape(r.name), escape(r.prefix) + "…", _when(r.created_at), _when(r.last_used_at), status
        )
    console.print(table)


@keys.command("revoke")
@click.argument("name")
@data_dir_option
@click.pass_context
def revoke(ctx: click.Context, name: str, data_dir: Path | None) -> None:
    """Revoke the key NAME: requests with it are refused from now on."""
    console = Console(stderr=True)
    with _open_store(ctx, data_dir) as store:
        record = store.keys.get_key(name)
        if record is None:
            raise click.ClickException(f"no API key named {name!r}")
        if store.keys.revoke_key(name):
            console.print(f"Revoked API key [bold]{escape(name)}[/] ({escape(record.prefix)}…).")
            return
        revoked = store.keys.get_key(name)
    when = _when(revoked.revoked_at if revoked else None, never="earlier")
    console.print(f"API key [bold]{escape(name)}[/] was already revoked ({when} UTC).")
