"""Pure ASGI middleware: a request id on every response and one access-log line per request."""

from __future__ import annotations

import logging
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bananagate.protocol.errors import ApiError

access_log = logging.getLogger("bananagate.access")
log = logging.getLogger("bananagate.server")


def new_request_id() -> str:
    return uuid.uuid4().hex


class RequestContextMiddleware:
    """Stamps `x-request-id`, measures the request and writes the access line when it ends."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        started = time.perf_counter()
        status_holder = [500]
        sent_bytes = [0]
        response_started = [False]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                response_started[0] = True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body":
                sent_bytes[0] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            # Last line of defence: the traceback goes to the server log, the client gets the
            # envelope (with its request id) unless the response had already started.
            log.exception("internal error on %s %s rid=%s", scope["method"], scope["path"], request_id)
            if not response_started[0]:
                error = ApiError(500, "An internal error has occurred.", "INTERNAL")
                await send_wrapper(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [(b"content-type", b"application/json; charset=UTF-8")],
                    }
                )
                await send_wrapper({"type": "http.response.body", "body": error.to_json()})
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000
            client = scope.get("client")
            access_log.info(
                '%s "%s %s" %d %dB %.1fms rid=%s key=%s',
                client[0] if client else "-",
                scope["method"],
                scope["path"],
                status_holder[0],
                sent_bytes[0],
                elapsed_ms,
                request_id,
                state.get("key_name", "-"),
            )
