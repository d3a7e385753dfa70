"""`bananagate serve`: the gateway on its embedded defaults."""

from __future__ import annotations

import logging
from pathlib import Path

import click
import uvicorn
from rich.console import Console

from bananagate import __version__
from bananagate.cli import build_settings, data_dir_option
from bananagate.protocol.catalog import MODELS
from bananagate.server import create_app
from bananagate.store import Store, ensure_default_key

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)


@click.command()
@click.option("--host", default=None, help="Interface to bind (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to bind (default 8000).")
@data_dir_option
@click.option("--log-level", default=None, help="debug, info, warning or error (default info).")
def serve(host: str | None, port: int | None, data_dir: Path | None, log_level: str | None) -> None:
    """Run the gateway (Gemini API on the offline emulator unless channels say otherwise)."""
    settings = build_settings(data_dir, host=host, port=port, log_level=log_level)
    _configure_logging(settings.log_level)
    console = Console(stderr=True, highlight=False)
    data = settings.ensure_data_dir()
    store = Store.open(settings.resolved_database_url())
    try:
        new_key = ensure_default_key(store, data)
        base = f"http://{settings.host}:{settings.port}"
        console.print(
            f"[bold yellow]bananagate {__version__}[/] serving the Gemini API at [bold]{base}/v1beta[/]"
        )
        console.print(f"  data dir: {data}")
        console.print(f"  models (offline emulator): {', '.join(m.id for m in MODELS)}")
        if new_key:
            console.print(f"  created API key [bold]default[/]: [bold green]{new_key}[/]")
            console.print(f"  (saved to {data / 'default.key'}, mode 0600; it is not shown again)")
        else:
            console.print("  API keys: see `bananagate keys list`")
        app = create_app(settings, store=store)
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level.lower(),
            access_log=False,  # our own access line carries the request id and key name
            log_config=None,
            timeout_graceful_shutdown=30,
        )
    finally:
        store.close()
