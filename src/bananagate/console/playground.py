"""The playground: a prompt (and images) in, the model's answer out, through the API's pipeline.

Its calls are metered against an ordinary API key named `console`, made on first use (its
secret is never shown or used: the console builds the caller itself). So playground calls obey
that key's limits and budget, appear in the ledger, usage and gallery under `console`, and
revoking the key turns the playground off.

With JavaScript the form is posted by `fetch` and the page shows a spinner and an elapsed-time
counter until the answer fragment arrives; without it, the same POST answers with a whole page.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bananagate.console.context import ConsoleContext
from bananagate.console.playground_input import PlaygroundError, PlaygroundInput, read_form, request_body
from bananagate.console.recorder import answer_parts
from bananagate.console.session import Session
from bananagate.protocol.catalog import ImageModel
from bananagate.protocol.errors import ApiError
from bananagate.protocol.validation import parse_and_check
from bananagate.providers.base import Call, UpstreamError, UpstreamTimeout
from bananagate.server.auth import Principal, check_key
from bananagate.server.pipeline import COST_HEADER
from bananagate.store import ApiKeyRecord, GalleryEntry, KeyNameTaken, Store

CONSOLE_KEY_NAME = "console"
CONSOLE_KEY_LABEL = "Web console playground (its secret is never used)"
FRAGMENT_HEADER = "x-console-fragment"


def console_key(store: Store) -> ApiKeyRecord:
    """The `console` key, created the first time the playground is used."""
    record = store.keys.get_key(CONSOLE_KEY_NAME)
    if record is None:
        try:
            record, _secret = store.keys.create_key(CONSOLE_KEY_NAME, label=CONSOLE_KEY_LABEL)
        except KeyNameTaken:  # another worker made it a moment ago
            record = store.keys.get_key(CONSOLE_KEY_NAME)
    assert record is not None
    return record


@dataclass
class Outcome:
    """What the result panel shows."""

    images: list[GalleryEntry] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None
    cost_usd: str | None = None
    latency_s: float = 0.0
    model: str = ""
    request_id: str = ""
    error: str | None = None
    status: int = 200


class PlaygroundViews:
    def __init__(self, ctx: ConsoleContext) -> None:
        self.ctx = ctx

    def routes(self) -> list[BaseRoute]:
        ctx = self.ctx
        return [
            Route("/", ctx.page(self.index), methods=["GET", "HEAD"]),
            Route(
                "/playground",
                ctx.action(self.generate, max_bytes=ctx.settings.max_body_bytes),
                methods=["POST"],
            ),
        ]

    def _models(self) -> dict[str, ImageModel]:
        return {m.id: m for m in self.ctx.pipeline.router.models()}

    def _page(
        self, request: Request, session: Session, *, outcome: Outcome | None, values: dict[str, str]
    ) -> Response:
        models = list(self._models().values())
        chosen = self._models().get(values.get("model", "")) or (models[0] if models else None)
        return self.ctx.render(
            request,
            "playground.html",
            session,
            status=outcome.status if outcome else 200,
            section="playground",
            title="Playground",
            models=models,
            chosen=chosen,
            values=values,
            outcome=outcome,
        )

    async def index(self, request: Request, session: Session) -> Response:
        return self._page(request, session, outcome=None, values={})

    async def _principal(self, request: Request) -> Principal:
        record = await self.ctx.run(console_key, self.ctx.store())
        if not record.active:
            message = (
                f"The `{CONSOLE_KEY_NAME}` API key is revoked, so the playground is off "
                "(playground calls are metered against that key)."
            )
            raise ApiError(403, message, "PERMISSION_DENIED")
        request.scope.setdefault("state", {})["key_name"] = record.name  # for the access log
        await self.ctx.run(self.ctx.store().touch, record.id)  # "last used" on the keys page
        principal = Principal(
            record.id, record.name, record.limits, client_ip=request.client.host if request.client else None
        )
        check_key(principal)  # an expiry or address allow-list set on it applies here too
        return principal

    async def _run(self, request: Request, data: PlaygroundInput) -> Outcome:
        settings = self.ctx.settings
        body = await self.ctx.run(request_body, data, settings.max_image_pixels)
        call = Call(
            model=data.model,
            model_id=data.model_id,
            method="generateContent",
            body=body,
            request=parse_and_check(body, data.model),
            request_id=request.scope.get("state", {}).get("request_id", ""),
        )
        principal = await self._principal(request)
        started = time.monotonic()
        answer = await self.ctx.pipeline.generate(call, principal)
        outcome = Outcome(
            cost_usd=answer.headers.get(COST_HEADER),
            latency_s=time.monotonic() - started,
            model=data.model.id,
            request_id=call.request_id,
        )
        ids = await self.ctx.recorder.wait(call.request_id)
        gallery = self.ctx.store().gallery
        outcome.images = [e for e in [await self.ctx.run(gallery.get, i) for i in ids] if e is not None]
        if outcome.images:
            first = outcome.images[0]
            outcome.text = first.text or ""
            outcome.finish_reason = first.params.get("finish_reason")
        else:  # nothing kept: read text and finish reason from the answer itself
            images, outcome.text, outcome.finish_reason = await self.ctx.run(answer_parts, [answer.body])
            if images:
                outcome.error = (
                    f"The model answered with {len(images)} image(s), but the gallery could not keep "
                    "them (see the server log), so they cannot be shown."
                )
                outcome.status = 500
        return outcome

    async def generate(self, request: Request, session: Session, form: FormData) -> Response:
        values = {k: v for k, v in form.multi_items() if isinstance(v, str) and k != "csrf_token"}
        try:
            data = await read_form(form, self._models())
            outcome = await self._run(request, data)
        except PlaygroundError as exc:
            outcome = Outcome(error=str(exc), status=400)
        except ApiError as exc:
            outcome = Outcome(error=exc.message, status=exc.code)
        except UpstreamError as exc:
            outcome = Outcome(error=exc.error.message, status=exc.error.code)
        except UpstreamTimeout:
            outcome = Outcome(error="The upstream did not answer in time.", status=504)
        if request.headers.get(FRAGMENT_HEADER) == "1":
            return self.ctx.render(request, "_result.html", session, status=outcome.status, outcome=outcome)
        return self._page(request, session, outcome=outcome, values=values)
