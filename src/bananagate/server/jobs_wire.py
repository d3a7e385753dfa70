"""The JSON shapes of jobs and batches (no I/O).

Jobs are our own resource: `{"name": "jobs/ID", "state": "PENDING", ...}`. Batches follow
Google's Batch API so the `google-genai` SDK's `client.batches` works: a long-running
`Operation` whose `metadata` is the `GenerateContentBatch` (state `BATCH_STATE_*`, `batchStats`
with int64 counts as strings) and, when done, the `GenerateContentBatchOutput` both in
`response` (the REST shape) and in `metadata.output` (where the SDK reads it), responses in input
order. Stored answers are spliced in as raw JSON (`orjson.Fragment`), never re-parsed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from bananagate.protocol.pricing import format_usd
from bananagate.store import BatchRecord, JobRecord
from bananagate.store.job_webhooks import WebhookRecord
from bananagate.store.jobs_records import FAILED, PENDING, RUNNING, SUCCEEDED, batch_outcome

BATCH_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch"
OUTPUT_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatchOutput"


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def webhook_view(webhook: WebhookRecord) -> dict[str, Any]:
    out: dict[str, Any] = {"state": webhook.state.upper(), "attempts": webhook.attempts}
    if webhook.last_status is not None:
        out["lastStatus"] = webhook.last_status
    if webhook.last_error:
        out["lastError"] = webhook.last_error
    if webhook.delivered_at is not None:
        out["deliverTime"] = rfc3339(webhook.delivered_at)
    elif webhook.state == "pending":
        out["nextAttemptTime"] = rfc3339(webhook.next_attempt_at)
    return out


def job_view(
    job: JobRecord, result: bytes | None = None, webhook: WebhookRecord | None = None
) -> dict[str, Any]:
    """A standalone job; `result` is its stored GenerateContentResponse (only when SUCCEEDED)."""
    out: dict[str, Any] = {
        "name": f"jobs/{job.id}",
        "state": job.state,
        "done": job.done,
        "model": f"models/{job.model}",
        "createTime": rfc3339(job.created_at),
        "updateTime": rfc3339(job.updated_at),
        "attempts": job.attempts,
    }
    if job.started_at is not None:
        out["startTime"] = rfc3339(job.started_at)
    if job.finished_at is not None:
        out["endTime"] = rfc3339(job.finished_at)
    if job.cost_nanos is not None:
        out["costUsd"] = format_usd(job.cost_nanos)
    if job.cancel_requested and not job.done:
        out["cancelRequested"] = True
    if job.error is not None:
        out["error"] = job.error
    elif job.last_error is not None and not job.done:
        out["lastError"] = job.last_error  # why the job is waiting for another attempt
    if result is not None:
        out["result"] = orjson.Fragment(result)
    if job.webhook_url:
        out["webhook"] = webhook_view(webhook) if webhook else {"state": "NOT_SENT"}
    return out


def batch_state(batch: BatchRecord) -> str:
    counts = batch.counts
    if batch.done:
        outcome = batch_outcome(batch.cancelled, counts)
        return f"BATCH_STATE_{outcome.upper()}"
    started = sum(n for state, n in counts.items() if state != PENDING)
    return "BATCH_STATE_RUNNING" if started else "BATCH_STATE_PENDING"


def batch_stats(batch: BatchRecord) -> dict[str, str]:
    counts = batch.counts
    failed = sum(n for state, n in counts.items() if state not in (PENDING, RUNNING, SUCCEEDED))
    return {
        "requestCount": str(batch.total),
        "successfulRequestCount": str(counts.get(SUCCEEDED, 0)),
        "failedRequestCount": str(failed),
        "pendingRequestCount": str(counts.get(PENDING, 0) + counts.get(RUNNING, 0)),
    }


def _inlined(item: JobRecord, body: bytes | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if item.state == SUCCEEDED and body is not None:
        out["response"] = orjson.Fragment(body)
    else:
        out["error"] = item.error or {
            "code": 500,
            "message": f"The request ended {item.state}.",
            "status": FAILED,
        }
    if item.metadata is not None:
        out["metadata"] = item.metadata
    return out


def batch_operation(
    batch: BatchRecord,
    items: list[tuple[JobRecord, bytes | None]] | None = None,
    webhook: WebhookRecord | None = None,
) -> dict[str, Any]:
    """The batch as Google's Operation; with `items` (once done) its responses, in input order."""
    name = f"batches/{batch.id}"
    metadata: dict[str, Any] = {
        "@type": BATCH_TYPE,
        "name": name,
        "model": f"models/{batch.model}",
        "displayName": batch.display_name or "",
        "createTime": rfc3339(batch.created_at),
        "updateTime": rfc3339(batch.updated_at),
        "batchStats": batch_stats(batch),
        "state": batch_state(batch),
    }
    if batch.finished_at is not None:
        metadata["endTime"] = rfc3339(batch.finished_at)
    if batch.cost_nanos:
        metadata["costUsd"] = format_usd(batch.cost_nanos)
    if batch.webhook_url:
        metadata["webhook"] = webhook_view(webhook) if webhook else {"state": "NOT_SENT"}
    out: dict[str, Any] = {"name": name, "metadata": metadata, "done": batch.done}
    if batch.done and items is not None:
        responses = {"inlinedResponses": [_inlined(item, body) for item, body in items]}
        metadata["output"] = {"inlinedResponses": responses}
        out["response"] = {"@type": OUTPUT_TYPE, "inlinedResponses": responses}
    return out


def webhook_event(event: str, name: str, view: dict[str, Any] | None) -> dict[str, Any]:
    """The body of a webhook call: what happened, and the resource without its results."""
    out: dict[str, Any] = {"type": event, "name": name}
    if view is not None:
        out["data"] = view
    return out
