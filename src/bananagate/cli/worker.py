"""`bananagate worker`: run queued jobs and batches in a process of its own (no HTTP port).

Any number of workers (and `serve` processes, unless `BANANAGATE_JOBS_WORKER=false`) share the
queue in the database. With PostgreSQL they may run on any host; Redis
(`BANANAGATE_REDIS_URL`) wakes them the moment a job is queued instead of at their next poll,
and shares key rate limits with the gateways. The worker is the gateway app without a server:
the same routing, metering and gallery, started and stopped through the app's lifespan.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import click
from rich.console import Console
from starlette.applications import Starlette

from bananagate.cli import build_settings, data_dir_option
from bananagate.cli.channels import config_option
from bananagate.config import ConfigError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


async def _serve_jobs(app: Starlette, console: Console) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with app.router.lifespan_context(app):
        console.print(
            "[bold yellow]bananagate worker[/] running queued jobs (Ctrl-C stops; running jobs are requeued)"
        )
        await stop.wait()


@click.command()
@data_dir_option
@click.option("--concurrency", type=click.IntRange(min=1), default=None, help="Jobs run at once (default 4).")
@click.option("--log-level", default=None, help="debug, info, warning or error (default info).")
@config_option
def worker(
    data_dir: Path | None, concurrency: int | None, log_level: str | None, config_path: Path | None
) -> None:
    """Run queued jobs and batches; several workers share the queue in the database."""
    settings = build_settings(
        data_dir, jobs_concurrency=concurrency, log_level=log_level, config_path=config_path, jobs_worker=True
    )
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
    console = Console(stderr=True, highlight=False)
    if not settings.database_url:
        console.print(
            f"  database: SQLite in {settings.data_dir} (workers on other hosts need "
            "BANANAGATE_DATABASE_URL=postgresql://...)"
        )
    from bananagate.server import create_app

    try:
        app = create_app(settings)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    asyncio.run(_serve_jobs(app, console))
