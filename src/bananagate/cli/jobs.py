"""`bananagate submit` and `bananagate wait`: queue a job on the gateway, collect it later.

`submit` prints the job's name (`jobs/ID`) on stdout and nothing else, so scripts can write
`job=$(bananagate submit "...")`; `wait jobs/ID` saves its images like `generate` does, and
`wait batches/ID --out DIR` saves a batch's items and records them in DIR/manifest.jsonl.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from bananagate.cli.batch_async import collect, run_async
from bananagate.cli.generate import (
    client_kwargs,
    client_options,
    err,
    generation_options,
    image_argument,
    out,
    output_stem,
    report,
    reported_errors,
)
from bananagate.client import Client
from bananagate.client.batch import MANIFEST, BatchItem, BatchSummary
from bananagate.client.jobs import JobCancelledError, JobTimeoutError


@click.command()
@click.argument("prompt")
@click.option(
    "-i", "--image", "images", multiple=True, help="Input image (path, - or data: URL); repeatable."
)
@click.option(
    "--webhook", "webhook_url", default=None, metavar="URL", help="POSTed (signed) when the job ends."
)
@click.option("--webhook-secret", default=None, help="HMAC secret for this job's webhook (16+ characters).")
@click.option("--wait", "wait_for", is_flag=True, help="Wait for the job and save its images, like generate.")
@generation_options
@client_options
def submit(
    prompt: str,
    images: tuple[str, ...],
    webhook_url: str | None,
    webhook_secret: str | None,
    wait_for: bool,
    model: str | None,
    aspect_ratio: str | None,
    image_size: str | None,
    output: Path | None,
    **conn: Any,
) -> None:
    """Queue PROMPT (with any --image) as a job on the gateway; print its name."""
    inputs = [image_argument(v) for v in images]
    started = time.monotonic()
    with reported_errors(), Client(**client_kwargs(**conn)) as client:
        job = client.submit(
            prompt,
            inputs or None,
            model=model,
            aspect_ratio=aspect_ratio,
            image_size=image_size,
            webhook_url=webhook_url,
            webhook_secret=webhook_secret,
        )
        out.print(job.name)
        if not wait_for:
            return
        result = _wait_job(client, job.name, None, 1.0)
    report(result, output_stem(output, prompt), started)


def _wait_job(client: Client, name: str, timeout: float | None, poll: float) -> Any:
    try:
        return client.wait(name, timeout=timeout, poll_interval=poll)
    except (JobCancelledError, JobTimeoutError) as exc:
        err.print(f"[red]{type(exc).__name__}:[/] {exc}")
        raise click.exceptions.Exit(1) from None


@click.command()
@click.argument("name")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None, help="Job: file stem or path.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Batch: directory.",
)
@click.option("--max-wait", "wait_timeout", type=float, default=None, help="Give up after this many seconds.")
@click.option("--poll", type=float, default=2.0, show_default=True, help="Seconds between status checks.")
@client_options
def wait(
    name: str, output: Path | None, out_dir: Path | None, wait_timeout: float | None, poll: float, **conn: Any
) -> None:
    """Wait for a job (jobs/ID: save its images) or a batch (batches/ID: save every item)."""
    started = time.monotonic()
    with reported_errors(), Client(**client_kwargs(**conn)) as client:
        if name.startswith("batches/"):
            target = out_dir or Path(".")
            try:
                records = collect(client, name, target, poll=poll, timeout=wait_timeout)
            except JobTimeoutError as exc:
                err.print(f"[red]{type(exc).__name__}:[/] {exc}")
                raise click.exceptions.Exit(1) from None
            failed = sum(1 for r in records if r["status"] != "ok")
            out.print(f"{name}: {len(records) - failed} done, {failed} failed; manifest {target / MANIFEST}")
            raise click.exceptions.Exit(1 if failed else 0)
        result = _wait_job(client, name, wait_timeout, poll)
    report(result, output_stem(output, name.rpartition("/")[2]), started)


def run_server_batches(
    items: list[BatchItem],
    base_dir: Path,
    out_dir: Path,
    model: str | None,
    *,
    wait: bool,
    conn: dict[str, Any],
) -> BatchSummary:
    """`batch --async`: queue the items as gateway batches; collect them unless not `wait`."""

    def submitted(name: str, count: int) -> None:
        err.print(f"queued {count} item(s) as {name}")

    def collected(records: list[dict[str, Any]]) -> None:
        ok = sum(1 for r in records if r["status"] == "ok")
        err.print(f"collected {len(records)} item(s): {ok} done, {len(records) - ok} failed")

    with reported_errors(), Client(**client_kwargs(**conn)) as client:
        summary, in_flight = run_async(
            client,
            items,
            base_dir,
            out_dir,
            model=model,
            wait=wait,
            on_submit=submitted,
            on_collect=collected,
        )
    for name in in_flight:
        out.print(name)
    if in_flight:
        err.print(f"{len(in_flight)} batch(es) in flight; run the same command again to collect them")
    return summary
