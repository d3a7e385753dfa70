"""The channels page: every upstream with its health in this process, a test button, and
enable/disable for channels stored in the database (file channels change by editing the file).

Health is the router's own view: circuit state and consecutive failures per channel, keys
cooling down or refused, requests in flight. The test button sends the same minimal text-only
request per key as `bananagate channels test`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from bananagate.console.context import ConsoleContext
from bananagate.console.session import Session
from bananagate.store import ChannelRecord, Store
from bananagate.store.channels import ChannelRow


@dataclass(frozen=True)
class ChannelView:
    name: str
    kind: str
    source: str  # file | database | implicit | not loaded
    models: str
    priority: int
    weight: int
    keys: int
    enabled: bool
    circuit: str
    failures: int
    cooling: int
    refused: int
    in_flight: int
    toggle: bool  # may the console enable/disable it?
    note: str = ""


def set_channel_enabled(store: Store, name: str, enabled: bool) -> bool:
    """Enable or disable a database channel; False when there is none by that name.

    Uses the repository's own `set_enabled` when it has one. Otherwise `enabled` goes into the
    channel's options (a `ChannelConfig` field, so the loader applies it) and `updated_at`
    moves, which changes the table signature every server polls: all of them pick it up.
    """
    setter = getattr(store.channels, "set_enabled", None)
    if callable(setter):
        return bool(setter(name, enabled))
    with DbSession(store.engine) as session, session.begin():
        row = session.scalars(select(ChannelRow).where(ChannelRow.name == name)).one_or_none()
        if row is None:
            return False
        options: dict[str, Any] = dict(orjson.loads(row.options or "{}"))
        if enabled:
            options.pop("enabled", None)
        else:
            options["enabled"] = False
        row.options = orjson.dumps(options).decode()
        row.updated_at = datetime.now(UTC)
    return True


class ChannelViews:
    def __init__(self, ctx: ConsoleContext) -> None:
        self.ctx = ctx

    def routes(self) -> list[BaseRoute]:
        page, action = self.ctx.page, self.ctx.action
        return [
            Route("/channels", page(self.index), methods=["GET", "HEAD"]),
            Route("/channels/{name}/test", action(self.test), methods=["POST"]),
            Route("/channels/{name}/enabled", action(self.toggle), methods=["POST"]),
        ]

    async def _views(self) -> list[ChannelView]:
        router = self.ctx.pipeline.router
        health = router.health
        live = router.registry.snapshot().channels
        records: list[ChannelRecord] = await self.ctx.run(self.ctx.store().channels.list_channels)
        views: list[ChannelView] = []
        for channel in live:
            config, circuit = channel.config, health.circuit(channel.name)
            views.append(
                ChannelView(
                    name=channel.name,
                    kind=config.kind,
                    source=channel.source,
                    models=", ".join(sorted(channel.served)) if config.models else "every model",
                    priority=config.priority,
                    weight=config.weight,
                    keys=len(channel.key_ids),
                    enabled=config.enabled,
                    circuit=circuit.state,
                    failures=circuit.failures,
                    cooling=sum(1 for k in channel.key_ids if health.cooling_for(k) > 0),
                    refused=sum(1 for k in channel.key_ids if health.rejected(k)),
                    in_flight=channel.in_flight,
                    toggle=channel.source == "database",
                )
            )
        shown = {v.name for v in views}
        for record in records:  # stored, but not in service (shadowed by the file, or invalid)
            if record.name in shown:
                continue
            views.append(
                ChannelView(
                    name=record.name,
                    kind=record.kind,
                    source="not loaded",
                    models=", ".join(record.models) or "every model",
                    priority=record.priority,
                    weight=record.weight,
                    keys=record.key_count,
                    enabled=bool(record.options.get("enabled", True)),
                    circuit="-",
                    failures=0,
                    cooling=0,
                    refused=0,
                    in_flight=0,
                    toggle=True,
                    note="in the database but not in service (see the server log)",
                )
            )
        return views

    async def _render(self, request: Request, session: Session, **extra: Any) -> Response:
        return self.ctx.render(
            request,
            "channels.html",
            session,
            section="channels",
            title="Channels",
            channels=await self._views(),
            **extra,
        )

    async def index(self, request: Request, session: Session) -> Response:
        return await self._render(request, session)

    async def test(self, request: Request, session: Session, form: FormData) -> Response:
        name = request.path_params["name"]
        registry = self.ctx.pipeline.router.registry
        channel = next((c for c in registry.snapshot().channels if c.name == name), None)
        if channel is None:
            return await self._render(
                request, session, probe={"name": name, "ok": False, "lines": ["not in service"]}
            )
        # Imported on use: the CLI package registers every command when first imported.
        from bananagate.cli.channel_probe import probe_channel

        aliases = dict(registry.config.effective_aliases())
        results = await probe_channel(channel.config, None, aliases)
        return await self._render(
            request, session, probe={"name": name, "ok": results.ok, "lines": results.lines}
        )

    async def toggle(self, request: Request, session: Session, form: FormData) -> Response:
        name = request.path_params["name"]
        enabled = form.get("enabled") == "on"
        await self.ctx.run(set_channel_enabled, self.ctx.store(), name, enabled)
        await self.ctx.pipeline.router.registry.refresh()  # this process sees it at once
        return RedirectResponse("/console/channels", status_code=303)
