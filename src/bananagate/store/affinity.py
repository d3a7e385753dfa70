"""Conversation affinity: which channel issued a thought signature or an image (by digest).

Used when no Redis is configured (server/affinity.py prefers Redis): one row per digest, the
newest answer's channel winning, forgotten after its expiry. Rows hold digests, never the
signatures or images themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, String, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, mapped_column, sessionmaker

from bananagate.store.schema import Base, UTCDateTime

DIGEST_LENGTH = 32
CHANNEL_MAX_LENGTH = 100


class AffinityEntry(Base):
    __tablename__ = "conversation_affinity"

    digest: Mapped[str] = mapped_column(String(DIGEST_LENGTH), primary_key=True)
    channel: Mapped[str] = mapped_column(String(CHANNEL_MAX_LENGTH))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class AffinityRepository:
    """Synchronous and thread-safe, like the other repositories."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def lookup(self, digests: Sequence[str], *, now: datetime | None = None) -> str | None:
        """The channel of the first digest (in the given order) that is known and not expired."""
        if not digests:
            return None
        now = now or datetime.now(UTC)
        query = select(AffinityEntry.digest, AffinityEntry.channel).where(
            AffinityEntry.digest.in_(list(digests)), AffinityEntry.expires_at > now
        )
        with self._sessions() as session:
            found = {digest: channel for digest, channel in session.execute(query)}
        return next((found[d] for d in digests if d in found), None)

    def remember(
        self, digests: Sequence[str], channel: str, ttl_seconds: float, *, now: datetime | None = None
    ) -> None:
        """Map each digest to `channel` until `ttl_seconds` from now (an existing row is replaced)."""
        if not digests:
            return
        expires = (now or datetime.now(UTC)) + timedelta(seconds=ttl_seconds)
        # Deduplicated: PostgreSQL refuses one statement that updates a row twice.
        unique = dict.fromkeys(digests)
        rows = [{"digest": d, "channel": channel[:CHANNEL_MAX_LENGTH], "expires_at": expires} for d in unique]
        insert = postgresql.insert if self._engine.dialect.name == "postgresql" else sqlite.insert
        statement = insert(AffinityEntry).values(rows)
        statement = statement.on_conflict_do_update(
            index_elements=[AffinityEntry.digest],
            set_={"channel": statement.excluded.channel, "expires_at": statement.excluded.expires_at},
        )
        with self._sessions() as session, session.begin():
            session.execute(statement)

    def sweep(self, *, now: datetime | None = None) -> int:
        """Forget expired mappings; how many were deleted."""
        with self._sessions() as session, session.begin():
            gone = session.execute(
                delete(AffinityEntry).where(AffinityEntry.expires_at <= (now or datetime.now(UTC)))
            )
            return int(gone.rowcount)  # type: ignore[attr-defined]
