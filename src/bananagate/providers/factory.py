"""Build a channel's providers from its `ChannelConfig`: one provider per upstream key, all of
them sharing the channel's keep-alive connection pool (made lazily, inside the running loop)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bananagate.config import ChannelConfig
from bananagate.protocol import openai_images
from bananagate.providers.base import Provider
from bananagate.providers.gemini_http import GeminiHttpProvider
from bananagate.providers.http import ChannelSession, make_client

if TYPE_CHECKING:
    import httpx


@dataclass(frozen=True, slots=True)
class EmulatorOptions:
    faults_enabled: bool = True
    max_image_pixels: int = 64_000_000


def key_id(channel: str, key: str) -> str:
    """A stable, non-reversible id for one key of a channel (for cooldown state, never shown)."""
    digest = hashlib.sha256(f"{channel}\0{key}".encode()).hexdigest()[:16]
    return f"{channel}:{digest}"


@dataclass(slots=True)
class BuiltChannel:
    """A channel ready to call: `providers[i]` uses the channel's i-th key."""

    config: ChannelConfig
    providers: list[Provider]
    key_ids: list[str]
    # The keep-alive pool all of `providers` share (aiohttp for Gemini-native kinds, httpx for
    # openai-images); None for the emulator.
    client: ChannelSession | httpx.AsyncClient | None = None
    closed: bool = field(default=False)

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        for provider in self.providers:
            await provider.aclose()
        if self.client is not None:
            await self.client.aclose()


def build_channel(config: ChannelConfig, emulator: EmulatorOptions | None = None) -> BuiltChannel:
    if config.kind == "emulator":
        from bananagate.providers.emulator import EmulatorProvider

        options = emulator or EmulatorOptions()
        provider = EmulatorProvider(
            faults_enabled=options.faults_enabled, max_image_pixels=options.max_image_pixels
        )
        return BuiltChannel(config, [provider], [f"{config.name}:emulator"])

    keys = config.key_values()
    providers: list[Provider] = []
    client: ChannelSession | httpx.AsyncClient
    if config.kind == "openai-images":
        from bananagate.providers.openai_images import OpenAIImagesProvider  # it needs httpx

        client = make_client(connect_timeout=config.connect_timeout, read_timeout=config.read_timeout)
        for key in keys:
            providers.append(
                OpenAIImagesProvider(
                    name=config.name,
                    base_url=config.resolved_base_url,
                    auth=config.resolved_auth,
                    key=key,
                    client=client,
                    sizes=config.sizes or openai_images.DEFAULT_SIZES,
                )
            )
    else:
        client = ChannelSession(
            config.name,
            base_url=config.resolved_base_url,
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
        )
        for key in keys:
            providers.append(
                GeminiHttpProvider(
                    name=config.name,
                    base_url=config.resolved_base_url,
                    auth=config.resolved_auth,
                    key=key,
                    session=client,
                    api_version=config.api_version,
                )
            )
    return BuiltChannel(config, providers, [key_id(config.name, k) for k in keys], client)
