"""The configuration file (`bananagate.toml`): upstream channels, model aliases, routing knobs.

Channels come from two places, merged by name when the server starts:
* this file (read once at start-up; edit it and restart), and
* the database, managed with `bananagate channels add/remove` (picked up while running).

A file channel and a database channel may not share a name; if they do, the file wins and the
server logs a warning. Upstream keys may be written as `${ENV_VAR}` so the file itself need not
hold secrets; database keys are encrypted at rest (see `bananagate.store.crypto`).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from bananagate.protocol.catalog import MODELS, find_model

Kind = Literal["gemini", "cometapi", "gemini-compatible", "openai-images", "emulator"]
AuthStyle = Literal["raw", "bearer", "goog", "query"]

KINDS: tuple[str, ...] = ("gemini", "cometapi", "gemini-compatible", "openai-images", "emulator")
AUTH_STYLES: tuple[str, ...] = ("raw", "bearer", "goog", "query")

DEFAULT_BASE_URLS: dict[str, str] = {
    "gemini": "https://generativelanguage.googleapis.com",
    "cometapi": "https://api.cometapi.com",
    "openai-images": "https://api.openai.com",
}
# How each kind sends its key unless `auth` says otherwise (protocol reference §2).
DEFAULT_AUTH: dict[str, AuthStyle] = {
    "gemini": "goog",
    "cometapi": "raw",
    "gemini-compatible": "goog",
    "openai-images": "bearer",
}
# Google retired the preview name; aggregators still advertise it (protocol reference §1.4).
DEFAULT_ALIASES: dict[str, str] = {"gemini-2.5-flash-image-preview": "gemini-2.5-flash-image"}

CONFIG_FILENAME = "bananagate.toml"
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(ValueError):
    """The configuration is invalid. Messages name fields and variables, never secret values."""


def _sendable(key: str) -> bool:
    return key.isascii() and key.isprintable()


class ChannelConfig(BaseModel):
    """One upstream: where it is, how to authenticate, what it serves and how much we prefer it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=f"^{NAME_PATTERN}$")
    kind: Kind
    base_url: str | None = None
    auth: AuthStyle | None = None
    keys: tuple[SecretStr, ...] = ()
    # Catalog model ids (or their aliases) this channel serves; empty means every catalog model.
    models: tuple[str, ...] = ()
    # Requested model -> the name the upstream knows it by (URL for Gemini kinds, `model` for OpenAI).
    model_map: dict[str, str] = Field(default_factory=dict)
    priority: int = 0
    weight: int = Field(default=1, ge=1, le=10_000)
    # Most calls this process sends the channel at once; more wait (or go elsewhere). None: no cap.
    max_concurrent: int | None = Field(default=None, ge=1)
    connect_timeout: float = Field(default=10.0, gt=0)
    # Image calls can take minutes; for streams this is the longest silence between two chunks.
    read_timeout: float = Field(default=300.0, gt=0)
    api_version: str = "v1beta"
    # openai-images only: the sizes the upstream accepts (default: gpt-image-1's three).
    sizes: tuple[str, ...] | None = None
    enabled: bool = True

    @field_validator("models")
    @classmethod
    def _known_models(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [m for m in value if find_model(m) is None]
        if unknown:
            known = ", ".join(m.id for m in MODELS)
            raise ValueError(f"unknown model(s) {', '.join(unknown)}; known: {known}")
        return value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("base_url must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None:
            bad = [s for s in value if not re.fullmatch(r"[1-9][0-9]*x[1-9][0-9]*", s)]
            if bad or not value:
                raise ValueError(f"sizes must be WIDTHxHEIGHT values, got {list(value)}")
        return value

    @model_validator(mode="after")
    def _kind_rules(self) -> ChannelConfig:
        if self.kind == "emulator":
            if self.keys or self.base_url:
                raise ValueError("an emulator channel takes no base_url and no keys")
            return self
        if not self.keys or any(not k.get_secret_value().strip() for k in self.keys):
            raise ValueError(f"a {self.kind} channel needs at least one non-empty key")
        # A key travels in a header or the query string: a control or non-ASCII character in it
        # could never be sent (the HTTP client refuses it at call time), so it is a config error.
        if any(not _sendable(k.get_secret_value().strip()) for k in self.keys):
            raise ValueError("a key holds a control or non-ASCII character (a line break pasted with it?)")
        if self.kind == "gemini-compatible" and not self.base_url:
            raise ValueError("a gemini-compatible channel needs base_url")
        if self.sizes is not None and self.kind != "openai-images":
            raise ValueError("sizes only applies to openai-images channels")
        return self

    # --- derived views -----------------------------------------------------------------------

    @property
    def resolved_base_url(self) -> str:
        return self.base_url or DEFAULT_BASE_URLS.get(self.kind, "")

    @property
    def resolved_auth(self) -> AuthStyle:
        return self.auth or DEFAULT_AUTH.get(self.kind, "bearer")

    def key_values(self) -> list[str]:
        return [k.get_secret_value().strip() for k in self.keys]

    def served_models(self) -> frozenset[str]:
        """Canonical catalog ids this channel serves."""
        if not self.models:
            return frozenset(m.id for m in MODELS)
        return frozenset(model.id for m in self.models if (model := find_model(m)) is not None)

    def upstream_model(self, requested: str, canonical: str) -> str:
        """The model name the upstream is asked for."""
        return self.model_map.get(requested) or self.model_map.get(canonical) or requested


class RoutingConfig(BaseModel):
    """How hard the router tries. Times in seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Tries on one channel (the first plus retries with backoff) before failing over.
    attempts_per_channel: int = Field(default=2, ge=1, le=10)
    # Upstream attempts per client request, across all channels.
    max_attempts: int = Field(default=6, ge=1, le=50)
    # No new attempt starts later than this after the request arrived.
    retry_window: float = Field(default=90.0, gt=0)
    backoff_base: float = Field(default=0.5, ge=0)
    backoff_max: float = Field(default=8.0, ge=0)
    # Longest wait for a cooling key / half-opening circuit when nothing else can serve.
    max_cooldown_wait: float = Field(default=10.0, ge=0)
    # A 429 without RetryInfo or Retry-After cools its key for this long.
    default_cooldown: float = Field(default=5.0, ge=0)
    # A key the upstream rejects (401/403/API_KEY_INVALID) is set aside for this long.
    rejected_key_cooldown: float = Field(default=300.0, ge=0)
    # Consecutive failures (5xx, timeouts, connection errors) that open a channel's circuit.
    circuit_failures: int = Field(default=5, ge=1)
    circuit_cooloff: float = Field(default=30.0, gt=0)
    # How often the server looks for channel changes in the database.
    reload_interval: float = Field(default=2.0, gt=0)
    # The least time any attempt is assumed to need: a retry or failover starts only if this
    # (or the channel's usual attempt time, when longer) still fits before the request's deadline.
    min_attempt_time: float = Field(default=1.0, ge=0)


class GatewayConfig(BaseModel):
    """The whole file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    aliases: dict[str, str] = Field(default_factory=dict)
    channels: tuple[ChannelConfig, ...] = ()

    @field_validator("aliases")
    @classmethod
    def _alias_targets(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [f"{k} -> {v}" for k, v in value.items() if find_model(v) is None]
        if bad:
            raise ValueError(f"alias targets must be catalog models: {', '.join(bad)}")
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> GatewayConfig:
        seen: set[str] = set()
        for channel in self.channels:
            if channel.name in seen:
                raise ValueError(f"channel name {channel.name!r} is used twice")
            seen.add(channel.name)
        return self

    def effective_aliases(self) -> dict[str, str]:
        return {**DEFAULT_ALIASES, **self.aliases}


def expand_env(value: str, environ: Mapping[str, str], *, strict: bool = True) -> str:
    """Replace `${NAME}` with the variable's value; a missing variable is a ConfigError (or, when
    not `strict`, a placeholder: listings need the file's shape, not its secrets)."""

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            if not strict:
                return f"unset-{name}"
            raise ConfigError(f"environment variable {name} is not set (referenced by a channel key)")
        return environ[name]

    return _ENV_REF.sub(sub, value)


def parse_config(
    text: str,
    *,
    environ: Mapping[str, str] | None = None,
    source: str = "config",
    strict_env: bool = True,
) -> GatewayConfig:
    """Parse and validate the TOML text of a config file."""
    env = os.environ if environ is None else environ
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    for channel in data.get("channels") or []:
        if not isinstance(channel, dict):
            continue
        # `key = "..."` is shorthand for a one-element `keys`.
        if "key" in channel:
            channel.setdefault("keys", [])
            channel["keys"] = [channel.pop("key"), *channel["keys"]]
        if isinstance(channel.get("keys"), list):
            channel["keys"] = [
                expand_env(k, env, strict=strict_env) if isinstance(k, str) else k for k in channel["keys"]
            ]
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc)}") from None


def load_config(
    path: Path, *, environ: Mapping[str, str] | None = None, strict_env: bool = True
) -> GatewayConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    return parse_config(text, environ=environ, source=str(path), strict_env=strict_env)


def _describe(exc: ValidationError) -> str:
    """Pydantic's errors without the offending input values (which may be keys)."""
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"{where}: {err['msg']}")
    return "; ".join(lines)


def channel_from_fields(fields: Mapping[str, Any], keys: list[str]) -> ChannelConfig:
    """A ChannelConfig from stored fields plus its (decrypted) keys; ConfigError when invalid."""
    try:
        return ChannelConfig.model_validate({**fields, "keys": keys})
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
