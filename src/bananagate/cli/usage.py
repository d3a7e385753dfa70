"""`bananagate usage`: totals from the usage ledger, per day, model or key, as a table or CSV."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bananagate.cli import build_settings, data_dir_option
from bananagate.protocol.pricing import format_usd
from bananagate.server.keyspec import parse_since
from bananagate.store import Store, StoreError

COLUMNS = ("requests", "succeeded", "images", "prompt_tokens", "output_tokens", "cost_usd")


@click.command()
@click.option("--key", "key_name", default=None, help="Only this key (by name).")
@click.option("--model", default=None, help="Only this model id.")
@click.option("--since", default=None, help="From this date/time (UTC), or a duration back: 7d, 12h.")
@click.option("--until", default=None, help="Up to (not including) this date/time.")
@click.option("--by", type=click.Choice(["day", "model", "key"]), default=None, help="One row per group.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV instead of a table.")
@data_dir_option
def usage(
    key_name: str | None,
    model: str | None,
    since: str | None,
    until: str | None,
    by: str | None,
    as_csv: bool,
    data_dir: Path | None,
) -> None:
    """Requests, images, tokens and cost from the ledger (costs in USD, exact)."""
    try:
        start = parse_since(since) if since else None
        end = parse_since(until) if until else None
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    settings = build_settings(data_dir)
    try:
        with Store.from_settings(settings) as store:
            filters: dict[str, Any] = {"key_name": key_name, "model": model, "since": start, "until": end}
            rows = store.ledger.summary(by=by, **filters)  # type: ignore[arg-type]
            total = store.ledger.summary(**filters)[0]
    except (StoreError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    if by is None:
        rows = []
    heading = by or "total"
    lines = [
        [
            r.group or "",
            r.requests,
            r.succeeded,
            r.images,
            r.prompt_tokens,
            r.output_tokens,
            format_usd(r.cost_nanos),
        ]
        for r in rows
    ]
    total_line = [
        "total",
        total.requests,
        total.succeeded,
        total.images,
        total.prompt_tokens,
        total.output_tokens,
        format_usd(total.cost_nanos),
    ]
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow([heading, *COLUMNS])
        writer.writerows([*lines, total_line])
        return
    table = Table(box=None, header_style="bold")
    for column in (heading, *COLUMNS):
        table.add_column(column, justify="left" if column == heading else "right")
    for line in [*lines, total_line]:
        table.add_row(*(escape(str(v)) for v in line))
    Console().print(table)
