"""Where requests go and how they authenticate: arguments, then environment, then defaults.

No I/O beyond reading the local gateway's key file; the clients turn a `ClientConfig` into an
httpx client.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args
from urllib.parse import urlsplit

import httpx

from bananagate.client.errors import ConfigurationError
from bananagate.client.retry import RetryPolicy

AuthStyle = Literal["raw", "bearer", "goog", "query"]
AUTH_STYLES: tuple[str, ...] = get_args(AuthStyle)

LOCAL_BASE_URL = "http://127.0.0.1:8000"
COMETAPI_BASE_URL = "https://api.cometapi.com"
GOOGLE_BASE_URL = "https://generativelanguage.googleapis.com"
DEFAULT_MODEL = "gemini-2.5-flash-image"

# One image takes seconds to a minute or more upstream (4K on Pro longer still), so the read
# timeout is minutes; connecting should still fail fast so a dead host is retried quickly.
DEFAULT_TIMEOUT = httpx.Timeout(300.0, connect=15.0)

ENV_BASE_URL = "BANANAGATE_BASE_URL"
ENV_API_KEY = "BANANAGATE_API_KEY"
ENV_AUTH = "BANANAGATE_AUTH"

_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]", "0.0.0.0"})


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Everything a client needs to address a server. Build it with `resolve_config`."""

    base_url: str
    api_key: str | None
    auth: AuthStyle
    timeout: httpx.Timeout = field(default_factory=lambda: DEFAULT_TIMEOUT)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    default_model: str = DEFAULT_MODEL
    api_version: str = "v1beta"
    headers: dict[str, str] = field(default_factory=dict)
    # Where the key came from, for error hints ("argument", "env", "key file", None).
    key_source: str | None = None

    def auth_headers(self) -> dict[str, str]:
        if not self.api_key:
            return {}
        if self.auth == "raw":
            return {"Authorization": self.api_key}
        if self.auth == "bearer":
            return {"Authorization": f"Bearer {self.api_key}"}
        if self.auth == "goog":
            return {"x-goog-api-key": self.api_key}
        return {}

    def auth_params(self) -> dict[str, str]:
        return {"key": self.api_key} if self.auth == "query" and self.api_key else {}


def is_loopback(base_url: str) -> bool:
    host = urlsplit(base_url).hostname or ""
    return host in _LOOPBACK_HOSTS


def default_key_file() -> Path:
    """`<data dir>/default.key` of the default data dir (what `bananagate serve` writes)."""
    from bananagate.settings import Settings

    return Settings().data_dir / "default.key"


def read_default_key() -> str | None:
    try:
        key = default_key_file().read_text().strip()
    except OSError:
        return None
    return key or None


def _check_auth(auth: str) -> AuthStyle:
    if auth not in AUTH_STYLES:
        raise ConfigurationError(f"unknown auth style {auth!r}; expected one of {', '.join(AUTH_STYLES)}")
    return auth  # type: ignore[return-value]


def resolve_config(
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    auth: str | None = None,
    preset: Literal["bananagate", "cometapi", "google"] = "bananagate",
    timeout: float | httpx.Timeout | None = None,
    retry: RetryPolicy | None = None,
    model: str | None = None,
    headers: dict[str, str] | None = None,
    api_version: str = "v1beta",
) -> ClientConfig:
    """Arguments win, then the environment, then the preset's defaults.

    The bananagate preset reads `BANANAGATE_BASE_URL` / `BANANAGATE_API_KEY` / `BANANAGATE_AUTH`
    and, for a gateway on this machine, falls back to the key file `bananagate serve` writes.
    The CometAPI and Google presets read only their own variables (`COMETAPI_KEY`;
    `GOOGLE_API_KEY` then `GEMINI_API_KEY`), so a gateway key is never sent to a third party.
    """
    key_source: str | None = "argument" if api_key else None
    if preset == "cometapi":
        url = base_url or COMETAPI_BASE_URL
        style = auth or "raw"
        if not api_key:
            api_key, key_source = os.environ.get("COMETAPI_KEY"), "env"
    elif preset == "google":
        url = base_url or GOOGLE_BASE_URL
        style = auth or "goog"
        if not api_key:
            api_key = os.environ.get("GOOGLE_API_KEY") or os.environ.get("GEMINI_API_KEY")
            key_source = "env"
    else:
        url = base_url or os.environ.get(ENV_BASE_URL) or LOCAL_BASE_URL
        # The gateway accepts every style; x-goog-api-key is what Gemini-native clients send.
        style = auth or os.environ.get(ENV_AUTH) or "goog"
        if not api_key and os.environ.get(ENV_API_KEY):
            api_key, key_source = os.environ[ENV_API_KEY], "env"
        if not api_key and is_loopback(url):
            api_key, key_source = read_default_key(), "key file"
    if not api_key:
        key_source = None
    if isinstance(timeout, int | float):
        timeout = httpx.Timeout(float(timeout), connect=min(15.0, float(timeout)))
    return ClientConfig(
        base_url=url.rstrip("/"),
        api_key=api_key.strip() if api_key else None,
        auth=_check_auth(style),
        timeout=timeout or DEFAULT_TIMEOUT,
        retry=retry or RetryPolicy(),
        default_model=model or DEFAULT_MODEL,
        api_version=api_version,
        headers=dict(headers or {}),
        key_source=key_source,
    )
