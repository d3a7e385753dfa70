"""Tables of asynchronous jobs (migration 0005): the queue, batches, and webhook deliveries.

One `jobs` row is one generateContent call to run later: a standalone job (`POST /v1beta/jobs`)
or one item of a batch (`:batchGenerateContent`). The row is the queue entry, the lease, and the
result store at once, so that claiming, finishing and charging a job are single transactions.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from bananagate.store.schema import NAME_MAX_LENGTH, Base, UTCDateTime

JOB_ID_LENGTH = 32  # uuid4 hex; also the id of the job's budget hold in `reservations`


class JobRow(Base):
    """A queued, running or finished call. States: PENDING RUNNING SUCCEEDED FAILED CANCELLED."""

    __tablename__ = "jobs"
    __table_args__ = (
        # The claim query: PENDING rows due now, and RUNNING rows whose lease has run out.
        Index("ix_jobs_state_run_after", "state", "run_after"),
        Index("ix_jobs_key_id_created_at", "key_id", "created_at"),
        Index("ix_jobs_batch_id_batch_index", "batch_id", "batch_index"),
        Index("ix_jobs_finished_at", "finished_at"),
    )

    id: Mapped[str] = mapped_column(String(JOB_ID_LENGTH), primary_key=True)
    batch_id: Mapped[str | None] = mapped_column(String(JOB_ID_LENGTH))
    batch_index: Mapped[int | None] = mapped_column(Integer())
    key_id: Mapped[int] = mapped_column(Integer())
    key_name: Mapped[str] = mapped_column(String(NAME_MAX_LENGTH))
    model: Mapped[str] = mapped_column(String(100))  # as requested (may be an alias)
    state: Mapped[str] = mapped_column(String(16))
    # The generateContent body; deferred so that listing and claiming never drag megabytes along.
    request_body: Mapped[bytes] = mapped_column(LargeBinary(), deferred=True)
    headers: Mapped[str | None] = mapped_column(Text())  # JSON: forwarded client headers
    item_metadata: Mapped[str | None] = mapped_column(Text())  # JSON: a batch item's `metadata`
    webhook_url: Mapped[str | None] = mapped_column(Text())
    webhook_secret: Mapped[str | None] = mapped_column(Text())
    # Budget held for this job at submit (a `reservations` row with the job's id); 0 = none.
    hold_nanos: Mapped[int] = mapped_column(BigInteger(), default=0)
    attempts: Mapped[int] = mapped_column(Integer(), default=0)
    max_attempts: Mapped[int] = mapped_column(Integer())
    run_after: Mapped[datetime] = mapped_column(UTCDateTime())
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancel_requested: Mapped[bool] = mapped_column(Boolean(), default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # A job still waiting at this time fails (DEADLINE_EXCEEDED) instead of running days late.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[int | None] = mapped_column(Integer())  # HTTP status of the final answer
    error: Mapped[str | None] = mapped_column(Text())  # JSON: Google's `error` object
    last_error: Mapped[str | None] = mapped_column(Text())  # why the previous attempt failed
    result_body: Mapped[bytes | None] = mapped_column(LargeBinary(), deferred=True)
    cost_nanos: Mapped[int | None] = mapped_column(BigInteger())


class JobBatchRow(Base):
    """A `:batchGenerateContent` operation; its items are `jobs` rows with its id."""

    __tablename__ = "job_batches"
    __table_args__ = (Index("ix_job_batches_key_id_created_at", "key_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(JOB_ID_LENGTH), primary_key=True)
    key_id: Mapped[int] = mapped_column(Integer())
    key_name: Mapped[str] = mapped_column(String(NAME_MAX_LENGTH))
    model: Mapped[str] = mapped_column(String(100))
    display_name: Mapped[str | None] = mapped_column(Text())
    total: Mapped[int] = mapped_column(Integer())
    cancelled: Mapped[bool] = mapped_column(Boolean(), default=False)
    webhook_url: Mapped[str | None] = mapped_column(Text())
    webhook_secret: Mapped[str | None] = mapped_column(Text())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class JobWebhookRow(Base):
    """One webhook call to make (or made): written in the same transaction that finishes its job,
    so a crash can never lose it; retried with backoff until delivered or given up."""

    __tablename__ = "job_webhooks"
    __table_args__ = (Index("ix_job_webhooks_state_next_attempt_at", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True)
    target: Mapped[str] = mapped_column(String(48), unique=True)  # jobs/ID or batches/ID
    event: Mapped[str] = mapped_column(String(32))  # job.succeeded, batch.failed, ...
    url: Mapped[str] = mapped_column(Text())
    secret: Mapped[str | None] = mapped_column(Text())
    state: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer(), default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_status: Mapped[int | None] = mapped_column(Integer())
    last_error: Mapped[str | None] = mapped_column(Text())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
