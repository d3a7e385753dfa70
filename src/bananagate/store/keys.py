"""API keys: creation, authentication, listing and revocation.

Secrets look like `sk-` followed by 48 URL-safe characters. Only their SHA-256 is stored, with
a short prefix for display; the secret itself is returned once, by `create_key`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from bananagate.store.errors import InvalidKeyName, KeyNameTaken
from bananagate.store.schema import NAME_MAX_LENGTH, ApiKey

SECRET_PREFIX = "sk-"
# Characters of the secret kept in clear for display: "sk-" and 7 random characters.
DISPLAY_PREFIX_LENGTH = 10
# Anything longer cannot be one of our keys; refuse it before hashing.
MAX_SECRET_LENGTH = 256

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


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """An API key as stored, without its secret. Timestamps are timezone-aware UTC."""

    id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @property
    def status(self) -> str:
        """`"active"` or `"revoked"`."""
        return "active" if self.active else "revoked"

    @classmethod
    def from_row(cls, row: ApiKey) -> ApiKeyRecord:
        return cls(
            id=row.id,
            name=row.name,
            prefix=row.prefix,
            created_at=row.created_at,
            last_used_at=row.last_used_at,
            revoked_at=row.revoked_at,
        )


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
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def _session(self) -> Session:
        return self._sessions()

    def create_key(self, name: str, *, now: datetime | None = None) -> tuple[ApiKeyRecord, str]:
        """Create a key named `name`; return its record and its secret (shown only this once).

        Raises `InvalidKeyName` for a bad name and `KeyNameTaken` if the name is in use,
        including by a revoked key.
        """
        validate_key_name(name)
        secret = generate_secret()
        row = ApiKey(
            name=name,
            prefix=secret[:DISPLAY_PREFIX_LENGTH],
            secret_hash=hash_secret(secret),
            created_at=_utc(now),
        )
        try:
            with self._session() as session, session.begin():
                session.add(row)
        except IntegrityError as exc:
            # The name is the only unique column a caller controls; a duplicate secret hash
            # would take a 288-bit collision.
            raise KeyNameTaken(name) from exc
        return ApiKeyRecord.from_row(row), secret

    def authenticate(self, secret: str) -> ApiKeyRecord | None:
        """The active key whose secret is `secret`, or None (unknown, malformed or revoked)."""
        if not isinstance(secret, str) or not secret or len(secret) > MAX_SECRET_LENGTH:
            return None
        digest = hash_secret(secret)
        with self._session() as session:
            row = session.scalars(select(ApiKey).where(ApiKey.secret_hash == digest)).one_or_none()
            if row is None or not hmac.compare_digest(row.secret_hash, digest):
                return None
            if row.revoked_at is not None:
                return None
            return ApiKeyRecord.from_row(row)

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
        with self._session() as session, session.begin():
            result = session.execute(
                update(ApiKey)
                .where(ApiKey.name == name)
                .where(ApiKey.revoked_at.is_(None))
                .values(revoked_at=_utc(now))
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def delete_key(self, name: str) -> bool:
        """Remove the key named `name` altogether (freeing its name). True if it existed."""
        with self._session() as session, session.begin():
            result = session.execute(delete(ApiKey).where(ApiKey.name == name))
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def count_keys(self, include_revoked: bool = True) -> int:
        """How many keys exist (by default counting revoked ones too)."""
        query = select(func.count()).select_from(ApiKey)
        if not include_revoked:
            query = query.where(ApiKey.revoked_at.is_(None))
        with self._session() as session:
            return int(session.scalar(query) or 0)
