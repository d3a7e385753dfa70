"""HTTP routes of asynchronous jobs and batches (README "Jobs and batches").

    POST   /v1beta/jobs                      a generateContent body + "model" (+ "webhook_url")
    GET    /v1beta/jobs                      the key's jobs, newest first (pageSize, pageToken, state)
    GET    /v1beta/jobs/ID                   state; `result` when SUCCEEDED, `error` when FAILED
    DELETE /v1beta/jobs/ID                   cancel an unfinished job; forget a finished one
    POST   /v1beta/models/M:batchGenerateContent   Google's Batch API with inlined requests
    GET    /v1beta/batches[/ID]              the Operation(s); responses in input order when done
    POST   /v1beta/batches/ID:cancel         cancel; DELETE /v1beta/batches/ID forgets a finished one

Everything a run would refuse for good is refused here, before anything is queued: bad JSON,
the model's rules (per item, naming its index), a model the key may not use, and a budget
that cannot hold every item's maximum cost (the hold is taken now; see `store/jobs.py`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

import anyio.to_thread
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bananagate.protocol.catalog import ImageModel, strip_model_prefix
from bananagate.protocol.errors import ApiError, invalid_argument, model_not_found
from bananagate.protocol.scan import Bytes
from bananagate.protocol.validation import load_json_object, parse_and_check
from bananagate.providers.base import Call
from bananagate.server.auth import Principal
from bananagate.server.body import read_body
from bananagate.server.gemini import (
    API_VERSIONS,
    FORWARDED_HEADERS,
    GeminiRoutes,
    method_not_allowed,
    not_found,
)
from bananagate.server.idempotency import idempotent
from bananagate.server.jobs_metering import check_model, max_cost
from bananagate.server.jobs_wake import Waker
from bananagate.server.jobs_wire import batch_operation, job_view
from bananagate.server.metering import GatewayMeter, budget_exhausted
from bananagate.server.responses import error_response, json_response
from bananagate.server.webhooks import check_url
from bananagate.settings import Settings
from bananagate.store import KeyCipher, NewJob, Store, Submission
from bananagate.store.jobs_records import FINAL_STATES, UNFINISHED_STATES, new_id

_ID = re.compile(r"[0-9a-f]{32}")
_ALL = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
MAX_SECRET_LENGTH = 200
_STATES = (*UNFINISHED_STATES, *FINAL_STATES)


def _pop(data: dict[str, Any], *names: str) -> Any:
    """The first of `names` present (camelCase or snake_case), removed from `data`."""
    found = None
    for name in names:
        value = data.pop(name, None)
        if found is None:
            found = value
    return found


def _secret(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 16 <= len(value) <= MAX_SECRET_LENGTH:
        raise invalid_argument(f"webhook_secret must be a string of 16 to {MAX_SECRET_LENGTH} characters.")
    return value


def _page(request: Request) -> tuple[int, int]:
    try:
        size = int(request.query_params.get("pageSize", "50"))
        offset = int(request.query_params.get("pageToken") or "0")
    except ValueError:
        raise invalid_argument("pageSize and pageToken must be integers.") from None
    if offset < 0:
        raise invalid_argument(f"Invalid pageToken: {offset}.")
    return max(1, min(size, 1000)), offset


class JobRoutes:
    def __init__(
        self,
        *,
        gemini: GeminiRoutes,
        store: Callable[[], Store],
        meter: GatewayMeter,
        settings: Settings,
        waker: Waker,
        cipher: Callable[[], KeyCipher],
    ) -> None:
        self.gemini = gemini
        self._store = store
        self.meter = meter
        self.settings = settings
        self._cipher = cipher
        self.waker = waker
        gemini.batch_handler = self.batch_generate  # `models/M:batchGenerateContent` lands here

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/{version}/jobs", self.jobs, methods=_ALL),
            Route("/{version}/jobs/{job_id}", self.job, methods=_ALL),
            Route("/{version}/batches", self.batches, methods=_ALL),
            Route("/{version}/batches/{batch_ref}", self.batch, methods=_ALL),
        ]

    async def _principal(self, request: Request, *methods: str) -> Principal:
        if request.path_params["version"] not in API_VERSIONS:
            raise not_found(request.url.path)
        allowed = (*methods, "HEAD") if "GET" in methods else methods
        if request.method not in allowed:
            raise method_not_allowed(request.method, request.url.path, ", ".join(allowed))
        return await self.gemini.auth.authenticate(request)

    def _model(self, model_id: Any) -> ImageModel:
        if not isinstance(model_id, str) or not model_id.strip():
            raise invalid_argument('"model" is required: the id of the image model to run the job on.')
        model = self.gemini.router.find(strip_model_prefix(model_id.strip()))
        if model is None:
            raise model_not_found(strip_model_prefix(model_id), "generateContent")
        return model

    def _job(self, principal: Principal, model: ImageModel, model_id: str, body: bytes) -> NewJob:
        """One queued call: validated like a synchronous one, its maximum cost to hold."""
        parsed = parse_and_check(body, model)
        call = Call(model, strip_model_prefix(model_id), "generateContent", body, parsed)
        check_model(self.meter, call, principal)
        hold = max_cost(self.meter, call) if principal.limits.budget_nanos is not None else 0
        return NewJob(body=body, hold_nanos=hold)

    def _seal(self, secret: str | None) -> str | None:
        """A job's own webhook secret is stored sealed, like channel keys (`BANANAGATE_SECRET_KEY`)."""
        return None if secret is None else self._cipher().seal_secret(secret)

    def _submission(
        self,
        request: Request,
        principal: Principal,
        model_id: str,
        webhook_url: Any,
        secret: Any,
        name: Any = None,
    ) -> Submission:
        settings = self.settings
        headers = {h: v for h in FORWARDED_HEADERS if (v := request.headers.get(h)) is not None}
        return Submission(
            key_id=principal.key_id,
            key_name=principal.key_name,
            model=strip_model_prefix(model_id),
            max_attempts=max(settings.jobs_max_attempts, 1),
            expires_in=settings.jobs_expire_seconds,
            # The hold must outlive every attempt of a job that started just before its expiry.
            hold_margin=settings.jobs_max_attempts * (settings.jobs_lease_seconds + 600) + 3600,
            headers=headers,
            webhook_url=None if webhook_url is None else check_url(webhook_url),
            webhook_secret=self._seal(_secret(secret)),
            display_name=name if isinstance(name, str) else None,
        )

    async def _queue(self, sub: Submission, items: list[NewJob], batch_id: str | None = None) -> list[str]:
        ids = await anyio.to_thread.run_sync(lambda: self._store().jobs.submit(sub, items, batch_id=batch_id))
        if ids is None:
            raise budget_exhausted()
        return ids

    # --- jobs -----------------------------------------------------------------------------------

    async def jobs(self, request: Request) -> Response:
        principal = await self._principal(request, "GET", "POST")
        if request.method == "POST":
            return await self._submit(request, principal)
        size, offset = _page(request)
        state = request.query_params.get("state")
        if state is not None and state.upper() not in _STATES:
            raise invalid_argument(f"Unknown state {state!r}; one of {', '.join(_STATES)}.")
        found = await anyio.to_thread.run_sync(
            lambda: self._store().jobs.list_jobs(
                principal.key_id, limit=size + 1, offset=offset, state=state.upper() if state else None
            )
        )
        out: dict[str, Any] = {"jobs": [job_view(job) for job in found[:size]]}
        if len(found) > size:
            out["nextPageToken"] = str(offset + size)
        return json_response(out)

    async def _submit(self, request: Request, principal: Principal) -> Response:
        raw = await read_body(request, self.settings.max_body_bytes)
        # A retried submit with the same Idempotency-Key gets the first answer: one job, one hold.
        return await idempotent(
            self.gemini.idempotency,
            request,
            principal,
            route="jobs",
            model="",
            body_digest=lambda: hashlib.sha256(raw).digest(),
            produce=lambda: self._submit_body(request, principal, raw),
            render=error_response,
        )

    async def _submit_body(self, request: Request, principal: Principal, raw: Bytes) -> Response:
        data = load_json_object(raw)
        model_id = _pop(data, "model")
        webhook_url = _pop(data, "webhook_url", "webhookUrl")
        secret = _pop(data, "webhook_secret", "webhookSecret")
        model = self._model(model_id)
        body = orjson.dumps(data)
        item = self._job(principal, model, str(model_id), body)
        sub = self._submission(request, principal, str(model_id), webhook_url, secret)
        (job_id,) = await self._queue(sub, [item])
        job = await anyio.to_thread.run_sync(lambda: self._store().jobs.get(job_id))
        assert job is not None
        await self.waker.announce()  # after reading: the answer shows the job as queued
        return json_response(job_view(job))

    async def job(self, request: Request) -> Response:
        principal = await self._principal(request, "GET", "DELETE")
        job_id = request.path_params["job_id"]
        jobs = self._store().jobs
        job = (
            await anyio.to_thread.run_sync(lambda: jobs.get(job_id, key_id=principal.key_id))
            if _ID.fullmatch(job_id)
            else None
        )
        if job is None or job.batch_id is not None:
            raise ApiError(404, f"Job jobs/{job_id} not found.", "NOT_FOUND")
        if request.method == "DELETE":
            if job.done:
                await anyio.to_thread.run_sync(lambda: jobs.delete(principal.key_id, job_id))
                return json_response({})
            await anyio.to_thread.run_sync(lambda: jobs.cancel(principal.key_id, job_id))
            job = await anyio.to_thread.run_sync(lambda: jobs.get(job_id)) or job
        result = (
            await anyio.to_thread.run_sync(lambda: jobs.result(job_id)) if job.state == "SUCCEEDED" else None
        )
        webhook = (
            await anyio.to_thread.run_sync(lambda: jobs.webhooks.of(f"jobs/{job_id}"))
            if job.webhook_url
            else None
        )
        return json_response(job_view(job, result, webhook))

    # --- batches --------------------------------------------------------------------------------

    async def batch_generate(
        self, request: Request, principal: Principal, model: ImageModel, model_id: str, body: Bytes
    ) -> Response:
        return await idempotent(
            self.gemini.idempotency,
            request,
            principal,
            route="batchGenerateContent",
            model=model_id,
            body_digest=lambda: hashlib.sha256(body).digest(),
            produce=lambda: self._batch_generate(request, principal, model, model_id, body),
            render=error_response,
        )

    async def _batch_generate(
        self, request: Request, principal: Principal, model: ImageModel, model_id: str, body: Bytes
    ) -> Response:
        data = load_json_object(body)
        batch = data.get("batch")
        if not isinstance(batch, dict):
            raise invalid_argument('"batch" is required: {"batch": {"displayName", "inputConfig": ...}}.')
        config = batch.get("inputConfig") or batch.get("input_config")
        if isinstance(config, dict) and (config.get("fileName") or config.get("file_name")):
            raise invalid_argument("Only inlined requests are supported (inputConfig.requests), not files.")
        container = config.get("requests") if isinstance(config, dict) else None
        requests = container.get("requests") if isinstance(container, dict) else None
        if not isinstance(requests, list) or not requests:
            raise invalid_argument("batch.input_config.requests.requests must be a non-empty list.")
        limit = self.settings.jobs_max_batch_items
        if len(requests) > limit:
            raise invalid_argument(f"Too many requests in one batch: {len(requests)} (at most {limit}).")
        items = [self._batch_item(principal, model, model_id, i, entry) for i, entry in enumerate(requests)]
        hook = batch.get("webhookConfig") or batch.get("webhook_config")
        uris = hook.get("uris") if isinstance(hook, dict) else None
        webhook_url = _pop(data, "webhook_url", "webhookUrl") or (
            uris[0] if isinstance(uris, list) and uris else None
        )
        secret = _pop(data, "webhook_secret", "webhookSecret")
        name = batch.get("displayName") or batch.get("display_name")
        sub = self._submission(request, principal, model_id, webhook_url, secret, name)
        batch_id = new_id()
        await self._queue(sub, items, batch_id)
        record = await anyio.to_thread.run_sync(lambda: self._store().jobs.get_batch(batch_id))
        assert record is not None
        await self.waker.announce()
        return json_response(batch_operation(record))

    def _batch_item(
        self, principal: Principal, model: ImageModel, model_id: str, index: int, entry: Any
    ) -> NewJob:
        where = f"batch.input_config.requests.requests[{index}]"
        inner = entry.get("request") if isinstance(entry, dict) else None
        if not isinstance(inner, dict):
            raise invalid_argument(f"{where}.request must be a GenerateContentRequest object.")
        inner = {k: v for k, v in inner.items() if k != "model"}  # the SDK repeats the batch's model
        try:
            item = self._job(principal, model, model_id, orjson.dumps(inner))
        except ApiError as exc:
            if exc.code != 400:
                raise
            raise ApiError(400, f"{where}.request: {exc.message}", exc.status, exc.details) from None
        metadata = entry.get("metadata")
        return NewJob(body=item.body, hold_nanos=item.hold_nanos, metadata=metadata)

    async def batches(self, request: Request) -> Response:
        principal = await self._principal(request, "GET")
        size, offset = _page(request)
        found = await anyio.to_thread.run_sync(
            lambda: self._store().jobs.list_batches(principal.key_id, limit=size + 1, offset=offset)
        )
        out: dict[str, Any] = {"operations": [batch_operation(b) for b in found[:size]]}
        if len(found) > size:
            out["nextPageToken"] = str(offset + size)
        return json_response(out)

    async def batch(self, request: Request) -> Response:
        ref = request.path_params["batch_ref"]
        batch_id, _, verb = ref.partition(":")
        if verb not in ("", "cancel"):
            raise not_found(request.url.path)
        principal = await self._principal(request, *(("POST",) if verb else ("GET", "DELETE")))
        jobs = self._store().jobs
        batch = (
            await anyio.to_thread.run_sync(lambda: jobs.get_batch(batch_id, key_id=principal.key_id))
            if _ID.fullmatch(batch_id)
            else None
        )
        if batch is None:
            raise ApiError(404, f"Batch batches/{batch_id} not found.", "NOT_FOUND")
        if verb == "cancel" or (request.method == "DELETE" and not batch.done):
            await anyio.to_thread.run_sync(lambda: jobs.cancel_batch(principal.key_id, batch_id))
            return json_response({})
        if request.method == "DELETE":
            await anyio.to_thread.run_sync(lambda: jobs.delete_batch(principal.key_id, batch_id))
            return json_response({})
        items = await anyio.to_thread.run_sync(lambda: jobs.batch_items(batch_id)) if batch.done else None
        webhook = (
            await anyio.to_thread.run_sync(lambda: jobs.webhooks.of(f"batches/{batch_id}"))
            if batch.webhook_url
            else None
        )
        return json_response(batch_operation(batch, items, webhook))
