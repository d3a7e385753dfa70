"""Asynchronous jobs and batches in the SDK: `submit` now, `wait` for the result later.

    job = client.submit("A lighthouse at dusk", webhook_url="https://example.com/hook")
    result = client.wait(job)                       # a GenerateResult, as generate() returns
    batch = client.submit_batch([client.build_request(...), ...], keys=["a", "b"])
    done = client.wait_batch(batch)                 # items in input order, each result or error

Requests are built exactly as `generate`/`edit` build them, then sent to the gateway's
`/v1beta/jobs` (or as Google's `:batchGenerateContent`). Shapes, request builders and parsing
live here (pure); `jobs_mixin.py` adds the I/O to `Client` and `AsyncClient`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from bananagate.client.base import ClientBase
from bananagate.client.errors import BananagateError, api_error_class
from bananagate.client.parse import COST_HEADER, parse_result, pick, require_image
from bananagate.client.request import HttpRequest, model_url
from bananagate.client.result import GenerateResult

FINAL_JOB_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})


class JobCancelledError(BananagateError):
    """The job (or batch) was cancelled before it produced an answer."""


class JobTimeoutError(BananagateError, TimeoutError):
    """`wait` gave up before the job finished (the job itself goes on)."""


@dataclass(frozen=True, slots=True)
class Job:
    """A job as the gateway last described it (`state`: PENDING, RUNNING, SUCCEEDED, ...)."""

    name: str
    state: str
    raw: dict[str, Any]

    @property
    def id(self) -> str:
        return self.name.rpartition("/")[2]

    @property
    def done(self) -> bool:
        return self.state in FINAL_JOB_STATES

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Job:
        return cls(str(body.get("name", "")), str(body.get("state", "")), body)


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One response of a batch: `result` or `error`, with the `metadata` it was sent with."""

    index: int
    metadata: Any
    result: GenerateResult | None = None
    error: BananagateError | None = None

    @property
    def key(self) -> str | None:
        value = self.metadata.get("key") if isinstance(self.metadata, dict) else None
        return None if value is None else str(value)


@dataclass(frozen=True, slots=True)
class Batch:
    """A batch operation; `items` is filled once it is `done`."""

    name: str
    state: str
    done: bool
    stats: dict[str, int]
    raw: dict[str, Any]
    items: list[BatchItem] = field(default_factory=list)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Batch:
        meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        assert isinstance(meta, dict)
        stats = {k: int(v) for k, v in (meta.get("batchStats") or {}).items() if str(v).isdigit()}
        items: list[BatchItem] = []
        output = body.get("response") or meta.get("output") or {}
        inlined = pick(pick(output, "inlinedResponses"), "inlinedResponses") or []
        for index, entry in enumerate(inlined if isinstance(inlined, list) else []):
            response, error = pick(entry, "response"), pick(entry, "error")
            metadata = pick(entry, "metadata")
            if isinstance(response, dict):
                items.append(BatchItem(index, metadata, result=parse_result(response)))
            else:
                items.append(BatchItem(index, metadata, error=item_error(error, f"item {index}")))
        return cls(
            name=str(body.get("name", "")),
            state=str(meta.get("state", "")),
            done=bool(body.get("done")),
            stats=stats,
            raw=body,
            items=items,
        )


def item_error(error: Any, what: str) -> BananagateError:
    """A stored `error` object as the SDK exception its status maps to."""
    error = error if isinstance(error, dict) else {}
    code = error.get("code")
    status = code if isinstance(code, int) else 500
    message = f"{what} failed: {error.get('message') or 'no message'}"
    if error.get("status") == "CANCELLED":
        return JobCancelledError(message)
    return api_error_class(status)(status, message, code=error.get("status"), body=error)


def job_result(job: Job) -> GenerateResult:
    """A finished job's answer (image required, as `generate`), or its failure raised."""
    if job.state == "SUCCEEDED":
        result = job.raw.get("result")
        cost = job.raw.get("costUsd")
        headers = {COST_HEADER: str(cost)} if cost is not None else {}
        return require_image(parse_result(result if isinstance(result, dict) else {}, headers))
    raise item_error(job.raw.get("error"), f"job {job.name}")


def resource_name(name: str, kind: str) -> str:
    ident = name.rpartition("/")[2] if name.startswith(f"{kind}/") else name
    if not ident or "/" in ident or any(c in ident for c in "?#&"):
        raise BananagateError(f"not a {kind[:-1]} name: {name!r}")
    return f"{kind}/{quote(ident, safe='')}"


def api_request(base: ClientBase, method: str, path: str, body: dict[str, Any] | None = None) -> HttpRequest:
    config = base.config
    headers = {"Content-Type": "application/json", **config.headers, **config.auth_headers()}
    return HttpRequest(
        method=method,
        url=f"{config.base_url}/{config.api_version}/{path}",
        body=body or {},
        headers=headers,
        params=config.auth_params(),
    )


def submit_request(
    base: ClientBase, request: HttpRequest, webhook_url: str | None, webhook_secret: str | None
) -> HttpRequest:
    """POST /v1beta/jobs: the generateContent body plus its model (and webhook)."""
    body: dict[str, Any] = {**request.body, "model": request.model}
    if webhook_url is not None:
        body["webhook_url"] = webhook_url
    if webhook_secret is not None:
        body["webhook_secret"] = webhook_secret
    url = f"{base.config.base_url}/{base.config.api_version}/jobs"
    return HttpRequest("POST", url, body, dict(request.headers), dict(request.params), request.model)


def batch_request(
    base: ClientBase,
    requests: Sequence[HttpRequest],
    *,
    keys: Sequence[str] | None,
    display_name: str | None,
    webhook_url: str | None,
    webhook_secret: str | None,
) -> HttpRequest:
    """Google's `:batchGenerateContent` with inlined requests (one model for all of them)."""
    if not requests:
        raise BananagateError("a batch needs at least one request")
    models = {r.model for r in requests}
    if len(models) != 1:
        raise BananagateError(f"a batch runs on one model; got {', '.join(sorted(models))}")
    if keys is not None and len(keys) != len(requests):
        raise BananagateError("keys must match the requests one to one")
    entries = [
        {"request": r.body, "metadata": {"key": keys[i] if keys is not None else str(i)}}
        for i, r in enumerate(requests)
    ]
    batch: dict[str, Any] = {
        "displayName": display_name or "bananagate-batch",
        "inputConfig": {"requests": {"requests": entries}},
    }
    body: dict[str, Any] = {"batch": batch}
    if webhook_url is not None:
        body["webhook_url"] = webhook_url
    if webhook_secret is not None:
        body["webhook_secret"] = webhook_secret
    first = requests[0]
    url = model_url(base.config, first.model, "batchGenerateContent")
    return HttpRequest("POST", url, body, dict(first.headers), dict(first.params), first.model)


def request_content(request: HttpRequest) -> bytes | None:
    return None if request.method in ("GET", "DELETE") else request.content
