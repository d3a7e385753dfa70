"""What every console view needs, and the guards every route passes through.

`ctx.page(handler)`: GET pages; without a signed-in session they redirect to the sign-in page.
`ctx.action(handler)`: POST actions; in this order they check the origin (403), the signed-in
session (403), the body size (413/411), then the form's CSRF token against the session (403).
Nothing a handler does happens before all of these pass.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import anyio.to_thread
from starlette.datastructures import FormData
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from bananagate.console.recorder import GalleryRecorder
from bananagate.console.session import CSRF_FIELD, LoginThrottle, Session, Sessions, csrf_ok, same_origin
from bananagate.server.pipeline import Pipeline
from bananagate.settings import Settings
from bananagate.store import Store

if TYPE_CHECKING:
    from starlette.templating import Jinja2Templates

T = TypeVar("T")
Page = Callable[[Request, Session], Awaitable[Response]]
Action = Callable[[Request, Session, FormData], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]

# Ordinary console forms are small; the playground's (with images) may be as large as an API body.
FORM_MAX_BYTES = 256 * 1024

NAV = (
    ("playground", "Playground", "/console/"),
    ("gallery", "Gallery", "/console/gallery"),
    ("keys", "Keys", "/console/keys"),
    ("channels", "Channels", "/console/channels"),
    ("usage", "Usage", "/console/usage"),
)


@dataclass
class ConsoleContext:
    settings: Settings
    store: Callable[[], Store]
    pipeline: Pipeline
    recorder: GalleryRecorder
    sessions: Sessions
    make_templates: Callable[[], Jinja2Templates]
    throttle: LoginThrottle

    @functools.cached_property
    def templates(self) -> Jinja2Templates:
        return self.make_templates()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Blocking work (database, files, Pillow) off the event loop."""
        return await anyio.to_thread.run_sync(functools.partial(fn, *args))

    def render(
        self,
        request: Request,
        name: str,
        session: Session | None,
        *,
        status: int = 200,
        section: str | None = None,
        **context: Any,
    ) -> Response:
        context.update(
            csrf_field=CSRF_FIELD,
            csrf=session.csrf if session is not None else "",
            signed_in=session is not None and session.signed_in,
            nav=NAV,
            section=section,
        )
        return self.templates.TemplateResponse(request, name, context, status_code=status)

    def forbidden(self, request: Request, reason: str, session: Session | None = None) -> Response:
        return self.render(request, "error.html", session, status=403, title="Forbidden", message=reason)

    def page(self, handler: Page) -> Endpoint:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            session = self.sessions.read(request)
            if session is None or not session.signed_in:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/console/login?next={quote(target, safe='')}", status_code=303)
            return await handler(request, session)

        return endpoint

    def action(self, handler: Action, *, max_bytes: int = FORM_MAX_BYTES, signed_in: bool = True) -> Endpoint:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            if not same_origin(request, self.settings.public_url):
                return self.forbidden(request, "This form was not sent from a page of this console.")
            session = self.sessions.read(request)
            if session is None or (signed_in and not session.signed_in):
                return self.forbidden(request, "You are not signed in (or your session has expired).")
            length = request.headers.get("content-length")
            if length is None or not length.isdigit():
                return self.render(
                    request, "error.html", session, status=411, title="Length required", message="No body."
                )
            if int(length) > max_bytes:
                message = f"The form is larger than {max_bytes} bytes."
                return self.render(
                    request, "error.html", session, status=413, title="Too large", message=message
                )
            try:
                form = await request.form(max_files=64, max_fields=200, max_part_size=max_bytes)
            except MultiPartException as exc:
                return self.render(
                    request, "error.html", session, status=400, title="Bad form", message=exc.message
                )
            try:
                if not csrf_ok(session, form.get(CSRF_FIELD)):
                    return self.forbidden(request, "The form's security token is missing or stale.", session)
                return await handler(request, session, form)
            finally:
                await form.close()

        return endpoint
