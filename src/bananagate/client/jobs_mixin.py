"""The I/O of jobs and batches for `Client` (`JobsMixin`) and `AsyncClient` (`AsyncJobsMixin`).

Both send JSON requests with the client's retry policy, except that a submit is retried only
when refused with 429 (nothing was queued then): after a lost answer a retry could queue, and
pay for, the same job twice. Shapes and parsing are in `client/jobs.py`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

from bananagate.client.base import ClientBase
from bananagate.client.errors import APIError
from bananagate.client.inputs import Images
from bananagate.client.jobs import (
    Batch,
    Job,
    JobTimeoutError,
    api_request,
    batch_request,
    job_result,
    request_content,
    resource_name,
    submit_request,
)
from bananagate.client.parse import error_from_response, load_body
from bananagate.client.request import HttpRequest
from bananagate.client.result import GenerateResult
from bananagate.client.retry import RetryState


class _JsonCalls(ClientBase):
    """What both mixins share: request builders and answer handling."""

    def _job_submit(
        self,
        prompt: str,
        images: Images | None,
        webhook_url: str | None,
        webhook_secret: str | None,
        options: dict[str, Any],
    ) -> HttpRequest:
        request = (
            self._prepare_edit(prompt, images, **options)
            if images
            else self._prepare_generate(prompt, **options)
        )
        return submit_request(self, request, webhook_url, webhook_secret)

    def _answer(
        self, state: RetryState, response: httpx.Response, idempotent: bool
    ) -> tuple[Any, float | None]:
        """(the JSON answer, None) or (error, delay before retrying or None to raise it)."""
        if response.status_code == 200:
            body = load_body(response.content)
            if isinstance(body, dict):
                return body, None
            return APIError(200, "the answer is not a JSON object", body=body), None
        error = error_from_response(
            response.status_code, response.headers, response.content, attempts=state.attempts
        )
        if not idempotent and response.status_code != 429:
            return error, None
        return error, state.delay_after_status(response.status_code, error.retry_after)


class JobsMixin(_JsonCalls):
    """`Client`'s job methods (blocking)."""

    _http: httpx.Client

    def _call(self, request: HttpRequest, *, idempotent: bool = True) -> dict[str, Any]:
        state = self._retry_state()
        while True:
            state.start_attempt()
            try:
                response = self._http.request(
                    request.method,
                    request.url,
                    headers=request.headers,
                    params=request.params,
                    content=request_content(request),
                )
            except httpx.TransportError as exc:
                step = self._after_exception(state, exc)
                if step.delay is None or not idempotent:
                    assert step.error is not None
                    raise step.error from exc
                time.sleep(step.delay)
                continue
            answer, delay = self._answer(state, response, idempotent)
            if isinstance(answer, dict):
                return answer
            if delay is None:
                raise answer
            time.sleep(delay)

    def submit(
        self,
        prompt: str,
        images: Images | None = None,
        *,
        model: str | None = None,
        aspect_ratio: str | None = None,
        image_size: str | int | None = None,
        headers: Mapping[str, str] | None = None,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
    ) -> Job:
        """Queue a generate (or, with `images`, an edit) on the gateway; returns at once."""
        options = {"model": model, "aspect_ratio": aspect_ratio, "image_size": image_size, "headers": headers}
        request = self._job_submit(prompt, images, webhook_url, webhook_secret, options)
        return Job.from_json(self._call(request, idempotent=False))

    def submit_request(
        self, request: HttpRequest, *, webhook_url: str | None = None, webhook_secret: str | None = None
    ) -> Job:
        """Queue a request made by `build_request` (any contents)."""
        return Job.from_json(
            self._call(submit_request(self, request, webhook_url, webhook_secret), idempotent=False)
        )

    def get_job(self, job: Job | str) -> Job:
        name = resource_name(job.name if isinstance(job, Job) else job, "jobs")
        return Job.from_json(self._call(api_request(self, "GET", name)))

    def cancel_job(self, job: Job | str) -> Job:
        """Cancel an unfinished job (a running one stops soon after); returns its state."""
        name = resource_name(job.name if isinstance(job, Job) else job, "jobs")
        return Job.from_json(self._call(api_request(self, "DELETE", name)))

    def wait(
        self, job: Job | str, *, timeout: float | None = None, poll_interval: float = 1.0
    ) -> GenerateResult:
        """Poll until the job ends; its answer (as `generate`), or its failure raised."""
        deadline = None if timeout is None else time.monotonic() + timeout
        current = self.get_job(job)
        while not current.done:
            if deadline is not None and time.monotonic() + poll_interval > deadline:
                raise JobTimeoutError(f"job {current.name} still {current.state} after {timeout:g}s")
            time.sleep(poll_interval)
            current = self.get_job(current)
        return job_result(current)

    def submit_batch(
        self,
        requests: Sequence[HttpRequest],
        *,
        keys: Sequence[str] | None = None,
        display_name: str | None = None,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
    ) -> Batch:
        """Queue `requests` (one model) as one batch; `keys` come back in each item's metadata."""
        request = batch_request(
            self,
            requests,
            keys=keys,
            display_name=display_name,
            webhook_url=webhook_url,
            webhook_secret=webhook_secret,
        )
        return Batch.from_json(self._call(request, idempotent=False))

    def get_batch(self, batch: Batch | str) -> Batch:
        name = resource_name(batch.name if isinstance(batch, Batch) else batch, "batches")
        return Batch.from_json(self._call(api_request(self, "GET", name)))

    def wait_batch(
        self,
        batch: Batch | str,
        *,
        timeout: float | None = None,
        poll_interval: float = 2.0,
        on_poll: Callable[[Batch], None] | None = None,
    ) -> Batch:
        """Poll until the batch is done; its items then hold each result or error, in order."""
        deadline = None if timeout is None else time.monotonic() + timeout
        current = self.get_batch(batch)
        while not current.done:
            if on_poll is not None:
                on_poll(current)
            if deadline is not None and time.monotonic() + poll_interval > deadline:
                raise JobTimeoutError(f"batch {current.name} still {current.state} after {timeout:g}s")
            time.sleep(poll_interval)
            current = self.get_batch(current)
        return current


class AsyncJobsMixin(_JsonCalls):
    """`AsyncClient`'s job methods: the same as `JobsMixin`, awaitable."""

    _http: httpx.AsyncClient

    async def _call(self, request: HttpRequest, *, idempotent: bool = True) -> dict[str, Any]:
        state = self._retry_state()
        while True:
            state.start_attempt()
            try:
                response = await self._http.request(
                    request.method,
                    request.url,
                    headers=request.headers,
                    params=request.params,
                    content=request_content(request),
                )
            except httpx.TransportError as exc:
                step = self._after_exception(state, exc)
                if step.delay is None or not idempotent:
                    assert step.error is not None
                    raise step.error from exc
                await asyncio.sleep(step.delay)
                continue
            answer, delay = self._answer(state, response, idempotent)
            if isinstance(answer, dict):
                return answer
            if delay is None:
                raise answer
            await asyncio.sleep(delay)

    async def submit(
        self,
        prompt: str,
        images: Images | None = None,
        *,
        model: str | None = None,
        aspect_ratio: str | None = None,
        image_size: str | int | None = None,
        headers: Mapping[str, str] | None = None,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
    ) -> Job:
        options = {"model": model, "aspect_ratio": aspect_ratio, "image_size": image_size, "headers": headers}
        request = self._job_submit(prompt, images, webhook_url, webhook_secret, options)
        return Job.from_json(await self._call(request, idempotent=False))

    async def submit_request(
        self, request: HttpRequest, *, webhook_url: str | None = None, webhook_secret: str | None = None
    ) -> Job:
        built = submit_request(self, request, webhook_url, webhook_secret)
        return Job.from_json(await self._call(built, idempotent=False))

    async def get_job(self, job: Job | str) -> Job:
        name = resource_name(job.name if isinstance(job, Job) else job, "jobs")
        return Job.from_json(await self._call(api_request(self, "GET", name)))

    async def cancel_job(self, job: Job | str) -> Job:
        name = resource_name(job.name if isinstance(job, Job) else job, "jobs")
        return Job.from_json(await self._call(api_request(self, "DELETE", name)))

    async def wait(
        self, job: Job | str, *, timeout: float | None = None, poll_interval: float = 1.0
    ) -> GenerateResult:
        deadline = None if timeout is None else time.monotonic() + timeout
        current = await self.get_job(job)
        while not current.done:
            if deadline is not None and time.monotonic() + poll_interval > deadline:
                raise JobTimeoutError(f"job {current.name} still {current.state} after {timeout:g}s")
            await asyncio.sleep(poll_interval)
            current = await self.get_job(current)
        return job_result(current)

    async def submit_batch(
        self,
        requests: Sequence[HttpRequest],
        *,
        keys: Sequence[str] | None = None,
        display_name: str | None = None,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
    ) -> Batch:
        request = batch_request(
            self,
            requests,
            keys=keys,
            display_name=display_name,
            webhook_url=webhook_url,
            webhook_secret=webhook_secret,
        )
        return Batch.from_json(await self._call(request, idempotent=False))

    async def get_batch(self, batch: Batch | str) -> Batch:
        name = resource_name(batch.name if isinstance(batch, Batch) else batch, "batches")
        return Batch.from_json(await self._call(api_request(self, "GET", name)))

    async def wait_batch(
        self,
        batch: Batch | str,
        *,
        timeout: float | None = None,
        poll_interval: float = 2.0,
        on_poll: Callable[[Batch], None] | None = None,
    ) -> Batch:
        deadline = None if timeout is None else time.monotonic() + timeout
        current = await self.get_batch(batch)
        while not current.done:
            if on_poll is not None:
                on_poll(current)
            if deadline is not None and time.monotonic() + poll_interval > deadline:
                raise JobTimeoutError(f"batch {current.name} still {current.state} after {timeout:g}s")
            await asyncio.sleep(poll_interval)
            current = await self.get_batch(current)
        return current
