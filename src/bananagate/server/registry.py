"""The channels the router can use right now, and keeping them current.

File channels are fixed at start-up; database channels are re-read when the table's signature
(row count, highest id, latest change) moves, checked every `reload_interval` seconds by a
background task. A reload builds only channels whose settings changed; a replaced or removed
channel is closed once its in-flight requests finish. With no channels at all, an implicit
`emulator` channel serves every catalog model, with no aliases: exactly the offline default.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import anyio.to_thread

from bananagate.config import ChannelConfig, ConfigError, GatewayConfig, channel_from_fields
from bananagate.protocol.catalog import MODELS, ImageModel, find_model, strip_model_prefix
from bananagate.providers.base import Provider
from bananagate.providers.factory import BuiltChannel, EmulatorOptions, build_channel
from bananagate.store import KeyCipher, Store, StoreError

log = logging.getLogger("bananagate.channels")

Source = Literal["file", "database", "implicit"]
IMPLICIT_NAME = "emulator"


@dataclass(eq=False)
class LiveChannel:
    """A built channel in service, with in-flight accounting so a reload can retire it safely."""

    built: BuiltChannel
    source: Source
    in_flight: int = 0
    retired: bool = False
    served: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        self.served = self.built.config.served_models()

    @property
    def config(self) -> ChannelConfig:
        return self.built.config

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def priority(self) -> int:
        return self.config.priority

    @property
    def weight(self) -> int:
        return self.config.weight

    @property
    def key_ids(self) -> Sequence[str]:
        return self.built.key_ids

    @property
    def providers(self) -> Sequence[Provider]:
        return self.built.providers

    def has_capacity(self) -> bool:
        cap = self.config.max_concurrent
        return cap is None or self.in_flight < cap

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[None]:
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            if self.retired and self.in_flight == 0:
                await self.built.aclose()

    async def retire(self) -> None:
        self.retired = True
        if self.in_flight == 0:
            await self.built.aclose()


@dataclass(frozen=True, slots=True)
class Route:
    requested: str  # what the client asked for (no `models/` prefix)
    target: str  # after aliases
    model: ImageModel  # the catalog model of `target`
    channels: tuple[LiveChannel, ...]  # enabled channels serving it
    # The implicit emulator: one plain call, its (injected) faults straight to the client.
    direct: bool = False


# Distinct model ids a snapshot remembers the route of (ids come from clients: bounded).
_ROUTE_CACHE = 256


@dataclass(frozen=True)
class Snapshot:
    channels: tuple[LiveChannel, ...]
    aliases: Mapping[str, str]
    direct: bool = False
    # A request asks for its route several times (validation, affinity, the call itself); a
    # snapshot never changes, so what it answered stays true until the next snapshot.
    _routes: dict[str, Route | None] = field(default_factory=dict, compare=False, repr=False)

    def route(self, model_id: str) -> Route | None:
        try:
            return self._routes[model_id]
        except KeyError:
            pass
        if len(self._routes) >= _ROUTE_CACHE:
            self._routes.clear()
        route = self._routes[model_id] = self._route(model_id)
        return route

    def _route(self, model_id: str) -> Route | None:
        requested = strip_model_prefix(model_id)
        target = self.aliases.get(requested, requested)
        model = find_model(target)
        if model is None:
            return None
        serving = tuple(c for c in self.channels if c.config.enabled and model.id in c.served)
        return Route(requested, target, model, serving, self.direct) if serving else None

    def find(self, model_id: str) -> ImageModel | None:
        """The model whose rules validate a request for `model_id`, if some channel serves it."""
        route = self.route(model_id)
        if route is None:
            return None
        return find_model(route.requested) or route.model

    def models(self) -> tuple[ImageModel, ...]:
        return tuple(m for m in MODELS if self.find(m.id) is not None)


DatabaseLoader = Callable[[object | None], tuple[object, list[ChannelConfig]] | None]


def database_loader(store: Callable[[], Store], cipher: Callable[[], KeyCipher]) -> DatabaseLoader:
    """A loader for the registry: None when the table is unchanged since `known`."""

    def load(known: object | None) -> tuple[object, list[ChannelConfig]] | None:
        signature = store().channels.signature()
        if signature == known:
            return None
        configs: list[ChannelConfig] = []
        records = store().channels.list_channels()
        for record in records:
            try:
                keys = store().channels.open_keys(record, cipher()) if record.key_count else []
                configs.append(channel_from_fields(record.fields(), keys))
            except (StoreError, ConfigError) as exc:
                log.error("channel %s from the database is skipped: %s", record.name, exc)
        return signature, configs

    return load


class ChannelRegistry:
    def __init__(
        self,
        config: GatewayConfig,
        *,
        load_database: DatabaseLoader | None = None,
        emulator: EmulatorOptions | None = None,
        implicit_provider: Provider | None = None,
    ) -> None:
        self.config = config
        self._load_database = load_database
        self._emulator = emulator or EmulatorOptions()
        self._implicit_provider = implicit_provider
        self._implicit: LiveChannel | None = None
        self._signature: object | None = None
        self._db_configs: list[ChannelConfig] = []
        self._live: dict[str, LiveChannel] = {}
        self._snapshot = Snapshot((), {})
        self._task: asyncio.Task[None] | None = None
        self._rebuild()

    @classmethod
    def single(cls, provider: Provider) -> ChannelRegistry:
        """Every catalog model served by one given provider (the pre-channels behaviour)."""
        return cls(GatewayConfig(), implicit_provider=provider)

    def snapshot(self) -> Snapshot:
        return self._snapshot

    async def start(self) -> None:
        """Load database channels, then watch for changes in the background."""
        if self._load_database is None:
            return
        await self.refresh()
        self._task = asyncio.create_task(self._watch(), name="bananagate-channel-reload")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.config.routing.reload_interval)
            try:
                await self.refresh()
            except Exception as exc:  # a database hiccup must not stop the watcher
                log.warning("channel reload failed: %s", exc)

    async def refresh(self) -> bool:
        """Re-read database channels if they changed; True when the set was rebuilt."""
        if self._load_database is None:
            return False
        loaded = await anyio.to_thread.run_sync(self._load_database, self._signature)
        if loaded is None:
            return False
        self._signature, self._db_configs = loaded
        retired = self._rebuild()
        for channel in retired:
            await channel.retire()
        return True

    def _merged(self) -> list[tuple[ChannelConfig, Source]]:
        merged: list[tuple[ChannelConfig, Source]] = [(c, "file") for c in self.config.channels]
        names = {c.name for c in self.config.channels}
        for db in self._db_configs:
            if db.name in names:
                log.warning(
                    "channel %s is defined in the config file and the database; using the file's", db.name
                )
                continue
            merged.append((db, "database"))
        return merged

    def _rebuild(self) -> list[LiveChannel]:
        merged = self._merged()
        live: dict[str, LiveChannel] = {}
        for config, source in merged:
            old = self._live.get(config.name)
            if old is not None and old.config == config and old.source == source:
                live[config.name] = old
            else:
                live[config.name] = LiveChannel(build_channel(config, self._emulator), source)
        retired = [c for name, c in self._live.items() if live.get(name) is not c]
        self._live = live
        if live:
            self._snapshot = Snapshot(tuple(live.values()), self.config.effective_aliases())
        else:
            self._snapshot = Snapshot((self._implicit_channel(),), {}, direct=True)
        if merged or self._signature is not None:
            names = ", ".join(f"{c.name} ({s})" for c, s in merged) or "none: emulator only"
            log.info("channels: %s", names)
        return retired

    def _implicit_channel(self) -> LiveChannel:
        if self._implicit is None:
            config = ChannelConfig(name=IMPLICIT_NAME, kind="emulator")
            if self._implicit_provider is not None:
                built = BuiltChannel(config, [self._implicit_provider], [f"{IMPLICIT_NAME}:default"])
            else:
                built = build_channel(config, self._emulator)
            self._implicit = LiveChannel(built, "implicit")
        return self._implicit

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for channel in list(self._live.values()):
            await channel.retire()
        self._live = {}
        if self._implicit is not None:
            await self._implicit.built.aclose()
