"""`bananagate channels`: the upstreams the gateway routes to.

Channels added here live in the database (keys encrypted at rest) and a running server picks up
changes within a few seconds; channels in the config file are listed alongside, read-only.
Upstream keys are never printed: listings show how many a channel has.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import click

from bananagate.cli import build_settings, data_dir_option, open_store
from bananagate.config import (
    AUTH_STYLES,
    DEFAULT_AUTH,
    DEFAULT_BASE_URLS,
    KINDS,
    ChannelConfig,
    ConfigError,
    GatewayConfig,
    channel_from_fields,
    load_config,
)
from bananagate.settings import Settings
from bananagate.store import ChannelNameTaken, KeyCipher, Store, StoreError

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Config file (default: bananagate.toml in the data dir, if present).",
)
# Stored as columns; everything else a ChannelConfig holds goes to the `options` JSON.
_COLUMNS = {"name", "kind", "base_url", "auth", "models", "priority", "weight", "keys"}


def _settings(ctx: click.Context, data_dir: Path | None, config_path: Path | None) -> Settings:
    """Subcommand options, else the ones given to the `channels` group."""
    parent = ctx.parent.params if ctx.parent is not None else {}
    return build_settings(
        data_dir or parent.get("data_dir"), config_path=config_path or parent.get("config_path")
    )


def _file_config(settings: Settings, *, strict_env: bool = False) -> tuple[GatewayConfig, Path | None]:
    path = settings.resolved_config_path()
    if path is None:
        return GatewayConfig(), None
    try:
        return load_config(path, strict_env=strict_env), path
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def _split(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def _read_keys(values: tuple[str, ...]) -> list[str]:
    keys: list[str] = []
    for value in values:
        if value == "-":  # keeps keys out of shell history and `ps`
            keys.extend(line.strip() for line in sys.stdin.read().splitlines() if line.strip())
        else:
            keys.append(value.strip())
    return keys


@click.group()
@data_dir_option
@config_option
def channels(data_dir: Path | None, config_path: Path | None) -> None:
    """Manage upstream channels (Google, CometAPI, any Gemini-compatible API, OpenAI images)."""


@channels.command("add")
@click.argument("name")
@click.option("--kind", type=click.Choice(KINDS), required=True, help="What the upstream speaks.")
@click.option("--base-url", default=None, help="Upstream base URL (required for gemini-compatible).")
@click.option(
    "--key", "keys", multiple=True, help="An upstream key; repeat for several, '-' reads them from stdin."
)
@click.option("--models", default=None, help="Comma-separated model ids it serves (default: all).")
@click.option("--auth", type=click.Choice(AUTH_STYLES), default=None, help="How the key is sent.")
@click.option("--priority", type=int, default=0, show_default=True, help="Higher is tried first.")
@click.option("--weight", type=int, default=1, show_default=True, help="Share among equal priorities.")
@click.option("--max-concurrent", type=int, default=None, help="Most calls at once per server process.")
@click.option("--model-map", "model_map", multiple=True, help="REQUESTED=UPSTREAM model name; repeatable.")
@click.option("--connect-timeout", type=float, default=None, help="Seconds (default 10).")
@click.option("--read-timeout", type=float, default=None, help="Seconds (default 300).")
@click.option("--sizes", default=None, help="openai-images: comma-separated sizes the upstream accepts.")
@data_dir_option
@config_option
@click.pass_context
def add(ctx: click.Context, /, name: str, kind: str, keys: tuple[str, ...], **options: Any) -> None:
    """Add the channel NAME (stored in the database; a running server picks it up)."""
    settings = _settings(ctx, options.pop("data_dir"), options.pop("config_path"))
    file_config, path = _file_config(settings)
    if any(c.name == name for c in file_config.channels):
        raise click.ClickException(f"channel {name!r} is defined in {path}; edit that file instead")
    fields: dict[str, Any] = {"name": name, "kind": kind, "priority": options["priority"]}
    fields["weight"] = options["weight"]
    for option in ("base_url", "auth", "connect_timeout", "read_timeout", "max_concurrent"):
        if options[option] is not None:
            fields[option] = options[option]
    if options["models"]:
        fields["models"] = _split(options["models"])
    if options["sizes"]:
        fields["sizes"] = _split(options["sizes"])
    if options["model_map"]:
        pairs = [item.partition("=") for item in options["model_map"]]
        if any(not sep or not a or not b for a, sep, b in pairs):
            raise click.BadParameter("use REQUESTED=UPSTREAM", param_hint="'--model-map'")
        fields["model_map"] = {a.strip(): b.strip() for a, _, b in pairs}
    try:
        config = channel_from_fields(fields, _read_keys(keys))
    except ConfigError as exc:
        raise click.ClickException(f"invalid channel: {exc}") from exc
    with open_store(settings) as store:
        cipher = KeyCipher.load(settings.secret_key, settings.ensure_data_dir())
        try:
            store.channels.add(
                name=config.name,
                kind=config.kind,
                keys=config.key_values(),
                cipher=cipher,
                base_url=config.base_url,
                auth=config.auth,
                models=config.models,
                priority=config.priority,
                weight=config.weight,
                options=config.model_dump(exclude=_COLUMNS, exclude_defaults=True, mode="json"),
            )
        except ChannelNameTaken as exc:
            raise click.ClickException(str(exc)) from exc
    count = len(config.keys)
    from rich.console import Console  # Rich in the commands that print with it: `serve` does without
    from rich.markup import escape

    Console(stderr=True, highlight=False).print(
        f"Added channel [bold]{escape(name)}[/] ({kind}, {count} key{'s' if count != 1 else ''})."
    )


def _row(fields: dict[str, Any], keys: int, source: str) -> dict[str, Any]:
    """One listing row, the same shape for file and database channels (defaults filled in)."""
    kind = fields["kind"]
    row: dict[str, Any] = {"name": fields["name"], "kind": kind, "source": source}
    row["base_url"] = fields.get("base_url") or DEFAULT_BASE_URLS.get(kind)
    row["auth"] = fields.get("auth") or DEFAULT_AUTH.get(kind)
    row["models"] = list(fields.get("models") or [])
    row["priority"], row["weight"] = fields.get("priority", 0), fields.get("weight", 1)
    row.update({k: v for k, v in fields.items() if k not in row})  # model_map, timeouts, sizes...
    row["keys"] = keys
    return row


def _rows(settings: Settings) -> list[dict[str, Any]]:
    file_config, _ = _file_config(settings)
    rows = [
        _row(c.model_dump(exclude={"keys"}, exclude_defaults=True, mode="json"), len(c.keys), "file")
        for c in file_config.channels
    ]
    with open_store(settings) as store:
        records = store.channels.list_channels()
    for record in records:
        shadowed = any(r["name"] == record.name for r in rows)
        rows.append(
            _row(record.fields(), record.key_count, "database (shadowed by file)" if shadowed else "database")
        )
    return rows


@channels.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@data_dir_option
@config_option
@click.pass_context
def list_(ctx: click.Context, as_json: bool, data_dir: Path | None, config_path: Path | None) -> None:
    """List channels from the config file and the database (never their keys)."""
    rows = _rows(_settings(ctx, data_dir, config_path))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    # Piped output has no terminal width; don't squeeze the table into 80 columns then.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    if not rows:
        console.print("No channels: the offline emulator serves every model.", markup=False)
        console.print("Add one with: bananagate channels add NAME --kind gemini --key KEY", markup=False)
        return
    table = Table(box=None, header_style="bold")
    for column in ("name", "kind", "source", "base url", "auth", "models", "priority", "weight", "keys"):
        table.add_column(column, no_wrap=column != "models")
    for row in rows:
        table.add_row(
            escape(row["name"]),
            row["kind"],
            row["source"],
            escape(row["base_url"] or "-"),
            row["auth"] or "-",
            escape(", ".join(row["models"]) or "all"),
            str(row["priority"]),
            str(row["weight"]),
            str(row["keys"]),
        )
    console.print(table)


@channels.command("remove")
@click.argument("name")
@data_dir_option
@config_option
@click.pass_context
def remove(ctx: click.Context, name: str, data_dir: Path | None, config_path: Path | None) -> None:
    """Remove the database channel NAME (a running server stops using it within seconds)."""
    settings = _settings(ctx, data_dir, config_path)
    with open_store(settings) as store:
        removed = store.channels.remove(name)
    if removed:
        from rich.console import Console
        from rich.markup import escape

        Console(stderr=True, highlight=False).print(f"Removed channel [bold]{escape(name)}[/].")
        return
    file_config, path = _file_config(settings)
    if any(c.name == name for c in file_config.channels):
        raise click.ClickException(f"channel {name!r} is defined in {path}; edit that file instead")
    raise click.ClickException(f"no channel named {name!r}")


@channels.command("test")
@click.argument("name")
@click.option("--model", default=None, help="Model to ask (default: the first one the channel serves).")
@data_dir_option
@config_option
@click.pass_context
def test(
    ctx: click.Context, name: str, model: str | None, data_dir: Path | None, config_path: Path | None
) -> None:
    """Send a minimal request through each key of NAME; print status and latency."""
    from bananagate.cli.channel_probe import probe_channel

    settings = _settings(ctx, data_dir, config_path)
    config, aliases = _load_channel(settings, name)
    results = anyio.run(probe_channel, config, model, aliases)
    for line in results.lines:
        click.echo(line)
    if not results.ok:
        ctx.exit(1)


def _load_channel(settings: Settings, name: str) -> tuple[ChannelConfig, dict[str, str]]:
    """The channel NAME with its keys in clear: from the file (strict about ${VARS}) or the database."""
    file_config, _ = _file_config(settings)
    if any(c.name == name for c in file_config.channels):
        strict, _ = _file_config(settings, strict_env=True)
        return next(c for c in strict.channels if c.name == name), strict.effective_aliases()
    with open_store(settings) as store:
        record = store.channels.get(name)
        if record is None:
            raise click.ClickException(f"no channel named {name!r}")
        try:
            cipher = KeyCipher.load(settings.secret_key, settings.data_dir, create=False)
            keys = store.channels.open_keys(record, cipher) if record.key_count else []
            return channel_from_fields(record.fields(), keys), file_config.effective_aliases()
        except (StoreError, ConfigError) as exc:
            raise click.ClickException(str(exc)) from exc


def channel_summary(settings: Settings, store: Store) -> str:
    """One banner line: the channels a server on these settings starts with."""
    file_config, _ = _file_config(settings)
    names = [f"{c.name} ({c.kind})" for c in file_config.channels]
    taken = {c.name for c in file_config.channels}
    names += [f"{r.name} ({r.kind})" for r in store.channels.list_channels() if r.name not in taken]
    return "channels: " + ", ".join(names) if names else ""
