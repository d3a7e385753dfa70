"""`bananagate keys`: create, list, show, update, rotate and revoke the gateway's API keys.

Works against the same database as `bananagate serve` (SQLite in the data dir unless
`BANANAGATE_DATABASE_URL` is set), also while the server is running: limits changed here apply
to the next request.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bananagate.cli import build_settings, data_dir_option, open_store
from bananagate.server.keyspec import key_json, parse_changes
from bananagate.store import ApiKeyRecord, InvalidKeyName, KeyLimits, KeyNameTaken, Store

CLEAR = ("none", "any", "never", "")


def limit_options(func: Any) -> Any:
    """The limit flags shared by `create` and `update` (in `update`, `none` clears a limit)."""
    options = [
        click.option("--label", default=None, help="Free text: owner, purpose."),
        click.option("--models", default=None, help="Comma-separated model ids the key may use."),
        click.option("--budget-usd", default=None, help="Hard budget in USD, e.g. 25 or 0.78."),
        click.option("--rpm", default=None, help="Requests per minute."),
        click.option("--images-per-day", default=None, help="Output images per UTC day."),
        click.option("--max-concurrent", default=None, help="Requests in flight at once."),
        click.option(
            "--expires", default=None, help="Expiry: 2026-12-31, an ISO time, or 30d / 12h from now."
        ),
        click.option(
            "--allow-cidr",
            "allow_cidr",
            multiple=True,
            help="Client address block allowed to use the key (repeatable, or comma-separated).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _changes(ctx: click.Context, values: dict[str, Any]) -> dict[str, Any]:
    """The flags that were given, as `update_key` changes (`none` clears)."""
    payload: dict[str, Any] = {}
    for flag, field in (
        ("label", "label"),
        ("models", "models"),
        ("budget_usd", "budget_usd"),
        ("expires", "expires_at"),
    ):
        value = values.get(flag)
        if value is not None:
            payload[field] = None if value.strip().lower() in CLEAR else value
    for flag in ("rpm", "images_per_day", "max_concurrent"):
        value = values.get(flag)
        if value is not None:
            if value.strip().lower() in CLEAR:
                payload[flag] = None
            elif not value.strip().isdigit():
                raise click.BadParameter(f"{value!r} is not a whole number", ctx=ctx, param_hint=f"--{flag}")
            else:
                payload[flag] = int(value)
    cidrs = [c for item in values.get("allow_cidr") or () for c in item.split(",")]
    if cidrs:
        payload["allow_cidrs"] = None if all(c.strip().lower() in CLEAR for c in cidrs) else cidrs
    try:
        return parse_changes(payload)
    except ValueError as exc:
        raise click.UsageError(str(exc), ctx=ctx) from exc


def _data_dir(ctx: click.Context, data_dir: Path | None) -> Path | None:
    """The subcommand's --data-dir, else the one given to the `keys` group."""
    if data_dir is not None:
        return data_dir
    parent = ctx.parent
    return parent.params.get("data_dir") if parent is not None else None


def _open_store(ctx: click.Context, data_dir: Path | None) -> AbstractContextManager[Store]:
    return open_store(build_settings(_data_dir(ctx, data_dir)))


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
@limit_options
@data_dir_option
@click.pass_context
def create(ctx: click.Context, /, name: str, quiet: bool, data_dir: Path | None, **flags: Any) -> None:
    """Create a key and print it (once: only its hash is stored).

    The key alone goes to standard output, so `KEY=$(bananagate keys create --name ci -q)`
    captures it; other messages go to standard error.
    """
    changes = _changes(ctx, flags)
    limits = KeyLimits(
        models=tuple(changes.get("models") or ()),
        budget_nanos=changes.get("budget_nanos"),
        rpm=changes.get("rpm"),
        images_per_day=changes.get("images_per_day"),
        max_concurrent=changes.get("max_concurrent"),
        expires_at=changes.get("expires_at"),
        allow_cidrs=tuple(changes.get("allow_cidrs") or ()),
    )
    with _open_store(ctx, data_dir) as store:
        try:
            record, secret = store.keys.create_key(name, limits=limits, label=changes.get("label"))
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
@click.option("--full", is_flag=True, help="With --json: include limits and money.")
@click.option("--active", "active_only", is_flag=True, help="Leave out revoked keys.")
@data_dir_option
@click.pass_context
def list_(ctx: click.Context, as_json: bool, full: bool, active_only: bool, data_dir: Path | None) -> None:
    """List keys (never their secrets). Times are in UTC."""
    with _open_store(ctx, data_dir) as store:
        records = store.keys.list_keys(include_revoked=not active_only)
    if as_json:
        click.echo(json.dumps([key_json(r) if full else _as_json(r) for r in records], indent=2))
        return
    console = Console()
    if not records:
        console.print("No API keys yet. Create one with: bananagate keys create --name NAME", markup=False)
        return
    table = Table(box=None, header_style="bold")
    # Money and limits do not fit an 80-column table: `keys show NAME` or `list --json --full`.
    for column in ("name", "prefix", "created (UTC)", "last used (UTC)", "status"):
        table.add_column(column, no_wrap=column != "name")
    for r in records:
        status = {"active": "[green]active[/]", "expired": "[yellow]expired[/]"}.get(
            r.status, "[red]revoked[/]"
        )
        table.add_row(
            escape(r.name), escape(r.prefix) + "…", _when(r.created_at), _when(r.last_used_at), status
        )
    console.print(table)


@keys.command("show")
@click.argument("name")
@data_dir_option
@click.pass_context
def show(ctx: click.Context, name: str, data_dir: Path | None) -> None:
    """Show the key NAME with its limits, spending and holds, as JSON (never its secret)."""
    with _open_store(ctx, data_dir) as store:
        record = store.keys.get_key(name)
    if record is None:
        raise click.ClickException(f"no API key named {name!r}")
    click.echo(json.dumps(key_json(record), indent=2))


@keys.command("update")
@click.argument("name")
@limit_options
@data_dir_option
@click.pass_context
def update(ctx: click.Context, /, name: str, data_dir: Path | None, **flags: Any) -> None:
    """Change the limits of the key NAME; a value of `none` clears a limit.

    Example: `bananagate keys update ci --budget-usd 50 --rpm none`.
    """
    changes = _changes(ctx, flags)
    if not changes:
        raise click.UsageError("nothing to change: give at least one limit flag", ctx=ctx)
    with _open_store(ctx, data_dir) as store:
        try:
            record = store.keys.update_key(name, changes)
        except ValueError as exc:
            raise click.UsageError(str(exc), ctx=ctx) from exc
    if record is None:
        raise click.ClickException(f"no API key named {name!r}")
    Console(stderr=True).print(f"Updated API key [bold]{escape(name)}[/].")
    click.echo(json.dumps(key_json(record), indent=2))


@keys.command("rotate")
@click.argument("name")
@click.option("--quiet", "-q", is_flag=True, help="Print only the new key, for scripts.")
@data_dir_option
@click.pass_context
def rotate(ctx: click.Context, name: str, quiet: bool, data_dir: Path | None) -> None:
    """Give the key NAME a new secret and print it once; the old secret stops working now.

    Limits, spending and usage history stay with the key.
    """
    with _open_store(ctx, data_dir) as store:
        result = store.keys.rotate_key(name)
    if result is None:
        raise click.ClickException(f"no active API key named {name!r}")
    if not quiet:
        Console(stderr=True).print(
            f"[green]Rotated API key[/] [bold]{escape(name)}[/]. Copy it now: it will not be shown again."
        )
    click.echo(result[1])


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
