"""Settings: one object built once at start-up from flags, `BANANAGATE_*` variables and defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# ~6 answers of 1.4 MB: a writer this far behind has less CPU or disk than the requests need,
# and requests then wait for it (`GalleryRecorder.room`) rather than the gateway's memory
# growing. Issue #9's bound is 150 MB of RSS at 8 concurrent 1.4 MB requests and answers, the
# backlog included: on `i2i` c=8 alone it peaked at 152-155 MB with 16 MiB, at 140-147 with
# 8 MiB (in full bench runs 165-169 against 153-154), when the gateway started at ~95 MB; since it
# starts at ~80 MB, 135 with 8 MiB (bench/results/2026-12-06-182844.json). With the writer the
# bottleneck the queue is always full either way; the smaller batches cost 0.89 × the requests/s on `t2i` c=8
# (`bench.ab`, ten paired rounds): the price of the bound, which a gateway with memory to spare
# can raise (`BANANAGATE_GALLERY_BACKLOG_BYTES`).
GALLERY_BACKLOG_BYTES = 8 * 1024 * 1024


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("bananagate", appauthor=False))


class Settings(BaseSettings):
    """Everything the gateway needs to know about its environment."""

    model_config = SettingsConfigDict(env_prefix="BANANAGATE_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = None
    redis_url: str | None = None
    admin_key: str | None = None
    secret_key: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    # Largest request body accepted, in bytes (Google's guidance for inline requests is 20 MB).
    max_body_bytes: int = 20 * 1024 * 1024
    # Honour the `x-bananagate-emulate` fault-injection header on emulator calls.
    emulator_faults: bool = True
    # Largest decoded input image, in pixels, before it is refused as a decompression bomb.
    max_image_pixels: int = 64_000_000
    log_level: str = "info"
    # The config file with channels and aliases (default: bananagate.toml in the data dir, if any).
    config_path: Path | None = None
    # --- metering: limits, reservations, prices (see README "Keys, limits and usage") ---
    # Namespace of every Redis key, so several gateways (or tests) can share one Redis.
    redis_prefix: str = "bananagate:"
    # A budget hold or concurrency lease outlives a crashed process by at most this long; live
    # processes renew theirs every quarter of it.
    reservation_ttl_seconds: float = 120.0
    # How often each process looks for expired holds to release.
    sweep_interval_seconds: float = 30.0
    # How long a process may answer from its memory of an API key instead of the database (0:
    # never). A key revoked or changed through this process is forgotten at once; through
    # another (the CLI, another worker or gateway), it still works for at most this long.
    key_cache_seconds: float = 1.0
    # Charge answers without an image (safety block, NO_IMAGE, text only) by their tokens.
    charge_without_image: bool = False
    # Price overrides by model id, e.g. {"gemini-2.5-flash-image": {"per_image": {"1K": "0.05"}}}
    # (JSON in BANANAGATE_PRICES), and/or a JSON or TOML file of the same shape.
    prices: dict[str, dict[str, Any]] = Field(default_factory=dict)
    prices_file: Path | None = None
    # --- OpenAI-compatible surface (server/openai*.py) ---
    # Base of the image links `response_format=url` returns (e.g. https://gw.example.com) when the
    # gateway sits behind a proxy; by default the URL the request came in on.
    public_url: str | None = None
    # How long (seconds) an image link works; the file is deleted a minute after that.
    image_url_ttl: int = 3600
    # SSRF guard for `image_url`s and `fileData` URIs: loopback, private and link-local addresses
    # are refused unless allowed here (everything, or the listed comma-separated CIDRs).
    fetch_allow_private: bool = False
    fetch_allowed_networks: str = ""
    fetch_max_bytes: int = 7 * 1024 * 1024
    fetch_timeout: float = 10.0
    # --- web console at /console and its gallery (bananagate/console) ---
    # Serve the console and keep every generated image in the gallery (off: neither, no overhead).
    console: bool = True
    # Which images the gallery keeps: `all` that the gateway delivers, or only the console
    # playground's (`playground`: the console without the gallery's cost on every API call,
    # which is about as much CPU per image answer as the rest of the gateway's work together).
    gallery: Literal["all", "playground"] = "all"
    # Where gallery images are kept (default `<data dir>/gallery`) and the most they may take;
    # past it the oldest images are deleted first.
    gallery_dir: Path | None = None
    gallery_max_bytes: int = 2 * 1024**3
    # Answers waiting for the gallery's writer, in bytes, before new ones wait for room: memory
    # against throughput with the gallery on (see GALLERY_BACKLOG_BYTES).
    gallery_backlog_bytes: int = Field(default=GALLERY_BACKLOG_BYTES, ge=1024**2)
    # How long a console sign-in lasts, in seconds.
    console_session_ttl: int = 12 * 3600
    # --- reliability and security (README "Reliability and security") ---
    # Browser origins allowed to call the API (comma-separated, e.g. https://app.example.com, or
    # `*`); empty: no CORS headers at all, so browsers on other sites cannot read answers.
    cors_origins: str = ""
    # A connection must deliver a request's headers within this many seconds of opening (or of
    # its previous response), else it is closed: slowloris clients cannot pin connections.
    header_timeout: float = 10.0
    # A request body may pause at most `body_timeout` seconds between chunks, and must arrive
    # at `body_min_rate` bytes/s on average once `body_timeout` has passed; else 408.
    body_timeout: float = 30.0
    body_min_rate: int = 1024
    # Wrong API keys (or admin keys) one client address may present per minute before all its
    # authenticated requests get 429 for the rest of the minute (0: no limit). Per process.
    auth_failures_per_minute: int = 20
    # On SIGTERM, in-flight requests get this many seconds to finish before they are cut.
    graceful_timeout: float = 30.0
    # --- asynchronous jobs and batches (server/jobs.py; README "Jobs and batches") ---
    # Run queued jobs inside `serve` too; off when separate `bananagate worker` processes do it.
    jobs_worker: bool = True
    # Jobs one worker process runs at once.
    jobs_concurrency: int = 4
    # A claimed job is another worker's to retry this long after its worker stopped renewing it.
    jobs_lease_seconds: float = 60.0
    # How often an idle worker looks for due jobs (submits in this process, or announced through
    # Redis, wake it at once).
    jobs_poll_interval: float = 2.0
    # Runs of one job before it fails for good (upstream 429/5xx/timeouts, workers lost mid-job).
    jobs_max_attempts: int = 5
    # Wait before retrying a failed attempt: this, doubled per attempt, capped at 10 minutes.
    jobs_retry_backoff_seconds: float = 5.0
    # A job still queued after this long fails; finished jobs and results are kept this long.
    jobs_expire_seconds: float = 48 * 3600
    jobs_retention_seconds: float = 48 * 3600
    jobs_sweep_interval_seconds: float = 30.0
    # Requests one `:batchGenerateContent` may carry.
    jobs_max_batch_items: int = 1000
    # Webhooks: the HMAC secret (default: generated into `<data dir>/webhook.secret`), attempts
    # before giving up, first retry delay (doubled per attempt) and per-call timeout. Targets
    # pass the same SSRF guard as image fetches (`fetch_allow_private`, `fetch_allowed_networks`).
    webhook_secret: str | None = None
    webhook_max_attempts: int = 6
    webhook_backoff_seconds: float = 10.0
    webhook_timeout: float = 10.0
    # --- request guarantees (README "Request guarantees") ---
    # Deadline of a request whose client sends no `X-Server-Timeout`, in seconds (0: none).
    request_timeout_seconds: float = 600.0
    # How long the answer of a request sent with an `Idempotency-Key` is kept for its repeats.
    idempotency_retention_seconds: float = 24 * 3600
    # Where kept answers too big for a database row live (default `<data dir>/idempotency`);
    # gateways sharing a database must share this directory too.
    idempotency_dir: Path | None = None
    # How long a thought signature or image is remembered with the channel that produced it.
    affinity_ttl_seconds: float = 24 * 3600

    def resolved_idempotency_dir(self) -> Path:
        return self.idempotency_dir if self.idempotency_dir is not None else self.data_dir / "idempotency"

    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL: the configured one, else SQLite in the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'bananagate.db'}"

    def resolved_config_path(self) -> Path | None:
        """The config file to read: the configured one, else `<data dir>/bananagate.toml` if present."""
        if self.config_path is not None:
            return self.config_path
        default = self.data_dir / "bananagate.toml"
        return default if default.is_file() else None

    def resolved_gallery_dir(self) -> Path:
        return self.gallery_dir if self.gallery_dir is not None else self.data_dir / "gallery"

    def ensure_data_dir(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return self.data_dir
