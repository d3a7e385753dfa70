"""`bananagate serve`: the gateway on its embedded defaults."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import click
import uvicorn

from bananagate import __version__
from bananagate.cli import build_settings, data_dir_option, open_store
from bananagate.cli.channels import channel_summary, config_option
from bananagate.config import ConfigError
from bananagate.protocol.catalog import MODELS
from bananagate.server import create_app
from bananagate.server.admin import ensure_admin_key
from bananagate.server.allocator import tune_allocator
from bananagate.server.http11 import guarded_protocol
from bananagate.settings import Settings
from bananagate.store import StoreError, ensure_default_key
from bananagate.store.db import upgrade_schema_in_child

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)


def _raise_open_file_limit(wanted: int = 65536) -> None:
    """Lift the soft limit on open files towards the hard one: each client connection is a file,
    and the common default of 1024 would make a few hundred idle clients stop new ones from being
    accepted at all (their connections are closed by the header deadline, but only later)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def say(line: str) -> None:
    """A banner line on stderr (colours only on a terminal)."""
    click.echo(line, err=True)


def _uvicorn_options(settings: Settings) -> dict[str, object]:
    """What both ways of running take: the guarded HTTP/1.1 protocol (header deadline, enveloped
    400s; see server/http11.py) and how long SIGTERM waits for in-flight requests."""
    return {
        "http": guarded_protocol(settings.header_timeout),
        "ws": "none",  # no WebSocket routes: uvicorn's "auto" would load a WebSocket library (~1 MB)
        "timeout_graceful_shutdown": max(int(settings.graceful_timeout), 0),
        "log_level": settings.log_level.lower(),
        "access_log": False,  # our own access line carries the request id and key name
        "log_config": None,
    }


def _run_workers(settings: Settings, workers: int) -> None:
    """Several processes on one port: each builds the app from the environment (settings given
    as flags are exported for them). Limits are shared only through Redis (BANANAGATE_REDIS_URL);
    budgets are exact in the database either way."""
    import os
    import shutil

    os.environ["BANANAGATE_DATA_DIR"] = str(settings.data_dir)
    os.environ["BANANAGATE_LOG_LEVEL"] = settings.log_level
    if settings.config_path is not None:
        os.environ["BANANAGATE_CONFIG_PATH"] = str(settings.config_path)
    # Prometheus samples of all workers go to one directory that /metrics aggregates.
    metrics_dir = settings.data_dir / f"metrics-{os.getpid()}"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    try:
        uvicorn.run(
            "bananagate.server.app:app_from_env",
            factory=True,
            workers=workers,
            host=settings.host,
            port=settings.port,
            **_uvicorn_options(settings),  # type: ignore[arg-type]
        )
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


@click.command()
@click.option("--host", default=None, help="Interface to bind (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to bind (default 8000).")
@data_dir_option
@click.option("--log-level", default=None, help="debug, info, warning or error (default info).")
@config_option
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    envvar="BANANAGATE_WORKERS",
    help="Worker processes sharing the port (default 1; env BANANAGATE_WORKERS).",
)
@click.option(
    "--graceful-timeout",
    type=click.FloatRange(min=0),
    default=None,
    help="On SIGTERM, seconds in-flight requests get to finish before they are cut (default 30).",
)
@click.option(
    "--header-timeout",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds a connection has to send a request's headers before it is closed (default 10).",
)
def serve(
    host: str | None,
    port: int | None,
    data_dir: Path | None,
    log_level: str | None,
    config_path: Path | None,
    workers: int,
    graceful_timeout: float | None,
    header_timeout: float | None,
) -> None:
    """Run the gateway (Gemini API on the offline emulator unless channels say otherwise)."""
    if config_path is not None and not config_path.is_file():
        raise click.BadParameter(f"no such file: {config_path}", param_hint="'--config'")
    settings = build_settings(
        data_dir,
        host=host,
        port=port,
        log_level=log_level,
        config_path=config_path,
        graceful_timeout=graceful_timeout,
        header_timeout=header_timeout,
    )
    _configure_logging(settings.log_level)
    _raise_open_file_limit()
    tune_allocator()  # before the app allocates anything big; workers inherit it by environment
    try:
        data = settings.ensure_data_dir()
    except OSError as exc:
        raise click.ClickException(f"cannot use data directory {settings.data_dir}: {exc}") from exc
    # A first start (or an upgrade) migrates in a forked child, so the server never loads
    # Alembic; whatever goes wrong there, `open_store` meets again and reports in one line.
    with contextlib.suppress(StoreError):
        upgrade_schema_in_child(settings.resolved_database_url())
    with open_store(settings) as store:
        new_key = ensure_default_key(store, data)
        ensure_admin_key(settings.admin_key, data)  # the admin API's key, made on first start
        base = f"http://{settings.host}:{settings.port}"
        # click's styling, not Rich's: a server would otherwise keep Rich (~2.5 MB) for five lines.
        say(
            click.style(f"bananagate {__version__}", fg="yellow", bold=True)
            + " serving the Gemini API at "
            + click.style(f"{base}/v1beta", bold=True)
        )
        say(f"  data dir: {data}")
        channels = channel_summary(settings, store)
        say(f"  {channels or 'models (offline emulator): ' + ', '.join(m.id for m in MODELS)}")
        if new_key:
            secret = click.style(new_key, fg="green", bold=True)
            say(f"  created API key {click.style('default', bold=True)}: {secret}")
            say(f"  (saved to {data / 'default.key'}, mode 0600; it is not shown again)")
        else:
            say("  API keys: see `bananagate keys list`")
        try:
            app = create_app(settings, store=store)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from exc
        if workers > 1:
            _run_workers(settings, workers)
            return
        uvicorn.run(app, host=settings.host, port=settings.port, **_uvicorn_options(settings))  # type: ignore[arg-type]
