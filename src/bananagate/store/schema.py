"""Tables, as typed SQLAlchemy declarative models.

Migrations in `migrations/versions/` must be kept in step with these models (generate a new
revision with `alembic -c src/bananagate/store/alembic.ini revision --autogenerate -m "..."`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    String,
    Text,
)
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
LABEL_MAX_LENGTH = 200
REQUEST_ID_MAX_LENGTH = 64


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
    # --- limits and money (migration 0003); money is integer nano-dollars (see protocol.pricing) ---
    label: Mapped[str | None] = mapped_column(String(LABEL_MAX_LENGTH))
    # Comma-separated model ids / CIDR blocks; NULL means "any".
    allowed_models: Mapped[str | None] = mapped_column(Text())
    allow_cidrs: Mapped[str | None] = mapped_column(Text())
    budget_nanos: Mapped[int | None] = mapped_column(BigInteger())
    # Charged so far, and held by reservations of calls still running. The reservation is the
    # conditional UPDATE `spent + reserved + max <= budget`, which is what keeps budgets exact.
    spent_nanos: Mapped[int] = mapped_column(BigInteger(), default=0, server_default="0")
    reserved_nanos: Mapped[int] = mapped_column(BigInteger(), default=0, server_default="0")
    rpm: Mapped[int | None] = mapped_column(Integer())
    images_per_day: Mapped[int | None] = mapped_column(Integer())
    max_concurrent: Mapped[int | None] = mapped_column(Integer())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Reservation(Base):
    """Money held for one running call. Rows outlive a crashed process only until `expires_at`,
    when a sweeper gives the money back; live processes push `expires_at` forward."""

    __tablename__ = "reservations"
    __table_args__ = (Index("ix_reservations_expires_at", "expires_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key_id: Mapped[int] = mapped_column(Integer())
    request_id: Mapped[str] = mapped_column(String(REQUEST_ID_MAX_LENGTH))
    amount_nanos: Mapped[int] = mapped_column(BigInteger())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class LedgerEntry(Base):
    """One row per admitted request, written once (unique request id) when it ends."""

    __tablename__ = "usage_ledger"
    __table_args__ = (
        Index("ix_usage_ledger_created_at", "created_at"),
        Index("ix_usage_ledger_key_id_created_at", "key_id", "created_at"),
    )

    # BIGINT on PostgreSQL; SQLite only auto-increments a column declared INTEGER.
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(REQUEST_ID_MAX_LENGTH), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    key_id: Mapped[int | None] = mapped_column(Integer())
    key_name: Mapped[str] = mapped_column(String(NAME_MAX_LENGTH))
    model: Mapped[str] = mapped_column(String(100))
    channel: Mapped[str | None] = mapped_column(String(100))
    streamed: Mapped[bool] = mapped_column(Boolean(), default=False)
    # HTTP status the client got, and how the call ended: ok | no_image | error | cancelled.
    status: Mapped[int] = mapped_column(Integer())
    outcome: Mapped[str] = mapped_column(String(16))
    finish_reason: Mapped[str | None] = mapped_column(String(48))
    attempts: Mapped[int] = mapped_column(Integer(), default=0)
    images: Mapped[int] = mapped_column(Integer(), default=0)
    prompt_tokens: Mapped[int] = mapped_column(Integer(), default=0)
    output_tokens: Mapped[int] = mapped_column(Integer(), default=0)
    image_tokens: Mapped[int] = mapped_column(Integer(), default=0)
    thoughts_tokens: Mapped[int] = mapped_column(Integer(), default=0)
    cost_nanos: Mapped[int] = mapped_column(BigInteger(), default=0)
    latency_ms: Mapped[int] = mapped_column(Integer(), default=0)
    client_ip: Mapped[str | None] = mapped_column(String(64))
