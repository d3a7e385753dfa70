"""Webhook deliveries of finished jobs and batches, as a small queue of their own.

Rows are written by the transaction that finishes their job or batch (`jobs_repo`), so a
crash between "finished" and "told the client" cannot lose a call. Workers claim a due row by
pushing its `next_attempt_at` past a short lease in one conditional UPDATE, so two workers never
send the same attempt; a worker that dies mid-call leaves it due again when the lease passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from bananagate.store.jobs_records import now_utc
from bananagate.store.jobs_schema import JobWebhookRow

WEBHOOK_PENDING = "pending"
WEBHOOK_DELIVERED = "delivered"
WEBHOOK_FAILED = "failed"


@dataclass(frozen=True, slots=True)
class WebhookRecord:
    id: int
    target: str
    event: str
    url: str
    secret: str | None
    state: str
    attempts: int
    last_status: int | None
    last_error: str | None
    delivered_at: datetime | None
    next_attempt_at: datetime

    @classmethod
    def from_row(cls, row: JobWebhookRow) -> WebhookRecord:
        return cls(
            row.id,
            row.target,
            row.event,
            row.url,
            row.secret,
            row.state,
            row.attempts,
            row.last_status,
            row.last_error,
            row.delivered_at,
            row.next_attempt_at,
        )


def add_webhook(
    session: Session,
    *,
    target: str,
    event: str,
    url: str,
    secret: str | None,
    now: datetime,
) -> None:
    """Queue a delivery inside the caller's transaction (once per target)."""
    if session.scalar(select(JobWebhookRow.id).where(JobWebhookRow.target == target)) is not None:
        return
    session.add(
        JobWebhookRow(
            target=target,
            event=event,
            url=url,
            secret=secret,
            state=WEBHOOK_PENDING,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
            updated_at=now,
        )
    )


class WebhookQueue:
    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def claim(self, limit: int, lease_seconds: float, *, now: datetime | None = None) -> list[WebhookRecord]:
        """Due deliveries, each leased to the caller for `lease_seconds`."""
        now = now_utc(now)
        with self._sessions() as session:
            due = session.scalars(
                select(JobWebhookRow.id)
                .where(JobWebhookRow.state == WEBHOOK_PENDING, JobWebhookRow.next_attempt_at <= now)
                .order_by(JobWebhookRow.next_attempt_at)
                .limit(limit)
            ).all()
            session.rollback()
            got: list[int] = []
            with session.begin():
                for webhook_id in due:
                    taken = session.execute(
                        update(JobWebhookRow)
                        .where(
                            JobWebhookRow.id == webhook_id,
                            JobWebhookRow.state == WEBHOOK_PENDING,
                            JobWebhookRow.next_attempt_at <= now,
                        )
                        .values(next_attempt_at=now + timedelta(seconds=lease_seconds), updated_at=now)
                    )
                    if taken.rowcount:  # type: ignore[attr-defined]
                        got.append(webhook_id)
            if not got:
                return []
            rows = session.scalars(select(JobWebhookRow).where(JobWebhookRow.id.in_(got))).all()
            return [WebhookRecord.from_row(row) for row in rows]

    def delivered(self, webhook_id: int, status: int, *, now: datetime | None = None) -> None:
        now = now_utc(now)
        with self._sessions() as session, session.begin():
            session.execute(
                update(JobWebhookRow)
                .where(JobWebhookRow.id == webhook_id)
                .values(
                    state=WEBHOOK_DELIVERED,
                    attempts=JobWebhookRow.attempts + 1,
                    last_status=status,
                    last_error=None,
                    delivered_at=now,
                    updated_at=now,
                )
            )

    def failed(
        self,
        webhook_id: int,
        status: int | None,
        error: str,
        retry_in: float | None,
        *,
        now: datetime | None = None,
    ) -> None:
        """One failed attempt: due again in `retry_in` seconds, or given up when that is None."""
        now = now_utc(now)
        values: dict[str, object] = {
            "attempts": JobWebhookRow.attempts + 1,
            "last_status": status,
            "last_error": error[:1000],
            "updated_at": now,
        }
        if retry_in is None:
            values["state"] = WEBHOOK_FAILED
        else:
            values["next_attempt_at"] = now + timedelta(seconds=retry_in)
        with self._sessions() as session, session.begin():
            session.execute(update(JobWebhookRow).where(JobWebhookRow.id == webhook_id).values(**values))

    def of(self, target: str) -> WebhookRecord | None:
        with self._sessions() as session:
            row = session.scalars(select(JobWebhookRow).where(JobWebhookRow.target == target)).first()
            return None if row is None else WebhookRecord.from_row(row)

    def purge(self, before: datetime) -> int:
        """Forget finished deliveries last touched before `before`."""
        with self._sessions() as session, session.begin():
            result = session.execute(
                delete(JobWebhookRow).where(
                    JobWebhookRow.state != WEBHOOK_PENDING, JobWebhookRow.updated_at < before
                )
            )
            return int(result.rowcount)  # type: ignore[attr-defined]
