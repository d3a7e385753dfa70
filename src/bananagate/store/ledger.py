"""The usage ledger: one row per admitted request, and the money moving with it.

`record` is the settle (and the release) of a call in ONE transaction: insert the ledger row,
drop the call's reservation, and move the key's money (`reserved -= hold`, `spent += cost`).
The request id is unique, so a row is never written twice and a repeated settle moves no money.

`record_many` is the same for a batch of calls in ONE transaction (the gateway's group commit,
`server.metering.LedgerWriter`): one multi-row INSERT, one DELETE of the batch's holds, one
UPDATE per key with the batch's sums. A batch that fails for one of its rows (a duplicate
request id) is redone row by row, so only that row is refused and the others are written.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, cast

from sqlalchemy import ColumnElement, Connection, Dialect, Engine, Select, Table, delete, func, select
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from bananagate.store.db import checkpoint, no_wait_engine
from bananagate.store.driver_sql import DriverInsert
from bananagate.store.reservations import Hold
from bananagate.store.schema import REQUEST_ID_MAX_LENGTH, ApiKey, LedgerEntry, Reservation

GroupBy = Literal["day", "model", "key"]


class _DriverStatements:
    """The batch's INSERT and its money UPDATE as the driver's own SQL (`store.driver_sql`):
    the raw statements served 5-16 % more requests per second at c=8 (A/B)."""

    def __init__(self, dialect: Dialect) -> None:
        self.insert = DriverInsert(cast(Table, LedgerEntry.__table__), _FIELDS, dialect)
        mark, quote = self.insert.mark, self.insert.quote
        # The key's money moves once per batch and key: `reserved -= released`, `spent += cost`.
        keys = quote(ApiKey.__tablename__)
        reserved, spent, key_id = (
            quote(ApiKey.__table__.c[n].name) for n in ("reserved_nanos", "spent_nanos", "id")
        )
        self.move_money = (
            f"UPDATE {keys} SET {reserved} = {reserved} - {mark}, {spent} = {spent} + {mark}"
            f" WHERE {key_id} = {mark}"
        )

    def row(self, row: LedgerRow) -> tuple[Any, ...]:
        values = [getattr(row, name) for name in _FIELDS]
        values[_REQUEST_ID] = row.request_id[:REQUEST_ID_MAX_LENGTH]
        return self.insert.values(values)


def transient(exc: BaseException) -> bool:
    """A failure of the database itself (down, locked, deadlock, connection lost), not of a row:
    redoing the batch row by row would only fail again, slower."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


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


# One settle or release: the row, and the hold it gives back (if any).
Settle = tuple[LedgerRow, Hold | None]
# The ledger's columns but its id, in the row's order.
_FIELDS = tuple(LedgerRow.__dataclass_fields__)
_REQUEST_ID = _FIELDS.index("request_id")


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


# Transactions of `record_many_now` between checkpoints: ~1,000 WAL pages, SQLite's own
# automatic checkpoint, for rows of a few hundred bytes and their index entries.
CHECKPOINT_EVERY = 256


class LedgerRepository:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._statements = _DriverStatements(engine.dialect)
        # Embedded SQLite only: writes that never wait, for `record_many_now`, each thread (the
        # event loop's) through a connection of its own that it keeps: checking one out of the
        # pool and back (with its reset) for every batch cost as much as the write.
        self._no_wait = no_wait_engine(engine)
        self._kept = threading.local()
        self._kept_all: list[Connection] = []
        self._kept_lock = threading.Lock()
        self._unchecked = 0  # transactions through it since its last `checkpoint`

    def close(self) -> None:
        if self._no_wait is not None:
            with self._kept_lock:
                kept, self._kept_all = self._kept_all, []
            for connection in kept:
                connection.close()
            self._no_wait.dispose()

    def _no_wait_connection(self, engine: Engine) -> Connection:
        """This thread's kept connection of `engine` (the no-wait one), made on first use."""
        connection: Connection | None = getattr(self._kept, "connection", None)
        if connection is None or connection.closed or connection.invalidated:
            connection = self._kept.connection = engine.connect()
            with self._kept_lock:
                self._kept_all = [c for c in self._kept_all if not c.closed]
                self._kept_all.append(connection)
        return connection

    def _session(self) -> Session:
        return self._sessions()

    def record(self, row: LedgerRow, hold: Hold | None = None) -> bool:
        """Write the row and settle its money; False (and nothing changed) if already recorded.

        `row.cost_nanos` is charged to the key. A hold that the sweeper already released (the
        call outlived its reservation) is not released twice.
        """
        try:
            with self._engine.begin() as connection:
                self._write(connection, [(row, hold)])
        except IntegrityError:
            return False
        return True

    def record_many(self, settles: list[Settle]) -> list[bool | Exception]:
        """`record` for each of `settles`, in one transaction when none of them fails.

        One outcome per settle, in order: True (written), False (already recorded: a duplicate
        request id, in the table or earlier in the batch) or the exception that row met. A
        failure of the database itself (`transient`) is raised for the whole batch instead.
        """
        if not settles:
            return []
        try:
            with self._engine.begin() as connection:
                self._write(connection, settles)
        except Exception as exc:
            if transient(exc) or len(settles) == 1:
                if isinstance(exc, IntegrityError):
                    return [False]
                raise
            # One bad row (most likely a duplicate request id) rolled back the whole batch:
            # redo it row by row, in arrival order, so only that row is refused.
            outcomes: list[bool | Exception] = []
            for row, hold in settles:
                try:
                    outcomes.append(self.record(row, hold))
                except Exception as row_exc:
                    outcomes.append(row_exc)
            return outcomes
        return [True] * len(settles)

    def record_many_now(self, settles: list[Settle]) -> list[bool | Exception] | None:
        """`record_many` without waiting, for the event loop itself: on an embedded SQLite
        database, through a connection that fails at once where another process holds the write
        lock. Its outcomes when the whole batch was written in one transaction; None when it
        could not be (not SQLite, the database busy, a duplicate request id, any other error of
        the database): nothing was written, and the caller goes through `record_many` in a
        thread, which waits for the lock and sorts the rows out.

        A write is ~0.1 ms here; a trip to a worker thread and back cost the event loop more
        than that in wake-ups and GIL hand-offs (0.3 ms of latency per request at c=1).
        """
        if self._no_wait is None or not settles:
            return None
        connection = self._no_wait_connection(self._no_wait)
        try:
            with connection.begin():
                self._write(connection, settles)
        except DBAPIError:
            return None
        self._unchecked += 1
        return [True] * len(settles)

    def claim_checkpoint(self) -> bool:
        """True, once per `CHECKPOINT_EVERY` transactions of `record_many_now` (whose connections
        leave the WAL alone): the caller is then to run `checkpoint` in a thread."""
        if self._unchecked < CHECKPOINT_EVERY:
            return False
        self._unchecked = 0
        return True

    def checkpoint(self) -> None:
        """Move the WAL's pages into the database file (from a thread: it syncs the file)."""
        checkpoint(self._engine)

    def _write(self, connection: Connection, settles: list[Settle]) -> None:
        """Insert the rows, drop their holds and move the money, inside the caller's transaction.

        The insert goes first: a duplicate request id aborts before any money moves. Rows go in
        request id order and keys are updated in id order, so batches of two gateways take their
        locks in the same order instead of deadlocking each other on PostgreSQL.
        """
        statements = self._statements
        rows = sorted((statements.row(row) for row, _ in settles), key=lambda r: r[_REQUEST_ID])
        connection.exec_driver_sql(statements.insert.sql, rows)
        holds = [hold for _, hold in settles if hold is not None]
        gone = self._delete_holds(connection, [hold.id for hold in holds]) if holds else set()
        moves: dict[int, list[int]] = {}  # key id -> [released, spent]
        for row, hold in settles:
            released = 0
            if hold is not None and hold.id in gone:
                gone.discard(hold.id)  # a hold gives its money back once, however often named
                released = hold.amount_nanos
            if row.key_id is not None and (released or row.cost_nanos):
                move = moves.setdefault(row.key_id, [0, 0])
                move[0] += released
                move[1] += row.cost_nanos
        if moves:
            connection.exec_driver_sql(
                statements.move_money,
                [(released, spent, key_id) for key_id, (released, spent) in sorted(moves.items())],
            )

    def _delete_holds(self, connection: Connection, ids: list[str]) -> set[str]:
        """Delete these reservations; the ids that were still there (the others were released by
        the sweeper, which moved their money back already)."""
        if connection.dialect.delete_returning:
            result = connection.execute(
                delete(Reservation).where(Reservation.id.in_(ids)).returning(Reservation.id)
            )
            return set(result.scalars())
        gone: set[str] = set()  # SQLite before 3.35 has no DELETE ... RETURNING
        for hold_id in dict.fromkeys(ids):
            result = connection.execute(delete(Reservation).where(Reservation.id == hold_id))
            if result.rowcount:
                gone.add(hold_id)
        return gone

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
