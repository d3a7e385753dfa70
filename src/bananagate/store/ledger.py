"""The usage ledger: one row per admitted request, and the money moving with it.

`record` is the settle (and the release) of a call in ONE transaction: insert the ledger row,
drop the call's reservation, and move the key's money (`reserved -= hold`, `spent += cost`).
The request id is unique, so a row is never written twice and a repeated settle moves no money.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Engine, Select, delete, func, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from bananagate.store.reservations import Hold
from bananagate.store.schema import ApiKey, LedgerEntry, Reservation

GroupBy = Literal["day", "model", "key"]


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """What is known about a request when it ends."""

    request_id: str
    key_id: int | None
    key_name: str
    model: str
    status: int
    outcome: str  # ok | no_image | error | cancelled
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    channel: str | None = None
    streamed: bool = False
    finish_reason: str | None = None
    attempts: int = 0
    images: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    image_tokens: int = 0
    thoughts_tokens: int = 0
    cost_nanos: int = 0
    latency_ms: int = 0
    client_ip: str | None = None

    @classmethod
    def from_entry(cls, entry: LedgerEntry) -> LedgerRow:
        return cls(**{name: getattr(entry, name) for name in cls.__dataclass_fields__})


@dataclass(frozen=True, slots=True)
class UsageSummary:
    """Totals of a group of ledger rows (`group` is None for the grand total)."""

    group: str | None
    requests: int
    succeeded: int
    images: int
    prompt_tokens: int
    output_tokens: int
    cost_nanos: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class LedgerRepository:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def _session(self) -> Session:
        return self._sessions()

    def record(self, row: LedgerRow, hold: Hold | None = None) -> bool:
        """Write the row and settle its money; False (and nothing changed) if already recorded.

        `row.cost_nanos` is charged to the key. A hold that the sweeper already released (the
        call outlived its reservation) is not released twice.
        """
        values = asdict(row)
        values["request_id"] = row.request_id[:64]
        try:
            with self._session() as session, session.begin():
                # The insert goes first: a duplicate request id aborts before any money moves.
                session.add(LedgerEntry(**values))
                session.flush()
                released = 0
                if hold is not None:
                    gone = session.execute(delete(Reservation).where(Reservation.id == hold.id))
                    released = hold.amount_nanos if gone.rowcount else 0  # type: ignore[attr-defined]
                if row.key_id is not None and (released or row.cost_nanos):
                    session.execute(
                        update(ApiKey)
                        .where(ApiKey.id == row.key_id)
                        .values(
                            reserved_nanos=ApiKey.reserved_nanos - literal(released),
                            spent_nanos=ApiKey.spent_nanos + literal(row.cost_nanos),
                        )
                    )
        except IntegrityError:
            return False
        return True

    def get(self, request_id: str) -> LedgerRow | None:
        with self._session() as session:
            entry = session.scalars(select(LedgerEntry).where(LedgerEntry.request_id == request_id)).first()
            return None if entry is None else LedgerRow.from_entry(entry)

    def _filtered(
        self,
        query: Select[Any],
        key_id: int | None,
        key_name: str | None,
        model: str | None,
        since: datetime | None,
        until: datetime | None,
    ) -> Select[Any]:
        if key_id is not None:
            query = query.where(LedgerEntry.key_id == key_id)
        if key_name is not None:
            query = query.where(LedgerEntry.key_name == key_name)
        if model is not None:
            query = query.where(LedgerEntry.model == model)
        if since is not None:
            query = query.where(LedgerEntry.created_at >= since)
        if until is not None:
            query = query.where(LedgerEntry.created_at < until)
        return query

    def rows(
        self,
        *,
        key_id: int | None = None,
        key_name: str | None = None,
        model: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> Iterator[LedgerRow]:
        """Ledger rows, oldest first."""
        query = self._filtered(
            select(LedgerEntry).order_by(LedgerEntry.id), key_id, key_name, model, since, until
        )
        if limit is not None:
            query = query.limit(limit)
        with self._session() as session:
            for entry in session.scalars(query):
                yield LedgerRow.from_entry(entry)

    def _day(self) -> ColumnElement[Any]:
        # Timestamps are UTC; SQLite stores them as naive text, PostgreSQL as timestamptz.
        if self._engine.dialect.name == "postgresql":
            return func.to_char(func.timezone("UTC", LedgerEntry.created_at), "YYYY-MM-DD")
        return func.strftime("%Y-%m-%d", LedgerEntry.created_at)

    def summary(
        self,
        *,
        by: GroupBy | None = None,
        key_id: int | None = None,
        key_name: str | None = None,
        model: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[UsageSummary]:
        """Totals, optionally per day (UTC), model or key name, in group order."""
        group: Any = None  # a column or SQL expression
        if by == "day":
            group = self._day()
        elif by == "model":
            group = LedgerEntry.model
        elif by == "key":
            group = LedgerEntry.key_name
        columns: list[Any] = [
            func.count(LedgerEntry.id),
            func.coalesce(func.sum(LedgerEntry.images), 0),
            func.coalesce(func.sum(LedgerEntry.prompt_tokens), 0),
            func.coalesce(func.sum(LedgerEntry.output_tokens), 0),
            func.coalesce(func.sum(LedgerEntry.cost_nanos), 0),
            func.count(LedgerEntry.id).filter(LedgerEntry.status == 200),
        ]
        query = select(*([group.label("g")] if group is not None else []), *columns)
        query = self._filtered(query, key_id, key_name, model, since, until)
        if group is not None:
            query = query.group_by(group).order_by(group)
        with self._session() as session:
            result = session.execute(query).all()
        out: list[UsageSummary] = []
        for row in result:
            values = list(row)
            label = str(values.pop(0)) if group is not None else None
            count, images, prompt, output, cost, ok = (int(v or 0) for v in values)
            out.append(UsageSummary(label, count, ok, images, prompt, output, cost))
        return out
