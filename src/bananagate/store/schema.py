"""Tables, as typed SQLAlchemy declarative models.

Migrations in `migrations/versions/` must be kept in step with these models (generate a new
revision with `alembic -c src/bananagate/store/alembic.ini revision --autogenerate -m "..."`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import CheckConstraint, DateTime, Dialect, Index, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Deterministic constraint names, so later migrations (and SQLite batch mode) can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

NAME_MAX_LENGTH = 64
PREFIX_MAX_LENGTH = 16
SHA256_HEX_LENGTH = 64


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python.

    PostgreSQL stores `timestamptz`; SQLite has no time zones, so values are stored as naive UTC
    and given back their UTC zone on the way out. Naive datetimes passed in are taken as UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ApiKey(Base):
    """A client API key. Only the SHA-256 of the secret is stored, never the secret."""

    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint("length(name) > 0", name="name_not_empty"),
        Index("ix_api_keys_secret_hash", "secret_hash", unique=True),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX_LENGTH), unique=True)
    # The first characters of the secret (e.g. `sk-AbCd123`), kept to tell keys apart on screen.
    prefix: Mapped[str] = mapped_column(String(PREFIX_MAX_LENGTH))
    # Lower-case hex SHA-256 of the whole secret.
    secret_hash: Mapped[str] = mapped_column(String(SHA256_HEX_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
