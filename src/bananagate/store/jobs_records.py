"""What the job store hands out: states, records of jobs and batches, and small helpers."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from bananagate.store.jobs_schema import JobBatchRow, JobRow

PENDING = "PENDING"
RUNNING = "RUNNING"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
FINAL_STATES = (SUCCEEDED, FAILED, CANCELLED)
UNFINISHED_STATES = (PENDING, RUNNING)


def now_utc(now: datetime | None = None) -> datetime:
    return now or datetime.now(UTC)


def to_json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def from_json(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class NewJob:
    """One call to queue: its generateContent body and what budget to hold for it."""

    body: bytes
    hold_nanos: int = 0
    metadata: Any = None  # a batch item's `metadata`, given back with its response


@dataclass(frozen=True, slots=True)
class Submission:
    """What every job of one submit shares."""

    key_id: int
    key_name: str
    model: str
    max_attempts: int
    expires_in: float  # seconds a job may wait before it fails unrun
    hold_margin: float  # the hold outlives the job's expiry by this much (never mid-run)
    headers: Mapping[str, str] = field(default_factory=dict)
    webhook_url: str | None = None
    webhook_secret: str | None = None
    display_name: str | None = None  # batches only


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job (or batch item) as stored, without its request and result bytes."""

    id: str
    batch_id: str | None
    batch_index: int | None
    key_id: int
    key_name: str
    model: str
    state: str
    attempts: int
    max_attempts: int
    hold_nanos: int
    headers: dict[str, str]
    metadata: Any
    webhook_url: str | None
    cancel_requested: bool
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    expires_at: datetime
    status: int | None
    error: dict[str, Any] | None
    last_error: dict[str, Any] | None
    cost_nanos: int | None
    lease_owner: str | None = None

    @property
    def request_id(self) -> str:
        """The ledger's request id: one row per job, however many times it was attempted."""
        return f"job-{self.id}"

    @property
    def done(self) -> bool:
        return self.state in FINAL_STATES

    @classmethod
    def from_row(cls, row: JobRow) -> JobRecord:
        # Only non-deferred columns: the row may be detached, and the blobs stay unloaded.
        return cls(
            id=row.id,
            batch_id=row.batch_id,
            batch_index=row.batch_index,
            key_id=row.key_id,
            key_name=row.key_name,
            model=row.model,
            state=row.state,
            attempts=row.attempts,
            max_attempts=row.max_attempts,
            hold_nanos=row.hold_nanos,
            headers=from_json(row.headers) or {},
            metadata=from_json(row.item_metadata),
            webhook_url=row.webhook_url,
            cancel_requested=row.cancel_requested,
            created_at=row.created_at,
            updated_at=row.updated_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            expires_at=row.expires_at,
            status=row.status,
            error=from_json(row.error),
            last_error=from_json(row.last_error),
            cost_nanos=row.cost_nanos,
            lease_owner=row.lease_owner,
        )


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    record: JobRecord
    body: bytes


def claimable(now: datetime) -> ColumnElement[bool]:
    return or_(
        and_(JobRow.state == PENDING, JobRow.run_after <= now),
        and_(
            JobRow.state == RUNNING,
            JobRow.lease_expires_at < now,
            JobRow.attempts < JobRow.max_attempts,
        ),
    )


@dataclass(frozen=True, slots=True)
class BatchRecord:
    id: str
    key_id: int
    key_name: str
    model: str
    display_name: str | None
    total: int
    cancelled: bool
    webhook_url: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    counts: dict[str, int] = field(default_factory=dict)  # items per state
    cost_nanos: int = 0

    @property
    def done(self) -> bool:
        return self.finished_at is not None


def batch_outcome(cancelled: bool, counts: Mapping[str, int]) -> str:
    """How a finished batch ended: cancelled, failed (no item succeeded) or succeeded."""
    if cancelled:
        return "cancelled"
    return "succeeded" if counts.get(SUCCEEDED, 0) else "failed"


def count_states(session: Session, batch_id: str) -> dict[str, int]:
    """How many items of a batch are in each state."""
    rows = session.execute(
        select(JobRow.state, func.count()).where(JobRow.batch_id == batch_id).group_by(JobRow.state)
    ).all()
    return {state: int(count) for state, count in rows}


def batch_record(row: JobBatchRow, counts: dict[str, int], cost_nanos: int = 0) -> BatchRecord:
    return BatchRecord(
        id=row.id,
        key_id=row.key_id,
        key_name=row.key_name,
        model=row.model,
        display_name=row.display_name,
        total=row.total,
        cancelled=row.cancelled,
        webhook_url=row.webhook_url,
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
        counts=counts,
        cost_nanos=cost_nanos,
    )
