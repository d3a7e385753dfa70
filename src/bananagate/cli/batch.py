"""`bananagate batch prompts.jsonl --out DIR`: many requests, a progress bar, a manifest, resume.

Exit codes: 0 every item done, 1 some items failed (see the manifest), 2 usage error.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bananagate.cli.generate import client_kwargs, client_options
from bananagate.client import AsyncClient
from bananagate.client.batch import MANIFEST, BatchFileError, BatchItem, BatchSummary, parse_jsonl, run_batch

console = Console(stderr=True, highlight=False, soft_wrap=True)


@click.command()
@click.argument("prompts", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--concurrency", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("-m", "--model", default=None, help="Model for items that name none.")
@click.option(
    "--async",
    "server_side",
    is_flag=True,
    help="Queue the items as batches on the gateway (:batchGenerateContent) and collect them.",
)
@click.option("--no-wait", is_flag=True, help="With --async: queue and exit; a rerun collects.")
@client_options
def batch(
    prompts: Path,
    out_dir: Path,
    concurrency: int,
    model: str | None,
    server_side: bool,
    no_wait: bool,
    **conn: Any,
) -> None:
    """Run every prompt of PROMPTS (JSONL) into --out; a rerun skips items already done.

    Each line: "a prompt", or {"prompt": ..., "id"?, "model"?, "aspect_ratio"?, "image_size"?,
    "images"?: [paths relative to PROMPTS], "collage"?: true}. Results and errors go to
    DIR/manifest.jsonl.
    """
    try:
        items = parse_jsonl(prompts.read_text())
    except (BatchFileError, UnicodeDecodeError) as exc:
        raise click.UsageError(f"{prompts}: {exc}") from None
    if no_wait and not server_side:
        raise click.UsageError("--no-wait needs --async")
    if server_side:
        from bananagate.cli.jobs import run_server_batches

        summary = run_server_batches(items, prompts.parent, out_dir, model, wait=not no_wait, conn=conn)
    else:
        summary = asyncio.run(_run(items, prompts.parent, out_dir, concurrency, model, conn))
    console.print(
        f"{len(items)} items: {summary.done} done, {summary.failed} failed, "
        f"{summary.skipped} already done; manifest {out_dir / MANIFEST}"
    )
    if summary.failed:
        for record in summary.records:
            if record.get("status") == "error":
                console.print(f"[red]failed[/] {record['id']} (line {record['line']}): {record.get('error')}")
    raise click.exceptions.Exit(summary.exit_code)


async def _run(
    items: list[BatchItem],
    base_dir: Path,
    out_dir: Path,
    concurrency: int,
    model: str | None,
    conn: dict[str, Any],
) -> BatchSummary:
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("batch", total=len(items), failed=0)
        failed = 0

        def on_item(item: BatchItem, record: dict[str, Any] | None) -> None:
            nonlocal failed
            if record is not None and record["status"] != "ok":
                failed += 1
            progress.update(task, advance=1, failed=failed)

        async with AsyncClient(model=model, **client_kwargs(**conn)) as client:
            return await run_batch(
                client, items, out_dir, base_dir=base_dir, concurrency=concurrency, on_item=on_item
            )
