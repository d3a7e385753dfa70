"""The keys page: create (the secret is shown once), list, change limits, revoke.

Form fields go through the admin API's own parser (`keyspec.parse_changes`), so the console
and `/admin/keys` accept and refuse exactly the same values.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from bananagate.console.context import ConsoleContext
from bananagate.console.playground import CONSOLE_KEY_NAME
from bananagate.console.session import Session
from bananagate.protocol.catalog import MODELS
from bananagate.server.keyspec import parse_changes
from bananagate.store import InvalidKeyName, KeyLimits, KeyNameTaken

_INT_FIELDS = ("rpm", "images_per_day", "max_concurrent")
_TEXT_FIELDS = ("label", "budget_usd", "expires_at", "allow_cidrs")


def form_changes(form: FormData, *, clear_empty: bool) -> dict[str, Any]:
    """The form as `parse_changes` input. An empty field is left out when creating, and clears
    the limit when updating (that is what an emptied box means there)."""
    data: dict[str, Any] = {}
    for name in (*_TEXT_FIELDS, *_INT_FIELDS):
        raw = form.get(name)
        value = raw.strip() if isinstance(raw, str) else ""
        if not value:
            if clear_empty:
                data[name] = None
            continue
        if name in _INT_FIELDS:
            if not value.isdigit():
                raise ValueError(f"{name.replace('_', ' ')} must be a whole number (or empty for none)")
            data[name] = int(value)
        else:
            data[name] = value
    models = [m for m in form.getlist("models") if isinstance(m, str) and m]
    if models or clear_empty:
        data["models"] = models or None
    return parse_changes(data)


def _limits(changes: dict[str, Any]) -> KeyLimits:
    return KeyLimits(
        models=tuple(changes.get("models") or ()),
        budget_nanos=changes.get("budget_nanos"),
        rpm=changes.get("rpm"),
        images_per_day=changes.get("images_per_day"),
        max_concurrent=changes.get("max_concurrent"),
        expires_at=changes.get("expires_at"),
        allow_cidrs=tuple(changes.get("allow_cidrs") or ()),
    )


# Notices after a redirect are picked by code, so a link cannot make the page say anything else.
_NOTICES = {
    "saved": "Limits of {key} saved.",
    "revoked": "{key} is revoked.",
    "unchanged": "{key} was already revoked.",
}


def _notice(request: Request) -> str | None:
    template = _NOTICES.get(request.query_params.get("done", ""))
    return template.format(key=request.query_params.get("key", "")) if template else None


def _done(code: str, name: str) -> Response:
    return RedirectResponse(f"/console/keys?done={code}&key={quote(name, safe='')}", status_code=303)


class KeyViews:
    def __init__(self, ctx: ConsoleContext) -> None:
        self.ctx = ctx

    def routes(self) -> list[BaseRoute]:
        page, action = self.ctx.page, self.ctx.action
        return [
            Route("/keys", page(self.index), methods=["GET", "HEAD"]),
            Route("/keys", action(self.create), methods=["POST"]),
            Route("/keys/{name}/limits", action(self.update), methods=["POST"]),
            Route("/keys/{name}/revoke", action(self.revoke), methods=["POST"]),
        ]

    async def _render(
        self, request: Request, session: Session, *, status: int = 200, **extra: Any
    ) -> Response:
        records = await self.ctx.run(self.ctx.store().keys.list_keys, True)
        return self.ctx.render(
            request,
            "keys.html",
            session,
            status=status,
            section="keys",
            title="Keys",
            keys=records,
            models=[m.id for m in MODELS],
            console_key=CONSOLE_KEY_NAME,
            notice=_notice(request),
            **extra,
        )

    async def index(self, request: Request, session: Session) -> Response:
        return await self._render(request, session, values={})

    async def create(self, request: Request, session: Session, form: FormData) -> Response:
        values: dict[str, Any] = {k: v for k, v in form.multi_items() if isinstance(v, str)}
        values["models"] = [m for m in form.getlist("models") if isinstance(m, str)]
        name = str(values.get("name", "")).strip()
        keys = self.ctx.store().keys
        try:
            changes = form_changes(form, clear_empty=False)
            record, secret = await self.ctx.run(
                lambda: keys.create_key(name, limits=_limits(changes), label=changes.get("label"))
            )
        except (ValueError, InvalidKeyName) as exc:
            return await self._render(request, session, status=400, error=str(exc), values=values)
        except KeyNameTaken as exc:
            return await self._render(request, session, status=409, error=str(exc), values=values)
        # The secret exists only in this response (the page is `no-store`); only its hash is kept.
        return await self._render(request, session, created=record, secret=secret, values={})

    async def update(self, request: Request, session: Session, form: FormData) -> Response:
        name = request.path_params["name"]
        keys = self.ctx.store().keys
        try:
            changes = form_changes(form, clear_empty=True)
            record = await self.ctx.run(keys.update_key, name, changes)
        except ValueError as exc:
            return await self._render(request, session, status=400, error=f"{name}: {exc}", values={})
        if record is None:
            return await self._render(
                request, session, status=404, error=f"No key named {name!r}.", values={}
            )
        return _done("saved", name)

    async def revoke(self, request: Request, session: Session, form: FormData) -> Response:
        name = request.path_params["name"]
        revoked = await self.ctx.run(self.ctx.store().keys.revoke_key, name)
        return _done("revoked" if revoked else "unchanged", name)
