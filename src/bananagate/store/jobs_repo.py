"""Finishing jobs (with their money and webhooks), cancelling, expiring, and reading them back.

Every way a job ends is ONE transaction that (1) moves the row out of its state with a
conditional UPDATE, so only one finisher ever wins, (2) for an unrun or failed job, writes its
ledger row and releases its hold exactly as `LedgerRepository.record` does (the ledger's unique
request id `job-<id>` keeps a job charged at most once, across retries and crashes), (3) queues
its webhook, and (4) when it was a batch's last open item, marks the batch finished and queues
the batch's webhook. A successful job was already charged by the metering pipeline (`settle`),
so `complete` only stores the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, literal, select, update
from sqlalchemy.orm import Session

from bananagate.store.job_webhooks import WebhookQueue, add_webhook
from bananagate.store.jobs_reads import JobReads
from bananagate.store.jobs_records import (
    CANCELLED,
    FAILED,
    FINAL_STATES,
    PENDING,
    RUNNING,
    SUCCEEDED,
    UNFINISHED_STATES,
    JobRecord,
    batch_outcome,
    count_states,
    now_utc,
    to_json,
)
from bananagate.store.jobs_schema import JobBatchRow, JobRow
from bananagate.store.ledger import LedgerRow
from bananagate.store.schema import ApiKey, LedgerEntry, Reservation


@dataclass(frozen=True, slots=True)
class SweepReport:
    expired: int = 0
    lost: int = 0
    purged: int = 0


def unrun_row(job: JobRow | JobRecord, status: int, outcome: str, now: datetime) -> LedgerRow:
    """The ledger row of a job that ends without a call of its own (cancelled, expired, lost)."""
    return LedgerRow(
        request_id=f"job-{job.id}",
        key_id=job.key_id,
        key_name=job.key_name,
        model=job.model,
        status=status,
        outcome=outcome,
        created_at=now,
        attempts=job.attempts,
    )


def _charge_in(session: Session, row: LedgerRow, hold_id: str | None, hold_nanos: int) -> bool:
    """`LedgerRepository.record` inside the caller's transaction: False when the job already
    has its ledger row (an earlier attempt was settled), and then nothing moves."""
    exists = session.scalar(select(LedgerEntry.id).where(LedgerEntry.request_id == row.request_id[:64]))
    if exists is not None:
        return False
    values = asdict(row)
    values["request_id"] = row.request_id[:64]
    session.add(LedgerEntry(**values))
    session.flush()
    released = 0
    if hold_id is not None and hold_nanos:
        gone = session.execute(delete(Reservation).where(Reservation.id == hold_id))
        released = hold_nanos if gone.rowcount else 0  # type: ignore[attr-defined]
    if row.key_id is not None and (released or row.cost_nanos):
        session.execute(
            update(ApiKey)
            .where(ApiKey.id == row.key_id)
            .values(
                reserved_nanos=ApiKey.reserved_nanos - literal(released),
                spent_nanos=ApiKey.spent_nanos + literal(row.cost_nanos),
            )
        )
    return True


class JobRepository(JobReads):
    """`store.jobs`: the queue (`JobQueue`), reads (`JobReads`), endings, and `webhooks`."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.webhooks = WebhookQueue(engine)

    # --- finishing ------------------------------------------------------------------------------

    def complete(
        self, job_id: str, body: bytes, *, status: int, cost_nanos: int | None, now: datetime | None = None
    ) -> bool:
        """Store a RUNNING job's answer (already charged by the pipeline); False if it had ended."""
        now = now_utc(now)
        with self._session() as session, session.begin():
            won = session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.state == RUNNING)
                .values(
                    state=SUCCEEDED,
                    result_body=body,
                    status=status,
                    cost_nanos=cost_nanos,
                    error=None,
                    finished_at=now,
                    updated_at=now,
                    lease_owner=None,
                    lease_expires_at=None,
                )
            )
            if not won.rowcount:  # type: ignore[attr-defined]
                return False
            self._after_final(session, job_id, now)
        return True

    def finish(
        self,
        job_id: str,
        state: str,
        *,
        status: int,
        error: dict[str, Any] | None,
        row: LedgerRow | None = None,
        owner: str | None = None,
        from_states: Sequence[str] = (RUNNING,),
        now: datetime | None = None,
    ) -> bool:
        """End a job as FAILED or CANCELLED: record `row` (no charge) and release its hold.

        `owner` limits this to a job still leased to that worker. False if it had already ended.
        """
        assert state in (FAILED, CANCELLED)
        now = now_utc(now)
        with self._session() as session, session.begin():
            return self._finish_in(session, job_id, state, status, error, row, owner, from_states, now)

    def _finish_in(
        self,
        session: Session,
        job_id: str,
        state: str,
        status: int,
        error: dict[str, Any] | None,
        row: LedgerRow | None,
        owner: str | None,
        from_states: Sequence[str],
        now: datetime,
        *,
        settle_batch: bool = True,
    ) -> bool:
        query = update(JobRow).where(JobRow.id == job_id, JobRow.state.in_(from_states))
        if owner is not None:
            query = query.where(JobRow.lease_owner == owner)
        won = session.execute(
            query.values(
                state=state,
                status=status,
                error=to_json(error),
                finished_at=now,
                updated_at=now,
                lease_owner=None,
                lease_expires_at=None,
            )
        )
        if not won.rowcount:  # type: ignore[attr-defined]
            return False
        job = session.get_one(JobRow, job_id)
        outcome = "cancelled" if state == CANCELLED else "error"
        _charge_in(session, row or unrun_row(job, status, outcome, now), job.id, job.hold_nanos)
        if settle_batch:
            self._after_final(session, job_id, now)
        return True

    def _after_final(self, session: Session, job_id: str, now: datetime) -> None:
        job = session.get_one(JobRow, job_id)
        if job.batch_id is not None:
            self._settle_batch(session, job.batch_id, now)
        elif job.webhook_url:
            add_webhook(
                session,
                target=f"jobs/{job.id}",
                event=f"job.{job.state.lower()}",
                url=job.webhook_url,
                secret=job.webhook_secret,
                now=now,
            )

    def _settle_batch(self, session: Session, batch_id: str, now: datetime) -> None:
        """Mark the batch finished if no item is open any more (once: the row lock serializes
        the last items' finishers on PostgreSQL; SQLite has one writer anyway)."""
        batch = session.scalars(
            select(JobBatchRow).where(JobBatchRow.id == batch_id).with_for_update()
        ).first()
        if batch is None or batch.finished_at is not None:
            return
        counts = count_states(session, batch_id)
        if any(counts.get(state, 0) for state in UNFINISHED_STATES):
            return
        batch.finished_at = now
        batch.updated_at = now
        if batch.webhook_url:
            add_webhook(
                session,
                target=f"batches/{batch.id}",
                event=f"batch.{batch_outcome(batch.cancelled, counts)}",
                url=batch.webhook_url,
                secret=batch.webhook_secret,
                now=now,
            )

    # --- cancelling ------------------------------------------------------------------------------

    def cancel(self, key_id: int, job_id: str, *, now: datetime | None = None) -> bool:
        """Cancel a key's standalone job: a PENDING one at once, a RUNNING one by flagging it for
        its worker. False when there is no such unfinished job."""
        now = now_utc(now)
        error = {"code": 499, "message": "The job was cancelled.", "status": "CANCELLED"}
        with self._session() as session, session.begin():
            flagged = session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.key_id == key_id, JobRow.batch_id.is_(None))
                .where(JobRow.state.in_(UNFINISHED_STATES))
                .values(cancel_requested=True, updated_at=now)
            )
            if not flagged.rowcount:  # type: ignore[attr-defined]
                return False
            self._finish_in(session, job_id, CANCELLED, 499, error, None, None, (PENDING,), now)
        return True

    def cancel_batch(self, key_id: int, batch_id: str, *, now: datetime | None = None) -> bool:
        """Cancel a batch: its PENDING items at once, RUNNING ones via their workers."""
        now = now_utc(now)
        error = {"code": 499, "message": "The batch was cancelled.", "status": "CANCELLED"}
        with self._session() as session, session.begin():
            marked = session.execute(
                update(JobBatchRow)
                .where(JobBatchRow.id == batch_id, JobBatchRow.key_id == key_id)
                .where(JobBatchRow.finished_at.is_(None))
                .values(cancelled=True, updated_at=now)
            )
            if not marked.rowcount:  # type: ignore[attr-defined]
                return False
            session.execute(
                update(JobRow)
                .where(JobRow.batch_id == batch_id, JobRow.state.in_(UNFINISHED_STATES))
                .values(cancel_requested=True, updated_at=now)
            )
            pending = session.scalars(
                select(JobRow.id).where(JobRow.batch_id == batch_id, JobRow.state == PENDING)
            ).all()
            for job_id in pending:
                self._finish_in(
                    session, job_id, CANCELLED, 499, error, None, None, (PENDING,), now, settle_batch=False
                )
            self._settle_batch(session, batch_id, now)
        return True

    # --- housekeeping ---------------------------------------------------------------------------

    def sweep(self, retention_seconds: float, *, now: datetime | None = None) -> SweepReport:
        """Fail jobs that waited past their expiry or whose workers kept dying; delete finished
        jobs and batches (with their results) older than `retention_seconds`."""
        now = now_utc(now)
        with self._session() as session:
            overdue = session.scalars(
                select(JobRow.id).where(JobRow.state == PENDING, JobRow.expires_at < now)
            ).all()
            lost = session.scalars(
                select(JobRow.id).where(
                    JobRow.state == RUNNING,
                    JobRow.lease_expires_at < now,
                    JobRow.attempts >= JobRow.max_attempts,
                )
            ).all()
            stuck_batches = session.scalars(
                select(JobBatchRow.id).where(
                    JobBatchRow.finished_at.is_(None),
                    ~select(JobRow.id)
                    .where(JobRow.batch_id == JobBatchRow.id, JobRow.state.in_(UNFINISHED_STATES))
                    .exists(),
                )
            ).all()
        expired = sum(
            self.finish(
                job_id,
                FAILED,
                status=504,
                error={
                    "code": 504,
                    "message": "The job expired before a worker could run it.",
                    "status": "DEADLINE_EXCEEDED",
                },
                from_states=(PENDING,),
                now=now,
            )
            for job_id in overdue
        )
        gone = sum(
            self.finish(
                job_id,
                FAILED,
                status=500,
                error={
                    "code": 500,
                    "message": "The workers running this job stopped before it finished, too many times.",
                    "status": "INTERNAL",
                },
                from_states=(RUNNING,),
                now=now,
            )
            for job_id in lost
        )
        for batch_id in stuck_batches:
            with self._session() as session, session.begin():
                self._settle_batch(session, batch_id, now)
        purged = self._purge(now - timedelta(seconds=retention_seconds))
        self.webhooks.purge(now - timedelta(seconds=retention_seconds))
        return SweepReport(expired=expired, lost=gone, purged=purged)

    def _purge(self, before: datetime) -> int:
        with self._session() as session, session.begin():
            old_batches = select(JobBatchRow.id).where(JobBatchRow.finished_at < before).scalar_subquery()
            items = session.execute(delete(JobRow).where(JobRow.batch_id.in_(old_batches)))
            batches = session.execute(delete(JobBatchRow).where(JobBatchRow.finished_at < before))
            jobs = session.execute(
                delete(JobRow).where(
                    JobRow.batch_id.is_(None), JobRow.state.in_(FINAL_STATES), JobRow.finished_at < before
                )
            )
            return int(items.rowcount + batches.rowcount + jobs.rowcount)  # type: ignore[attr-defined]
