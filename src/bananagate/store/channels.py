"""Upstream channels added with `bananagate channels add`: their settings and sealed keys.

Keys are stored only as one sealed token per channel (see `bananagate.store.crypto`); this module
never sees them in clear unless a `KeyCipher` is handed in. The running server polls
`signature()` to notice changes made by other processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import CheckConstraint, Engine, Integer, String, Text, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from bananagate.store.crypto import KeyCipher
from bananagate.store.errors import StoreError
from bananagate.store.schema import NAME_MAX_LENGTH, Base, UTCDateTime

URL_MAX_LENGTH = 2048


class ChannelNameTaken(StoreError):
    def __init__(self, name: str) -> None:
        super().__init__(f"a channel named {name!r} already exists")
        self.name = name


class ChannelRow(Base):
    """One upstream channel. `options` holds the kind-specific rest as JSON."""

    __tablename__ = "channels"
    __table_args__ = (CheckConstraint("length(name) > 0", name="name_not_empty"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX_LENGTH), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    base_url: Mapped[str | None] = mapped_column(String(URL_MAX_LENGTH))
    auth: Mapped[str | None] = mapped_column(String(16))
    models: Mapped[str] = mapped_column(Text)  # JSON list
    options: Mapped[str] = mapped_column(Text)  # JSON object
    priority: Mapped[int] = mapped_column(Integer)
    weight: Mapped[int] = mapped_column(Integer)
    key_count: Mapped[int] = mapped_column(Integer)
    sealed_keys: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


@dataclass(frozen=True, slots=True)
class ChannelRecord:
    """A stored channel without its keys in clear."""

    id: int
    name: str
    kind: str
    base_url: str | None
    auth: str | None
    models: tuple[str, ...]
    options: dict[str, Any]
    priority: int
    weight: int
    key_count: int
    sealed_keys: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: ChannelRow) -> ChannelRecord:
        return cls(
            id=row.id,
            name=row.name,
            kind=row.kind,
            base_url=row.base_url,
            auth=row.auth,
            models=tuple(orjson.loads(row.models)),
            options=dict(orjson.loads(row.options)),
            priority=row.priority,
            weight=row.weight,
            key_count=row.key_count,
            sealed_keys=row.sealed_keys,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    def fields(self) -> dict[str, Any]:
        """The channel's settings as config-file fields (no keys)."""
        out: dict[str, Any] = {**self.options, "name": self.name, "kind": self.kind}
        out.update(models=list(self.models), priority=self.priority, weight=self.weight)
        if self.base_url is not None:
            out["base_url"] = self.base_url
        if self.auth is not None:
            out["auth"] = self.auth
        return out


class ChannelRepository:
    """Queries on the `channels` table; synchronous, one short session per call."""

    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def _session(self) -> Session:
        return self._sessions()

    def add(
        self,
        *,
        name: str,
        kind: str,
        keys: list[str],
        cipher: KeyCipher,
        base_url: str | None = None,
        auth: str | None = None,
        models: list[str] | tuple[str, ...] = (),
        priority: int = 0,
        weight: int = 1,
        options: dict[str, Any] | None = None,
        now: datetime | None = None,
    ) -> ChannelRecord:
        """Store a channel (validated by the caller); raises ChannelNameTaken."""
        when = now or datetime.now(UTC)
        row = ChannelRow(
            name=name,
            kind=kind,
            base_url=base_url,
            auth=auth,
            models=orjson.dumps(list(models)).decode(),
            options=orjson.dumps(options or {}).decode(),
            priority=priority,
            weight=weight,
            key_count=len(keys),
            sealed_keys=cipher.seal(keys),
            created_at=when,
            updated_at=when,
        )
        try:
            with self._session() as session, session.begin():
                session.add(row)
        except IntegrityError as exc:
            raise ChannelNameTaken(name) from exc
        return ChannelRecord.from_row(row)

    def list_channels(self) -> list[ChannelRecord]:
        with self._session() as session:
            rows = session.scalars(select(ChannelRow).order_by(ChannelRow.id))
            return [ChannelRecord.from_row(row) for row in rows]

    def get(self, name: str) -> ChannelRecord | None:
        with self._session() as session:
            row = session.scalars(select(ChannelRow).where(ChannelRow.name == name)).one_or_none()
            return None if row is None else ChannelRecord.from_row(row)

    def remove(self, name: str) -> bool:
        with self._session() as session, session.begin():
            result = session.execute(delete(ChannelRow).where(ChannelRow.name == name))
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def signature(self) -> tuple[int, int, str]:
        """Changes whenever a channel is added, removed or replaced: (count, max id, last change)."""
        query = select(func.count(), func.max(ChannelRow.id), func.max(ChannelRow.updated_at))
        with self._session() as session:
            count, max_id, last = session.execute(query).one()
        return int(count or 0), int(max_id or 0), str(last or "")

    @staticmethod
    def open_keys(record: ChannelRecord, cipher: KeyCipher) -> list[str]:
        """The record's keys in clear (raises SecretKeyMismatch with the wrong secret)."""
        return cipher.open(record.sealed_keys)
