"""The console as a Starlette sub-application, mounted by the gateway at `/console`.

Everything it serves (pages, images, its CSS and JS) carries the security headers below; there
are no inline scripts or styles anywhere, so the CSP allows only this origin's files.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bananagate.console.auth import AuthViews
from bananagate.console.channels import ChannelViews
from bananagate.console.context import ConsoleContext
from bananagate.console.gallery import GalleryViews
from bananagate.console.keys import KeyViews
from bananagate.console.playground import PlaygroundViews
from bananagate.console.recorder import GalleryRecorder
from bananagate.console.session import LoginThrottle, Sessions, session_key
from bananagate.console.usage import UsageViews
from bananagate.protocol.pricing import format_usd
from bananagate.server.pipeline import Pipeline
from bananagate.settings import Settings
from bananagate.store import Store

if TYPE_CHECKING:
    from starlette.templating import Jinja2Templates

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
TEMPLATE_DIR = HERE / "templates"

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    # Same-origin requests keep their Referer (the CSRF check's fallback); others get none.
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
)


class SecurityHeaders:
    """Adds the headers above to every response. Pages are `no-store` (one may show a key's
    secret); images and static files set their own caching."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        static = "/static/" in scope.get("path", "")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                ours = {name for name, _ in SECURITY_HEADERS}
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in ours]
                headers += SECURITY_HEADERS
                if not any(k.lower() == b"cache-control" for k, _ in headers):
                    # Static files revalidate (ETag); everything else is never stored.
                    headers.append((b"cache-control", b"no-cache" if static else b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value is not None else "—"


def _size(value: int) -> str:
    size = float(value)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def templates() -> Jinja2Templates:
    # Imported here, on the first page shown: Jinja (~2 MB) stays out of a gateway whose console
    # nobody opens.
    import jinja2
    from starlette.templating import Jinja2Templates

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=True,  # every value is escaped unless a template says otherwise (none do)
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["usd"] = lambda nanos: "$" + format_usd(int(nanos or 0))
    env.filters["when"] = _when
    env.filters["size"] = _size
    return Jinja2Templates(env=env)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    ctx: ConsoleContext = request.app.state.ctx
    session = ctx.sessions.read(request)
    titles = {404: "Not found", 405: "Method not allowed"}
    message = "There is no such console page." if exc.status_code == 404 else str(exc.detail)
    title = titles.get(exc.status_code, "Error")
    return ctx.render(request, "error.html", session, status=exc.status_code, title=title, message=message)


def build_console(
    settings: Settings,
    *,
    store: Callable[[], Store],
    pipeline: Pipeline,
    recorder: GalleryRecorder,
    admin_key: Callable[[], str],
) -> ASGIApp:
    key = functools.cache(lambda: session_key(settings.ensure_data_dir(), settings.secret_key))
    ctx = ConsoleContext(
        settings=settings,
        store=store,
        pipeline=pipeline,
        recorder=recorder,
        sessions=Sessions(key, admin_key, settings.console_session_ttl),
        make_templates=templates,
        throttle=LoginThrottle(),
    )
    routes = [
        *AuthViews(ctx).routes(),
        *PlaygroundViews(ctx).routes(),
        *GalleryViews(ctx).routes(),
        *KeyViews(ctx).routes(),
        *ChannelViews(ctx).routes(),
        *UsageViews(ctx).routes(),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    app.state.ctx = ctx
    return SecurityHeaders(app)
