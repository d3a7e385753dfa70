"""`Idempotency-Key` (IETF httpapi draft, as Stripe uses it): a retried request is answered once.

Scoped to the API key. The first request with a key claims it (a unique row in the database,
so the claim holds across every gateway process), runs, and keeps its final answer (status, the
headers that matter, body) for the retention window. A repeat with the same key and the same
request (route, model, SHA-256 of the body) gets that answer byte for byte with
`Idempotent-Replayed: true`: no upstream call and no charge (its ledger row says `replayed`,
cost 0). A repeat that arrives while the first still runs waits for it (within its own
deadline), woken through Redis pub/sub when configured, else by polling, and at once inside one
process. The same key with a different request is a 422.

Only final answers are kept: a success, or a client error (4xx) the same request would get
again. Retryable failures (408, 429, 5xx, timeouts, a client gone before the answer) give the
key up, so a retry is served anew; a waiter then claims the key and runs the request itself.

`idempotent(...)` wraps any route's handler this way: the Gemini and OpenAI image routes use
it, and job submission can wrap its handler the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from bananagate.protocol.errors import BAD_REQUEST_TYPE, ApiError, FieldViolation, invalid_argument
from bananagate.server.auth import Principal
from bananagate.server.deadlines import DEADLINE_STATE, deadline_exceeded, remaining
from bananagate.server.notify import Notifier
from bananagate.server.timing import COST_HEADER, Timing, timing_of
from bananagate.store import AnswerFiles, Claim, KeptAnswer, LedgerRow, Store
from bananagate.store.idempotency import DONE, INLINE_MAX

log = logging.getLogger("bananagate.idempotency")

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "idempotent-replayed"
MAX_KEY_LENGTH = 255
# A claim's lease; its process renews it every third of that while the request runs.
LEASE_SECONDS = 30.0
SWEEP_INTERVAL = 600.0
# Answer headers worth keeping: what describes the answer, not this delivery of it (request
# id, Server-Timing, rate limits and the cost are the replay's own).
KEPT_HEADERS = frozenset(
    {
        "content-type",
        "x-bananagate-channel",
        "x-bananagate-attempts",
        "x-bananagate-images-failed",
        "x-bananagate-affinity",
    }
)
# 4xx answers that are not final: another try may well succeed.
_RETRYABLE_4XX = frozenset({401, 403, 404, 408, 409, 425, 429, 499})

Produce = Callable[[], Awaitable[Response]]
Render = Callable[[ApiError], Response]
LedgerSink = Callable[[LedgerRow], Awaitable[Any]]


def idempotency_key(request: Request) -> str | None:
    """The request's `Idempotency-Key`, or None; a 400 naming the header when it is unusable."""
    raw = request.headers.get(HEADER)
    if raw is None:
        return None
    key = raw.strip()
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        message = f"The {HEADER} header must be 1 to {MAX_KEY_LENGTH} printable characters."
        raise invalid_argument(message, [FieldViolation(HEADER, message)])
    return key


def fingerprint(route: str, model: str, body_digest: bytes) -> str:
    """What makes two requests "the same": route, model and the SHA-256 of the body."""
    return hashlib.sha256(b"%s\n%s\n%s" % (route.encode(), model.encode(), body_digest)).hexdigest()


def is_final(status: int) -> bool:
    """True for answers worth keeping: successes and the client errors a repeat would get too."""
    return 200 <= status < 300 or (400 <= status < 500 and status not in _RETRYABLE_4XX)


def key_reused() -> ApiError:
    message = (
        f"This {HEADER} was already used with a different request (route, model or body). "
        f"Use a new {HEADER} for a new request."
    )
    violation = {"field": HEADER, "description": message}
    return ApiError(
        422, message, "INVALID_ARGUMENT", [{"@type": BAD_REQUEST_TYPE, "fieldViolations": [violation]}]
    )


def answer_missing() -> ApiError:
    return ApiError(
        409,
        f"The answer kept for this {HEADER} is not available on this gateway (its body file is "
        f"missing: gateways must share BANANAGATE_IDEMPOTENCY_DIR). Send the request with a new "
        f"{HEADER} to run it again.",
        "ABORTED",
    )


@dataclass(frozen=True, slots=True)
class Keyed:
    """A request that carries an `Idempotency-Key`: the key, its fingerprint, its model."""

    key: str
    fingerprint: str
    model: str


async def idempotent(
    service: Idempotency | None,
    request: Request,
    principal: Principal,
    *,
    route: str,
    model: str,
    body_digest: Callable[[], bytes],
    produce: Produce,
    render: Render,
) -> Response:
    """`produce()`, or, when the request carries an `Idempotency-Key`, the one answer for it.

    The helper every keyed route uses: `route` names the operation (two routes never share an
    answer), `body_digest` gives the SHA-256 of what makes the request what it is (its body
    bytes, or for multipart its fields and files; only called for keyed requests), `render`
    draws an ApiError in the route's envelope.
    """
    key = idempotency_key(request)
    if key is None or service is None:
        return await produce()
    state = request.scope.get("state", {})
    return await service.run(
        principal,
        Keyed(key, fingerprint(route, model, body_digest()), model),
        request_id=state.get("request_id", ""),
        deadline=state.get(DEADLINE_STATE),
        timing=timing_of(request),
        produce=produce,
        render=render,
    )


class Idempotency:
    """Runs keyed requests at most once per key (see the module docstring)."""

    def __init__(
        self,
        store: Callable[[], Store],
        files_dir: Path,
        *,
        retention_seconds: float = 86400.0,
        ledger: LedgerSink | None = None,
        redis_url: str | None = None,
        redis_prefix: str = "bananagate:",
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        self._store = store
        self.files = AnswerFiles(files_dir)
        self.retention = retention_seconds
        self.lease = lease_seconds
        self._ledger = ledger
        self.notifier = Notifier(redis_url, f"{redis_prefix}idem:")
        # Waiters in other processes: woken by Redis, polled as a safety net (or the only way).
        self.poll_interval = 1.0 if self.notifier.shared else 0.25
        self._live: dict[int, Claim] = {}
        self._keeping: set[asyncio.Task[None]] = set()  # answers being kept after delivery
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.notifier.start()
        self._task = asyncio.create_task(self._maintain(), name="bananagate-idempotency")

    async def aclose(self) -> None:
        # Answers already delivered are still kept, so their retries replay them.
        await asyncio.gather(*self._keeping, return_exceptions=True)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.notifier.aclose()

    async def run(
        self,
        principal: Principal,
        keyed: Keyed,
        *,
        request_id: str,
        deadline: float | None,
        timing: Timing,
        produce: Produce,
        render: Render,
    ) -> Response:
        """The answer for a keyed request: produced now, replayed, or awaited from its twin.

        `produce` makes the answer (raising ApiError for errors, which `render` turns into a
        response when they are kept)."""
        key_hash = hashlib.sha256(keyed.key.encode()).hexdigest()
        name = f"{principal.key_id}:{key_hash}"
        repository = self._store().idempotency
        while True:
            with self.notifier.listening(name) as event:
                # Shielded: a claim taken in the thread must reach us, to be released.
                with anyio.CancelScope(shield=True):
                    found = await anyio.to_thread.run_sync(
                        repository.claim,
                        principal.key_id,
                        key_hash,
                        keyed.fingerprint,
                        request_id,
                        self.lease,
                    )
                if isinstance(found, Claim):
                    return await self._serve(name, found, produce, render)
                if found.fingerprint != keyed.fingerprint:
                    raise key_reused()
                if found.state == DONE:
                    return await self._replay(found, principal, keyed, request_id, timing)
                left = remaining(deadline)
                if left <= 0:
                    raise deadline_exceeded()
                began = time.perf_counter()
                with anyio.move_on_after(min(self.poll_interval, left)):
                    await event.wait()
                timing.waited += time.perf_counter() - began

    async def _serve(self, name: str, claim: Claim, produce: Produce, render: Render) -> Response:
        self._live[claim.id] = claim
        handed_off = False
        try:
            try:
                response = await produce()
            except ApiError as exc:
                if not is_final(exc.code):
                    raise
                response = render(exc)
            if is_final(response.status_code) and not isinstance(response, StreamingResponse):
                # Kept while the client already reads its answer: twins keep waiting (the claim
                # stays `running`) until it is kept, then are woken.
                task = asyncio.create_task(self._keep(name, claim, response))
                self._keeping.add(task)
                task.add_done_callback(self._keeping.discard)
                handed_off = True
            return response
        finally:
            if not handed_off:
                with anyio.CancelScope(shield=True):
                    await self._end(name, claim, kept=False)

    async def _keep(self, name: str, claim: Claim, response: Response) -> None:
        kept = False
        try:
            kept = await self._complete(claim, response)
        finally:
            with anyio.CancelScope(shield=True):
                await self._end(name, claim, kept=kept)

    async def _end(self, name: str, claim: Claim, *, kept: bool) -> None:
        """The claim is over: give the key up unless its answer was kept, and wake the twins."""
        self._live.pop(claim.id, None)
        if not kept:
            try:
                await anyio.to_thread.run_sync(self._store().idempotency.release, claim)
            except Exception as exc:  # the lease runs out instead, then a retry takes over
                log.warning("idempotency claim %d not released: %s", claim.id, exc)
        await self.notifier.notify(name)

    async def _complete(self, claim: Claim, response: Response) -> bool:
        """Keep the answer: its body in a file (or the row, when small), then the row `done`."""
        body = bytes(response.body)
        headers = {k: v for k, v in response.headers.items() if k in KEPT_HEADERS}
        repository = self._store().idempotency

        def keep() -> bool:
            inline = len(body) <= INLINE_MAX
            file_name = None if inline else self.files.write(body)
            done = repository.complete(
                claim,
                status=response.status_code,
                headers=headers,
                body=body if inline else None,
                body_file=file_name,
                body_size=len(body),
                retention_seconds=self.retention,
            )
            if not done and file_name is not None:
                self.files.delete([file_name])
            return done

        try:
            done = await anyio.to_thread.run_sync(keep)
        except Exception as exc:  # the client has its answer; a retry is served anew
            log.error("answer for idempotency claim %d not kept: %s", claim.id, exc)
            return False
        if not done:
            log.warning("idempotency claim %d was taken over before its answer was kept", claim.id)
        return done

    async def _replay(
        self, kept: KeptAnswer, principal: Principal, keyed: Keyed, request_id: str, timing: Timing
    ) -> Response:
        body = kept.body
        if body is None and kept.body_file is not None:
            body = await anyio.to_thread.run_sync(self.files.read, kept.body_file, kept.body_size)
        if body is None:
            raise answer_missing()
        status = kept.status or 200
        headers = dict(kept.headers or {})
        if self._ledger is not None:
            await self._ledger(
                LedgerRow(
                    request_id=request_id,
                    key_id=principal.key_id,
                    key_name=principal.key_name,
                    model=keyed.model,
                    status=status,
                    outcome="replayed",
                    channel=(headers.get("x-bananagate-channel") or None),
                    latency_ms=int((time.perf_counter() - timing.started) * 1000),
                    client_ip=principal.client_ip,
                )
            )
        headers[REPLAYED_HEADER] = "true"
        headers[COST_HEADER] = "0"
        return Response(body, status_code=status, headers=headers)

    async def _maintain(self) -> None:
        """Forever: renew this process's claims; now and then forget expired answers."""
        last_sweep = 0.0
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                repository = self._store().idempotency
                if self._live:
                    await anyio.to_thread.run_sync(repository.renew, list(self._live.values()), self.lease)
                if time.monotonic() - last_sweep >= SWEEP_INTERVAL:
                    last_sweep = time.monotonic()
                    names = await anyio.to_thread.run_sync(repository.sweep)
                    await anyio.to_thread.run_sync(self.files.delete, names)
                    # Files no row can name any more (a crash between writing and recording).
                    await anyio.to_thread.run_sync(self.files.sweep, self.retention + 3600)
            except Exception as exc:  # the database may be away for a while: keep trying
                log.warning("idempotency maintenance failed: %s", exc)
