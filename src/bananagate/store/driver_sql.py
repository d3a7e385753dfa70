"""INSERTs written as the driver's own SQL, values converted by the columns' own bind processors.

The ledger and the gallery insert rows for every request, from a worker thread. Through
SQLAlchemy's statement execution (compilation cache lookups, parameter processing, result
wrapping) that thread held the GIL for most of each batch while the event loop waited for it.
The same SQL with the same conversions, handed to the driver, costs a fraction of that.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, Dialect, Row, Table

# A positional parameter in each DB-API paramstyle the store's drivers use.
_MARKS = {"qmark": "?", "format": "%s", "pyformat": "%s"}
# Rows per multi-row INSERT: SQLite allows 32766 parameters per statement (3.32 on), and a
# statement per row count is cached, so the count is kept to a few shapes.
MAX_ROWS_PER_STATEMENT = 256


class DriverInsert:
    """`INSERT INTO table (columns) VALUES (...)` in the dialect's paramstyle."""

    def __init__(self, table: Table, columns: Sequence[str], dialect: Dialect) -> None:
        self.columns = tuple(columns)
        self.mark = _MARKS[dialect.paramstyle]  # the store runs on SQLite and PostgreSQL drivers
        self.quote: Callable[[str], str] = dialect.identifier_preparer.quote
        self._head = "INSERT INTO {} ({}) VALUES ".format(
            self.quote(table.name), ", ".join(self.quote(table.c[name].name) for name in self.columns)
        )
        self._tuple = "({})".format(", ".join([self.mark] * len(self.columns)))
        self.sql = self._head + self._tuple
        self._processors = [
            table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in self.columns
        ]
        self._returning: dict[tuple[int, tuple[str, ...]], str] = {}
        self._table = table

    def values(self, values: Iterable[Any]) -> tuple[Any, ...]:
        """One row's values (in `columns` order) as the driver takes them."""
        return tuple(
            v if p is None or v is None else p(v) for v, p in zip(values, self._processors, strict=True)
        )

    def returning(
        self, connection: Connection, rows: Sequence[Iterable[Any]], columns: Sequence[str]
    ) -> list[Row[Any]]:
        """Insert `rows` (values in `columns` order) by multi-row INSERTs that return `columns`
        of each row, in no set order."""
        returned: list[Row[Any]] = []
        for at in range(0, len(rows), MAX_ROWS_PER_STATEMENT):
            chunk = rows[at : at + MAX_ROWS_PER_STATEMENT]
            values = tuple(v for row in chunk for v in self.values(row))
            returned += connection.exec_driver_sql(
                self._returning_sql(len(chunk), tuple(columns)), values
            ).all()
        return returned

    def _returning_sql(self, rows: int, columns: tuple[str, ...]) -> str:
        sql = self._returning.get((rows, columns))
        if sql is None:
            returned = ", ".join(self.quote(self._table.c[name].name) for name in columns)
            sql = f"{self._head}{', '.join([self._tuple] * rows)} RETURNING {returned}"
            self._returning[rows, columns] = sql
        return sql
