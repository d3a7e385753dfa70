"""Settings: one object built once at start-up from flags, `BANANAGATE_*` variables and defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import platformdirs
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    # Where gallery images are kept (default `<data dir>/gallery`) and the most they may take;
    # past it the oldest images are deleted first.
    gallery_dir: Path | None = None
    gallery_max_bytes: int = 2 * 1024**3
    # How long a console sign-in lasts, in seconds.
    console_session_ttl: int = 12 * 3600

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
