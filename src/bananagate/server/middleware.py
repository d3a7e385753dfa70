"""Pure ASGI middleware: a request id on every response, one access-log line per request, and the
request's life bound to its client's (slow bodies cut off, work cancelled when the client leaves)."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time

import anyio
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bananagate.protocol.errors import ApiError
from bananagate.server.auth import AuthFailureLimiter, too_many_failures
from bananagate.server.body import DEFAULT_BODY_MIN_RATE, DEFAULT_BODY_TIMEOUT, TimedReceive

access_log = logging.getLogger("bananagate.access")
log = logging.getLogger("bananagate.server")

# Status logged for a request whose client went away before its answer (nginx's convention).
CLIENT_CLOSED = 499
# Routes whose own credential check (the admin key) feeds the per-address auth-failure limit.
_ADMIN_PREFIX = "/admin/"


def new_request_id() -> str:
    # 32 hex digits, as uuid4().hex was: the same random source at a quarter of the cost.
    return os.urandom(16).hex()


class InFlight:
    """The requests being handled, so that shutdown can let them finish their bookkeeping.

    When SIGTERM's graceful timeout runs out, uvicorn cancels the requests still running and at
    once runs the lifespan shutdown, after which the event loop ends. A cancelled request still
    has to release its budget hold and write its `cancelled` ledger row (shielded, in a thread);
    waiting here at the start of the lifespan shutdown gives it the time to.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[object]] = set()
        self.ended = 0  # requests finished since start (the idle heap trimmer watches it)

    def add(self, task: asyncio.Task[object]) -> None:
        self._tasks.add(task)

    def discard(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        self.ended += 1

    def __len__(self) -> int:
        return len(self._tasks)

    async def wait(self, timeout: float) -> None:
        """Until every tracked request has ended, or `timeout` seconds."""
        current = asyncio.current_task()
        pending = [t for t in self._tasks if t is not current and not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)


class RequestContextMiddleware:
    """Stamps `x-request-id`, measures the request and writes the access line when it ends.

    Also, per request:

    * the body is read through `TimedReceive` (408 for a body that trickles in too slowly);
    * once the app has read the whole body, a watcher waits for the client to disconnect and then
      cancels the app: the upstream call stops, its budget hold is released and the ledger says
      `cancelled`, instead of the gateway finishing (and charging) an answer nobody receives.
      Starlette cancels streamed responses itself; this covers the non-streamed ones;
    * admin routes' 403 answers (a wrong admin key) count as failed authentications of the
      client's address.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
        body_min_rate: int = DEFAULT_BODY_MIN_RATE,
        auth_failures: AuthFailureLimiter | None = None,
        in_flight: InFlight | None = None,
    ) -> None:
        self.app = app
        self.in_flight = in_flight
        self.body_timeout = body_timeout
        self.body_min_rate = body_min_rate
        self.auth_failures = auth_failures

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
        response_done = [False]
        client = scope.get("client")
        address = client[0] if client else None
        admin = self.auth_failures is not None and scope["path"].startswith(_ADMIN_PREFIX)

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                response_started[0] = True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
                # 403 is a wrong admin key; a missing one (401) is not a guess.
                if admin and message["status"] == 403 and self.auth_failures is not None:
                    self.auth_failures.failed(address)
            elif message["type"] == "http.response.body":
                sent_bytes[0] += len(message.get("body", b""))
                if not message.get("more_body", False):
                    response_done[0] = True
            await send(message)

        app_scope = anyio.CancelScope()
        watcher: list[asyncio.Task[None]] = []

        async def watch_disconnect() -> None:
            # Only `http.disconnect` can come after the last body chunk; uvicorn also returns it
            # once the response is complete, which is why a finished response is not cancelled.
            message = await receive()
            if message["type"] == "http.disconnect" and not response_done[0]:
                app_scope.cancel()

        timed = TimedReceive(receive, self.body_timeout, self.body_min_rate)
        task = asyncio.current_task()
        if self.in_flight is not None and task is not None:
            self.in_flight.add(task)

        async def receive_wrapper() -> Message:
            message = await timed()
            if message["type"] == "http.request" and timed.complete and not watcher:
                watcher.append(asyncio.create_task(watch_disconnect()))
            return message

        try:
            if admin and self.auth_failures is not None:
                wait = self.auth_failures.retry_after(address)
                if wait is not None:
                    await self._send_error(send_wrapper, too_many_failures(math.ceil(wait)))
                    return
            with app_scope:
                await self.app(scope, receive_wrapper, send_wrapper)
            if app_scope.cancelled_caught and not response_started[0]:
                status_holder[0] = CLIENT_CLOSED
        except asyncio.CancelledError:
            # Nothing but the server cancels a request's task: SIGTERM's graceful timeout ran out.
            # The work below has been unwound (holds released, `cancelled` rows written); the
            # client still gets a proper answer to retry elsewhere, and the task ends here
            # rather than as an "Exception in ASGI application" traceback.
            if not response_started[0]:
                status_holder[0] = 503
                error = ApiError(
                    503,
                    "The server is shutting down; please retry.",
                    "UNAVAILABLE",
                    headers={"connection": "close"},
                )
                await self._send_error(send_wrapper, error)
        except ClientDisconnect:
            # The client left while the app read its body: nothing to answer, nothing to trace.
            status_holder[0] = CLIENT_CLOSED
        except Exception:
            # Last line of defence: the traceback goes to the server log, the client gets the
            # envelope (with its request id) unless the response had already started.
            log.exception("internal error on %s %s rid=%s", scope["method"], scope["path"], request_id)
            if not response_started[0]:
                await self._send_error(
                    send_wrapper, ApiError(500, "An internal error has occurred.", "INTERNAL")
                )
        finally:
            for watch in watcher:
                watch.cancel()
            if self.in_flight is not None and task is not None:
                self.in_flight.discard(task)
            elapsed_ms = (time.perf_counter() - started) * 1000
            access_log.info(
                '%s "%s %s" %d %dB %.1fms rid=%s key=%s',
                address or "-",
                scope["method"],
                scope["path"],
                status_holder[0],
                sent_bytes[0],
                elapsed_ms,
                request_id,
                state.get("key_name", "-"),
            )

    @staticmethod
    async def _send_error(send: Send, error: ApiError) -> None:
        headers = [(b"content-type", b"application/json; charset=UTF-8")]
        headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in error.headers.items()]
        await send({"type": "http.response.start", "status": error.code, "headers": headers})
        await send({"type": "http.response.body", "body": error.to_json()})
