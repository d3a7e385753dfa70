"""The job queue: submit, claim under a lease, heartbeat, requeue (reads: `jobs_reads`; endings: `jobs_repo`).

Queue semantics, the same on SQLite and PostgreSQL:

* A row is claimable when it is PENDING and due (`run_after <= now`), or RUNNING with a lease
  that ran out (its worker died) and attempts left. Claiming sets RUNNING, the owner, a lease
  expiry and `attempts + 1` in one UPDATE. The owner renews the lease while it works.
* PostgreSQL: `SELECT ... FOR UPDATE SKIP LOCKED`, then that UPDATE, in one transaction, so any
  number of workers take disjoint rows without waiting for each other.
* SQLite (the embedded mode): one conditional UPDATE per candidate (`... WHERE id = :id AND
  <claimable>`); SQLite runs one writer at a time, so each row goes to exactly one claimer.
* Per-key concurrency: a key with `max_concurrent` never gets more claimed rows than it has free
  slots (leased RUNNING rows count). Claims racing in two processes may pass that by a little;
  the limiter, which the run goes through like any request, then defers the extra job.

Money: a job's budget hold is taken at submit, as a `reservations` row whose id IS the job id,
so whichever transaction finishes the job (settle, failure, cancel, expiry) releases it exactly
once. Its expiry is far away (the job may wait in the queue for long), not renewed by heartbeats.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, literal, select, update
from sqlalchemy.orm import Session, sessionmaker, undefer

from bananagate.store.jobs_records import (
    PENDING,
    RUNNING,
    ClaimedJob,
    JobRecord,
    NewJob,
    Submission,
    claimable,
    new_id,
    now_utc,
    to_json,
)
from bananagate.store.jobs_schema import JobBatchRow, JobRow
from bananagate.store.schema import ApiKey, Reservation

# Candidates read per claimed slot: room to skip keys that are at their concurrency limit.
CLAIM_OVERSCAN = 4


class JobQueue:
    """Submitting and leasing. Synchronous and thread-safe, like the other repositories."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def _session(self) -> Session:
        return self._sessions()

    @property
    def _postgres(self) -> bool:
        return self._engine.dialect.name == "postgresql"

    # --- submit ---------------------------------------------------------------------------------

    def submit(
        self,
        sub: Submission,
        items: Sequence[NewJob],
        *,
        batch_id: str | None = None,
        now: datetime | None = None,
    ) -> list[str] | None:
        """Queue `items` (a batch when `batch_id` is given); their ids, or None when the key's
        budget cannot hold them all (then nothing is queued). One transaction."""
        now = now_utc(now)
        ids = [new_id() for _ in items]
        expires = now + timedelta(seconds=sub.expires_in)
        hold_expires = expires + timedelta(seconds=sub.hold_margin)
        total = sum(item.hold_nanos for item in items)
        with self._session() as session, session.begin():
            if total:
                # The same conditional UPDATE as `ReservationRepository.reserve`, for the sum:
                # a batch is held whole or refused whole.
                held = session.execute(
                    update(ApiKey)
                    .where(ApiKey.id == sub.key_id)
                    .where(ApiKey.budget_nanos.is_not(None))
                    .where(ApiKey.spent_nanos + ApiKey.reserved_nanos + literal(total) <= ApiKey.budget_nanos)
                    .values(reserved_nanos=ApiKey.reserved_nanos + literal(total))
                )
                if not held.rowcount:  # type: ignore[attr-defined]
                    return None
                session.add_all(
                    Reservation(
                        id=job_id,
                        key_id=sub.key_id,
                        request_id=f"job-{job_id}",
                        amount_nanos=item.hold_nanos,
                        created_at=now,
                        expires_at=hold_expires,
                    )
                    for job_id, item in zip(ids, items, strict=True)
                    if item.hold_nanos
                )
            if batch_id is not None:
                session.add(
                    JobBatchRow(
                        id=batch_id,
                        key_id=sub.key_id,
                        key_name=sub.key_name,
                        model=sub.model,
                        display_name=sub.display_name,
                        total=len(items),
                        cancelled=False,
                        webhook_url=sub.webhook_url,
                        webhook_secret=sub.webhook_secret,
                        created_at=now,
                        updated_at=now,
                    )
                )
            headers = to_json(dict(sub.headers)) if sub.headers else None
            session.add_all(
                JobRow(
                    id=job_id,
                    batch_id=batch_id,
                    batch_index=index if batch_id is not None else None,
                    key_id=sub.key_id,
                    key_name=sub.key_name,
                    model=sub.model,
                    state=PENDING,
                    request_body=item.body,
                    headers=headers,
                    item_metadata=to_json(item.metadata),
                    # A batch's webhook is the batch's, not each item's.
                    webhook_url=sub.webhook_url if batch_id is None else None,
                    webhook_secret=sub.webhook_secret if batch_id is None else None,
                    hold_nanos=item.hold_nanos,
                    attempts=0,
                    max_attempts=sub.max_attempts,
                    run_after=now,
                    cancel_requested=False,
                    created_at=now,
                    updated_at=now,
                    expires_at=expires,
                )
                for index, (job_id, item) in enumerate(zip(ids, items, strict=True))
            )
        return ids

    def add_hold(
        self, job_id: str, key_id: int, amount_nanos: int, ttl: float, *, now: datetime | None = None
    ) -> bool:
        """Hold budget for a job queued without a hold (its key got a budget since); False when
        the budget does not cover it."""
        now = now_utc(now)
        with self._session() as session, session.begin():
            held = session.execute(
                update(ApiKey)
                .where(ApiKey.id == key_id)
                .where(ApiKey.budget_nanos.is_not(None))
                .where(
                    ApiKey.spent_nanos + ApiKey.reserved_nanos + literal(amount_nanos) <= ApiKey.budget_nanos
                )
                .values(reserved_nanos=ApiKey.reserved_nanos + literal(amount_nanos))
            )
            if not held.rowcount:  # type: ignore[attr-defined]
                return False
            session.add(
                Reservation(
                    id=job_id,
                    key_id=key_id,
                    request_id=f"job-{job_id}",
                    amount_nanos=amount_nanos,
                    created_at=now,
                    expires_at=now + timedelta(seconds=ttl),
                )
            )
            session.execute(update(JobRow).where(JobRow.id == job_id).values(hold_nanos=amount_nanos))
        return True

    # --- claim and lease ------------------------------------------------------------------------

    def claim(
        self, owner: str, limit: int, lease_seconds: float, *, now: datetime | None = None
    ) -> list[ClaimedJob]:
        """Lease up to `limit` due jobs to `owner` (oldest first); see the module docstring."""
        if limit <= 0:
            return []
        now = now_utc(now)
        candidates = (
            select(JobRow.id, JobRow.key_id)
            .where(claimable(now))
            .order_by(JobRow.run_after, JobRow.created_at, JobRow.batch_index)
            .limit(limit * CLAIM_OVERSCAN)
        )
        taken = {
            "state": RUNNING,
            "lease_owner": owner,
            "lease_expires_at": now + timedelta(seconds=lease_seconds),
            "attempts": JobRow.attempts + 1,
            "started_at": func.coalesce(JobRow.started_at, now),
            "updated_at": now,
        }
        with self._session() as session:
            if self._postgres:
                with session.begin():
                    rows = session.execute(candidates.with_for_update(skip_locked=True)).all()
                    chosen = self._within_key_limits(session, rows, limit, now)
                    if chosen:
                        session.execute(update(JobRow).where(JobRow.id.in_(chosen)).values(**taken))
            else:
                rows = session.execute(candidates).all()
                picked = self._within_key_limits(session, rows, limit, now)
                session.rollback()  # end the read before writing (SQLite: no read-to-write upgrade)
                chosen = []
                with session.begin():
                    for job_id in picked:
                        got = session.execute(
                            update(JobRow).where(JobRow.id == job_id, claimable(now)).values(**taken)
                        )
                        if got.rowcount:  # type: ignore[attr-defined]
                            chosen.append(job_id)
            if not chosen:
                return []
            found = session.scalars(
                select(JobRow).options(undefer(JobRow.request_body)).where(JobRow.id.in_(chosen))
            ).all()
            by_id = {row.id: ClaimedJob(JobRecord.from_row(row), row.request_body) for row in found}
        return [by_id[job_id] for job_id in chosen if job_id in by_id]

    @staticmethod
    def _within_key_limits(session: Session, rows: Sequence[Any], limit: int, now: datetime) -> list[str]:
        """The candidates to take, leaving out keys already running `max_concurrent` jobs."""
        key_ids = {key_id for _, key_id in rows}
        caps: dict[int, int] = {
            key_id: int(cap or 0)
            for key_id, cap in session.execute(
                select(ApiKey.id, ApiKey.max_concurrent).where(
                    ApiKey.id.in_(key_ids), ApiKey.max_concurrent.is_not(None)
                )
            ).all()
        }
        running: dict[int, int] = {}
        if caps:
            running = {
                key_id: int(count)
                for key_id, count in session.execute(
                    select(JobRow.key_id, func.count())
                    .where(JobRow.key_id.in_(caps), JobRow.state == RUNNING, JobRow.lease_expires_at >= now)
                    .group_by(JobRow.key_id)
                ).all()
            }
        chosen: list[str] = []
        for job_id, key_id in rows:
            if key_id in caps:
                if running.get(key_id, 0) >= caps[key_id]:
                    continue
                running[key_id] = running.get(key_id, 0) + 1
            chosen.append(job_id)
            if len(chosen) >= limit:
                break
        return chosen

    def heartbeat(
        self, owner: str, job_ids: Iterable[str], lease_seconds: float, *, now: datetime | None = None
    ) -> set[str]:
        """Extend `owner`'s leases; returns the ids among them whose cancellation was requested."""
        ids = list(job_ids)
        if not ids:
            return set()
        now = now_utc(now)
        with self._session() as session, session.begin():
            session.execute(
                update(JobRow)
                .where(JobRow.id.in_(ids), JobRow.lease_owner == owner, JobRow.state == RUNNING)
                .values(lease_expires_at=now + timedelta(seconds=lease_seconds))
            )
            return set(
                session.scalars(select(JobRow.id).where(JobRow.id.in_(ids), JobRow.cancel_requested)).all()
            )

    def requeue(
        self,
        owner: str,
        job_ids: Iterable[str] | None,
        *,
        delay: float = 0.0,
        count_attempt: bool = False,
        last_error: dict[str, Any] | None = None,
        now: datetime | None = None,
    ) -> int:
        """Give `owner`'s running jobs back to the queue, due after `delay` seconds.

        Without `count_attempt` the attempt did not count (a worker shutting down, a key at its
        rate limit); with it, it did (a retryable upstream failure; `last_error` says which).
        `job_ids` None: every job `owner` still holds (a worker stopping for good).
        """
        ids = None if job_ids is None else list(job_ids)
        if ids is not None and not ids:
            return 0
        now = now_utc(now)
        values: dict[str, Any] = {
            "state": PENDING,
            "lease_owner": None,
            "lease_expires_at": None,
            "run_after": now + timedelta(seconds=delay),
            "updated_at": now,
        }
        if not count_attempt:
            values["attempts"] = (
                func.max(JobRow.attempts - 1, 0)
                if not self._postgres
                else func.greatest(JobRow.attempts - 1, 0)
            )
        if last_error is not None:
            values["last_error"] = to_json(last_error)
        with self._session() as session, session.begin():
            query = update(JobRow).where(JobRow.lease_owner == owner, JobRow.state == RUNNING)
            if ids is not None:
                query = query.where(JobRow.id.in_(ids))
            result = session.execute(query.values(**values))
            return int(result.rowcount)  # type: ignore[attr-defined]
