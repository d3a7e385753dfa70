"""API keys: creation, authentication, listing, limits, rotation and revocation.

Secrets look like `sk-` followed by 48 URL-safe characters. Only their SHA-256 is stored, with
a short prefix for display; the secret itself is returned once, by `create_key` / `rotate_key`.
Each key may carry limits (`KeyLimits`); money columns are integer nano-dollars.

`authenticate(secret, cache_seconds=...)` also remembers the key it found in this process for
that long, and `cached(secret)` answers from there without the database (the gateway's hot path;
misses are never remembered). Every change of a key through this repository (update, rotate,
revoke, delete: the admin API, the console and the CLI all go through it) forgets them all at
once; a change made by another process is seen once the entry is `cache_seconds` old.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, Row, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from bananagate.store.errors import InvalidKeyName, KeyNameTaken
from bananagate.store.schema import LABEL_MAX_LENGTH, NAME_MAX_LENGTH, ApiKey

SECRET_PREFIX = "sk-"
# Characters of the secret kept in clear for display: "sk-" and 7 random characters.
DISPLAY_PREFIX_LENGTH = 10
# Anything longer cannot be one of our keys; refuse it before hashing.
MAX_SECRET_LENGTH = 256
# Most keys remembered by `authenticate(..., cache_seconds=...)`; past it stale ones are dropped.
MAX_CACHED_KEYS = 10_000

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:+-]*")
NAME_RULES = (
    f"key names are 1-{NAME_MAX_LENGTH} characters: letters, digits and . _ @ : + -, "
    "starting with a letter or digit"
)


def generate_secret() -> str:
    """A new API key secret: `sk-` and 48 URL-safe random characters (288 bits)."""
    return SECRET_PREFIX + secrets.token_urlsafe(36)


def hash_secret(secret: str) -> str:
    """The lower-case hex SHA-256 of a secret, as stored in `api_keys.secret_hash`."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def validate_key_name(name: str) -> str:
    """Return `name` if it is a valid key name, else raise `InvalidKeyName`."""
    if not isinstance(name, str) or len(name) > NAME_MAX_LENGTH or not _NAME_RE.fullmatch(name):
        raise InvalidKeyName(f"invalid key name {name!r}: {NAME_RULES}")
    return name


def _split(text: str | None) -> tuple[str, ...]:
    return tuple(item for item in (text or "").split(",") if item)


def _join(items: Iterable[str] | None) -> str | None:
    values = [item.strip() for item in items or () if item.strip()]
    return ",".join(values) if values else None


def validate_cidrs(blocks: Iterable[str]) -> tuple[str, ...]:
    """Normalized CIDR blocks (`10.0.0.0/8`, `::1/128`, a bare address); ValueError when invalid."""
    return tuple(str(ipaddress.ip_network(block.strip(), strict=False)) for block in blocks if block.strip())


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """What a key may do. None / empty means unlimited."""

    models: tuple[str, ...] = ()
    budget_nanos: int | None = None
    rpm: int | None = None
    images_per_day: int | None = None
    max_concurrent: int | None = None
    expires_at: datetime | None = None
    allow_cidrs: tuple[str, ...] = ()

    @property
    def limited_rate(self) -> bool:
        """True when a rate/concurrency/daily-image limit needs the limiter at all."""
        return bool(self.rpm or self.images_per_day or self.max_concurrent)

    def to_columns(self) -> dict[str, Any]:
        return {
            "allowed_models": _join(self.models),
            "budget_nanos": self.budget_nanos,
            "rpm": self.rpm,
            "images_per_day": self.images_per_day,
            "max_concurrent": self.max_concurrent,
            "expires_at": None if self.expires_at is None else _utc(self.expires_at),
            "allow_cidrs": _join(validate_cidrs(self.allow_cidrs)),
        }


# Fields `update_key` can change; a value of None clears the limit.
UPDATABLE = frozenset(
    {
        "label",
        "models",
        "budget_nanos",
        "rpm",
        "images_per_day",
        "max_concurrent",
        "expires_at",
        "allow_cidrs",
    }
)


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """An API key as stored, without its secret. Timestamps are timezone-aware UTC."""

    id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    label: str | None = None
    limits: KeyLimits = field(default_factory=KeyLimits)
    spent_nanos: int = 0
    reserved_nanos: int = 0

    @property
    def expired(self) -> bool:
        expires = self.limits.expires_at
        return expires is not None and expires <= datetime.now(UTC)

    @property
    def remaining_nanos(self) -> int | None:
        """What the budget still allows (None: no budget)."""
        budget = self.limits.budget_nanos
        return None if budget is None else max(budget - self.spent_nanos - self.reserved_nanos, 0)

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @property
    def status(self) -> str:
        """`"active"`, `"expired"` or `"revoked"`."""
        if not self.active:
            return "revoked"
        return "expired" if self.expired else "active"

    @classmethod
    def from_row(cls, row: ApiKey | Row[Any]) -> ApiKeyRecord:
        return cls(
            id=row.id,
            name=row.name,
            prefix=row.prefix,
            created_at=row.created_at,
            last_used_at=row.last_used_at,
            revoked_at=row.revoked_at,
            label=row.label,
            limits=KeyLimits(
                models=_split(row.allowed_models),
                budget_nanos=row.budget_nanos,
                rpm=row.rpm,
                images_per_day=row.images_per_day,
                max_concurrent=row.max_concurrent,
                expires_at=row.expires_at,
                allow_cidrs=_split(row.allow_cidrs),
            ),
            spent_nanos=row.spent_nanos or 0,
            reserved_nanos=row.reserved_nanos or 0,
        )


def _check_limits(columns: dict[str, Any]) -> dict[str, Any]:
    for name in ("budget_nanos", "rpm", "images_per_day", "max_concurrent"):
        value = columns.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise ValueError(f"{name} must be a non-negative integer")
    label = columns.get("label")
    if label is not None and len(label) > LABEL_MAX_LENGTH:
        raise ValueError(f"label is longer than {LABEL_MAX_LENGTH} characters")
    return columns


def _utc(when: datetime | None) -> datetime:
    """`when` as aware UTC (naive values are taken as UTC); now if None."""
    if when is None:
        return datetime.now(UTC)
    if when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


class KeyRepository:
    """Queries on the `api_keys` table.

    Synchronous and thread-safe: every method uses its own short session, and returns plain
    frozen `ApiKeyRecord`s, never ORM objects.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        # secret hash -> (monotonic time it goes stale, record); see the module docstring.
        self._cache: dict[str, tuple[float, ApiKeyRecord]] = {}
        # Bumped by every invalidation: a lookup that read the database before it does not
        # put what it read (maybe the key before its revocation) into the cache.
        self._generation = 0
        self._cache_lock = threading.Lock()

    def _session(self) -> Session:
        return self._sessions()

    def invalidate(self) -> None:
        """Forget every remembered key (called after each change of a key, once committed)."""
        with self._cache_lock:
            self._generation += 1
            self._cache.clear()

    def cached(self, secret: str) -> ApiKeyRecord | None:
        """The key `authenticate(secret, cache_seconds=...)` found less than that long ago, or
        None (look it up). No I/O: safe to call on an event loop."""
        if not self._cache or not isinstance(secret, str) or len(secret) > MAX_SECRET_LENGTH:
            return None
        entry = self._cache.get(hash_secret(secret))
        if entry is None or entry[0] <= time.monotonic():
            return None
        return entry[1]

    def _remember(self, digest: str, record: ApiKeyRecord, stale_at: float, generation: int) -> None:
        with self._cache_lock:
            if generation != self._generation:
                return  # a key changed while this one was read: what was read may be outdated
            if len(self._cache) >= MAX_CACHED_KEYS:
                now = time.monotonic()
                for stale in [d for d, (at, _) in self._cache.items() if at <= now]:
                    del self._cache[stale]
                if len(self._cache) >= MAX_CACHED_KEYS:
                    self._cache.clear()
            self._cache[digest] = (stale_at, record)

    def create_key(
        self,
        name: str,
        *,
        now: datetime | None = None,
        limits: KeyLimits | None = None,
        label: str | None = None,
    ) -> tuple[ApiKeyRecord, str]:
        """Create a key named `name`; return its record and its secret (shown only this once).

        Raises `InvalidKeyName` for a bad name, `KeyNameTaken` if the name is in use,
        including by a revoked key, and ValueError for invalid limits.
        """
        validate_key_name(name)
        columns = _check_limits((limits or KeyLimits()).to_columns())
        secret = generate_secret()
        row = ApiKey(
            name=name,
            prefix=secret[:DISPLAY_PREFIX_LENGTH],
            secret_hash=hash_secret(secret),
            created_at=_utc(now),
            label=label,
            spent_nanos=0,
            reserved_nanos=0,
            **columns,
        )
        try:
            with self._session() as session, session.begin():
                session.add(row)
        except IntegrityError as exc:
            # The name is the only unique column a caller controls; a duplicate secret hash
            # would take a 288-bit collision.
            raise KeyNameTaken(name) from exc
        return ApiKeyRecord.from_row(row), secret

    def authenticate(self, secret: str, *, cache_seconds: float = 0.0) -> ApiKeyRecord | None:
        """The active key whose secret is `secret`, or None (unknown, malformed or revoked).

        With `cache_seconds`, a key found is remembered for `cached` that long (counted from
        before the read, so a change committed before it is never served longer than that).
        """
        if not isinstance(secret, str) or not secret or len(secret) > MAX_SECRET_LENGTH:
            return None
        digest = hash_secret(secret)
        generation, started = self._generation, time.monotonic()
        # A Core select (no ORM session or object): this runs for every request not cached.
        query = select(ApiKey.__table__).where(ApiKey.secret_hash == digest)
        with self._engine.connect() as connection:
            row = connection.execute(query).one_or_none()
        if row is None or not hmac.compare_digest(row.secret_hash, digest):
            return None
        if row.revoked_at is not None:
            return None
        record = ApiKeyRecord.from_row(row)
        if cache_seconds > 0:
            self._remember(digest, record, started + cache_seconds, generation)
        return record

    def touch(self, key_id: int, when: datetime | None = None) -> None:
        """Record that key `key_id` was used at `when` (default: now).

        One UPDATE statement; `last_used_at` never moves backwards.
        """
        when = _utc(when)
        with self._session() as session, session.begin():
            session.execute(
                update(ApiKey)
                .where(ApiKey.id == key_id)
                .where(or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < when))
                .values(last_used_at=when)
            )

    def get_key_by_id(self, key_id: int) -> ApiKeyRecord | None:
        with self._session() as session:
            row = session.get(ApiKey, key_id)
            return None if row is None else ApiKeyRecord.from_row(row)

    def update_key(self, name: str, changes: Mapping[str, Any]) -> ApiKeyRecord | None:
        """Change limits / label of the key named `name` (see `UPDATABLE`; None clears one).

        Returns the updated record, or None when there is no such key. Spent money is kept:
        lowering a budget below what is spent just stops further calls.
        """
        unknown = set(changes) - UPDATABLE
        if unknown:
            raise ValueError(f"cannot update {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        for key, value in changes.items():
            if key == "models":
                values["allowed_models"] = _join(value)
            elif key == "allow_cidrs":
                values["allow_cidrs"] = _join(validate_cidrs(value or ()))
            elif key == "expires_at":
                values["expires_at"] = None if value is None else _utc(value)
            else:
                values[key] = value
        _check_limits(values)
        try:
            with self._session() as session, session.begin():
                if values:
                    session.execute(update(ApiKey).where(ApiKey.name == name).values(**values))
                row = session.scalars(select(ApiKey).where(ApiKey.name == name)).one_or_none()
                return None if row is None else ApiKeyRecord.from_row(row)
        finally:
            self.invalidate()

    def rotate_key(self, name: str) -> tuple[ApiKeyRecord, str] | None:
        """Give the key a new secret (the old one stops working at once); None if no such
        active key. Limits, spending and the ledger stay with the key."""
        secret = generate_secret()
        try:
            with self._session() as session, session.begin():
                result = session.execute(
                    update(ApiKey)
                    .where(ApiKey.name == name)
                    .where(ApiKey.revoked_at.is_(None))
                    .values(secret_hash=hash_secret(secret), prefix=secret[:DISPLAY_PREFIX_LENGTH])
                )
                if not result.rowcount:  # type: ignore[attr-defined]
                    return None
                row = session.scalars(select(ApiKey).where(ApiKey.name == name)).one()
                return ApiKeyRecord.from_row(row), secret
        finally:
            self.invalidate()

    def list_keys(self, include_revoked: bool = False) -> list[ApiKeyRecord]:
        """Keys in creation order; revoked ones only if `include_revoked`."""
        query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
        if not include_revoked:
            query = query.where(ApiKey.revoked_at.is_(None))
        with self._session() as session:
            return [ApiKeyRecord.from_row(row) for row in session.scalars(query)]

    def get_key(self, name: str) -> ApiKeyRecord | None:
        """The key named `name`, revoked or not, or None."""
        with self._session() as session:
            row = session.scalars(select(ApiKey).where(ApiKey.name == name)).one_or_none()
            return None if row is None else ApiKeyRecord.from_row(row)

    def revoke_key(self, name: str, *, now: datetime | None = None) -> bool:
        """Revoke the key named `name`. True if this call revoked it; False if there is no
        such key or it was already revoked (its first revocation time is kept)."""
        try:
            with self._session() as session, session.begin():
                result = session.execute(
                    update(ApiKey)
                    .where(ApiKey.name == name)
                    .where(ApiKey.revoked_at.is_(None))
                    .values(revoked_at=_utc(now))
                )
                return bool(result.rowcount)  # type: ignore[attr-defined]
        finally:
            self.invalidate()

    def delete_key(self, name: str) -> bool:
        """Remove the key named `name` altogether (freeing its name). True if it existed."""
        try:
            with self._session() as session, session.begin():
                result = session.execute(delete(ApiKey).where(ApiKey.name == name))
                return bool(result.rowcount)  # type: ignore[attr-defined]
        finally:
            self.invalidate()

    def count_keys(self, include_revoked: bool = True) -> int:
        """How many keys exist (by default counting revoked ones too)."""
        query = select(func.count()).select_from(ApiKey)
        if not include_revoked:
            query = query.where(ApiKey.revoked_at.is_(None))
        with self._session() as session:
            return int(session.scalar(query) or 0)
