"""Sign-in with the admin key, and sign-out.

The sign-in form is protected like every other form: its CSRF token lives in an anonymous
session cookie set by the GET, and the POST must come from this origin. A successful sign-in
issues a fresh session (new token), so a token seen before sign-in is worth nothing after it.
"""

from __future__ import annotations

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from bananagate.console.context import ConsoleContext
from bananagate.console.session import Session


def safe_next(target: object) -> str:
    """Where to go after sign-in: only a console path, never another site (`//evil`, `/\\evil`)."""
    if (
        isinstance(target, str)
        and target.startswith("/console/")
        and "\\" not in target
        and "//" not in target
    ):
        return target
    return "/console/"


class AuthViews:
    def __init__(self, ctx: ConsoleContext) -> None:
        self.ctx = ctx

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/login", self.login_form, methods=["GET", "HEAD"]),
            Route("/login", self.ctx.action(self.login, signed_in=False), methods=["POST"]),
            Route("/logout", self.ctx.action(self.logout), methods=["POST"]),
        ]

    def _form(
        self,
        request: Request,
        session: Session,
        *,
        status: int = 200,
        error: str | None = None,
        target: object = None,
    ) -> Response:
        response = self.ctx.render(
            request,
            "login.html",
            session,
            status=status,
            title="Sign in",
            next=safe_next(target if target is not None else request.query_params.get("next")),
            error=error,
        )
        self.ctx.sessions.attach(response, request, session)
        return response

    async def login_form(self, request: Request) -> Response:
        session = self.ctx.sessions.read(request)
        if session is not None and session.signed_in:
            return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
        return self._form(request, session or self.ctx.sessions.new(signed_in=False))

    async def login(self, request: Request, session: Session, form: FormData) -> Response:
        address = request.client.host if request.client else "-"
        throttle = self.ctx.throttle
        if throttle.blocked(address):
            error = "Too many failed attempts; wait a minute."
            return self._form(request, session, status=429, error=error, target=form.get("next"))
        presented = form.get("admin_key")
        if (
            not isinstance(presented, str)
            or not presented.strip()
            or not self.ctx.sessions.is_admin_key(presented)
        ):
            throttle.failed(address)
            error = "That is not the admin key."
            return self._form(request, session, status=403, error=error, target=form.get("next"))
        throttle.succeeded(address)
        response = RedirectResponse(safe_next(form.get("next")), status_code=303)
        self.ctx.sessions.attach(response, request, self.ctx.sessions.new(signed_in=True))
        return response

    async def logout(self, request: Request, session: Session, form: FormData) -> Response:
        response = RedirectResponse("/console/login", status_code=303)
        self.ctx.sessions.clear(response, request)
        return response
