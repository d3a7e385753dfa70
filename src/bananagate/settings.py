"""Settings: one object built once at start-up from flags, `BANANAGATE_*` variables and defaults."""

from __future__ import annotations

from pathlib import Path

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

    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL: the configured one, else SQLite in the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'bananagate.db'}"

    def ensure_data_dir(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return self.data_dir
