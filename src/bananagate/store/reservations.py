"""Budget reservations: money held for running calls, exact across any number of processes.

The whole algorithm is one conditional UPDATE (`reserve`)::

    UPDATE api_keys SET reserved_nanos = reserved_nanos + :amount
     WHERE id = :key AND budget_nanos IS NOT NULL
       AND spent_nanos + reserved_nanos + :amount <= budget_nanos

Both SQLite and PostgreSQL evaluate the condition against the row they lock for the update, so
however many gateways race, the sum of holds and spending never passes the budget. A row in
`reservations` remembers each hold with an expiry: whoever deletes that row (the settle, a
release, or the sweeper after a crash) is the one that moves its money back, exactly once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, delete, literal, select, update
from sqlalchemy.orm import Session, sessionmaker

from bananagate.store.schema import ApiKey, Reservation

# Sweep at most this many expired holds per transaction, so one sweep never holds locks long.
SWEEP_BATCH = 200


@dataclass(frozen=True, slots=True)
class Hold:
    """A reservation as the caller keeps it until the call ends."""

    id: str
    key_id: int
    amount_nanos: int
    # What the key's budget had left beside this hold when it was taken (for answer headers).
    remaining_nanos: int | None = None


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(UTC)


class ReservationRepository:
    """Reserve, extend and sweep holds. Synchronous and thread-safe, like the other repositories."""

    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def _session(self) -> Session:
        return self._sessions()

    def reserve(
        self,
        key_id: int,
        amount_nanos: int,
        request_id: str,
        ttl_seconds: float,
        *,
        now: datetime | None = None,
    ) -> Hold | None:
        """Hold `amount_nanos` of the key's budget; None when it does not fit (or no budget)."""
        now = _now(now)
        hold = Hold(uuid.uuid4().hex, key_id, amount_nanos)
        with self._session() as session, session.begin():
            result = session.execute(
                update(ApiKey)
                .where(ApiKey.id == key_id)
                .where(ApiKey.budget_nanos.is_not(None))
                .where(
                    ApiKey.spent_nanos + ApiKey.reserved_nanos + literal(amount_nanos) <= ApiKey.budget_nanos
                )
                .values(reserved_nanos=ApiKey.reserved_nanos + literal(amount_nanos))
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                return None
            left = session.execute(
                select(ApiKey.budget_nanos - ApiKey.spent_nanos - ApiKey.reserved_nanos).where(
                    ApiKey.id == key_id
                )
            ).scalar()
            hold = Hold(hold.id, key_id, amount_nanos, None if left is None else int(left))
            session.add(
                Reservation(
                    id=hold.id,
                    key_id=key_id,
                    request_id=request_id[:64],
                    amount_nanos=amount_nanos,
                    created_at=now,
                    expires_at=now + timedelta(seconds=ttl_seconds),
                )
            )
        return hold

    def extend(self, hold_ids: Iterable[str], ttl_seconds: float, *, now: datetime | None = None) -> int:
        """Push the expiry of live holds forward (the owner's heartbeat); how many still exist."""
        ids = list(hold_ids)
        if not ids:
            return 0
        expires = _now(now) + timedelta(seconds=ttl_seconds)
        with self._session() as session, session.begin():
            result = session.execute(
                update(Reservation).where(Reservation.id.in_(ids)).values(expires_at=expires)
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

    def sweep(self, *, now: datetime | None = None) -> int:
        """Release every hold whose expiry has passed (its process died); how many were released."""
        now = _now(now)
        released = 0
        while True:
            # Read first, in its own transaction: on SQLite a read that turns into a write can
            # fail at once under WAL; each write transaction below starts with its DELETE.
            with self._session() as session:
                expired = session.execute(
                    select(Reservation.id, Reservation.key_id, Reservation.amount_nanos)
                    .where(Reservation.expires_at < now)
                    .order_by(Reservation.id)
                    .limit(SWEEP_BATCH)
                ).all()
            if not expired:
                return released
            with self._session() as session, session.begin():
                for hold_id, key_id, amount in expired:
                    gone = session.execute(
                        delete(Reservation)
                        .where(Reservation.id == hold_id)
                        .where(Reservation.expires_at < now)
                    )
                    if gone.rowcount:  # type: ignore[attr-defined]
                        session.execute(
                            update(ApiKey)
                            .where(ApiKey.id == key_id)
                            .values(reserved_nanos=ApiKey.reserved_nanos - literal(amount))
                        )
                        released += 1
            if len(expired) < SWEEP_BATCH:
                return released

    def held(self, key_id: int | None = None) -> list[Hold]:
        """Holds currently in the table (for reports and tests)."""
        query = select(Reservation).order_by(Reservation.created_at)
        if key_id is not None:
            query = query.where(Reservation.key_id == key_id)
        with self._session() as session:
            return [Hold(r.id, r.key_id, r.amount_nanos) for r in session.scalars(query)]

    def expired_count(self, *, now: datetime | None = None) -> int:
        with self._session() as session:
            rows = session.scalars(select(Reservation.id).where(Reservation.expires_at < _now(now))).all()
            return len(rows)
