"""Reading jobs and batches back, and forgetting finished ones on request."""

from __future__ import annotations

from sqlalchemy import delete, func, select

from bananagate.store.jobs import JobQueue
from bananagate.store.jobs_records import FINAL_STATES, BatchRecord, JobRecord, batch_record, count_states
from bananagate.store.jobs_schema import JobBatchRow, JobRow


class JobReads(JobQueue):
    """The queue (`JobQueue`) plus reads; `JobRepository` adds the ways a job ends."""

    def get(self, job_id: str, *, key_id: int | None = None) -> JobRecord | None:
        """A job (or batch item) by id; with `key_id`, only if that key owns it."""
        with self._session() as session:
            row = session.get(JobRow, job_id)
            if row is None or (key_id is not None and row.key_id != key_id):
                return None
            return JobRecord.from_row(row)

    def result(self, job_id: str) -> bytes | None:
        with self._session() as session:
            return session.scalar(select(JobRow.result_body).where(JobRow.id == job_id))

    def list_jobs(
        self, key_id: int, *, limit: int = 50, offset: int = 0, state: str | None = None
    ) -> list[JobRecord]:
        """A key's standalone jobs, newest first (batch items are listed under their batch)."""
        query = select(JobRow).where(JobRow.key_id == key_id, JobRow.batch_id.is_(None))
        if state is not None:
            query = query.where(JobRow.state == state)
        query = query.order_by(JobRow.created_at.desc(), JobRow.id).offset(offset).limit(limit)
        with self._session() as session:
            return [JobRecord.from_row(row) for row in session.scalars(query)]

    def delete(self, key_id: int, job_id: str) -> bool:
        """Forget a key's finished standalone job and its result."""
        with self._session() as session, session.begin():
            result = session.execute(
                delete(JobRow).where(
                    JobRow.id == job_id,
                    JobRow.key_id == key_id,
                    JobRow.batch_id.is_(None),
                    JobRow.state.in_(FINAL_STATES),
                )
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def get_batch(self, batch_id: str, *, key_id: int | None = None) -> BatchRecord | None:
        with self._session() as session:
            row = session.get(JobBatchRow, batch_id)
            if row is None or (key_id is not None and row.key_id != key_id):
                return None
            cost = session.scalar(
                select(func.coalesce(func.sum(JobRow.cost_nanos), 0)).where(JobRow.batch_id == batch_id)
            )
            return batch_record(row, count_states(session, batch_id), int(cost or 0))

    def batch_items(self, batch_id: str) -> list[tuple[JobRecord, bytes | None]]:
        """Every item of a batch in input order, with its result bytes."""
        with self._session() as session:
            rows = session.execute(
                select(JobRow, JobRow.result_body)
                .where(JobRow.batch_id == batch_id)
                .order_by(JobRow.batch_index)
            ).all()
            return [(JobRecord.from_row(row), body) for row, body in rows]

    def list_batches(self, key_id: int, *, limit: int = 50, offset: int = 0) -> list[BatchRecord]:
        with self._session() as session:
            rows = session.scalars(
                select(JobBatchRow)
                .where(JobBatchRow.key_id == key_id)
                .order_by(JobBatchRow.created_at.desc(), JobBatchRow.id)
                .offset(offset)
                .limit(limit)
            ).all()
            return [batch_record(row, count_states(session, row.id)) for row in rows]

    def delete_batch(self, key_id: int, batch_id: str) -> bool:
        """Forget a key's finished batch, its items and their results."""
        with self._session() as session, session.begin():
            gone = session.execute(
                delete(JobBatchRow).where(
                    JobBatchRow.id == batch_id,
                    JobBatchRow.key_id == key_id,
                    JobBatchRow.finished_at.is_not(None),
                )
            )
            if not gone.rowcount:  # type: ignore[attr-defined]
                return False
            session.execute(delete(JobRow).where(JobRow.batch_id == batch_id))
            return True
