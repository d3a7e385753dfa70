"""`Store`: the gateway's database, opened from a SQLAlchemy URL."""

from __future__ import annotations

from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Self

from sqlalchemy import Engine
from sqlalchemy.engine import URL

from bananagate.store.affinity import AffinityRepository
from bananagate.store.channels import ChannelRepository
from bananagate.store.db import create_store_engine, upgrade_schema
from bananagate.store.gallery import GalleryRepository
from bananagate.store.idempotency import IdempotencyRepository
from bananagate.store.jobs_repo import JobRepository
from bananagate.store.keys import ApiKeyRecord, KeyRepository
from bananagate.store.ledger import LedgerRepository
from bananagate.store.reservations import ReservationRepository

if TYPE_CHECKING:
    from bananagate.settings import Settings


class Store:
    """The database: an engine plus one repository per kind of record.

    Open it with `Store.open(url)` (or `Store.from_settings(settings)`), which migrates the
    schema to the newest revision; `close()` it when done (it is also a context manager).
    All methods are synchronous and thread-safe; async code should call them via a thread.

    The API-key methods below are shorthands for the same methods on `store.keys`.
    """

    def __init__(self, engine: Engine) -> None:
        """Wrap an engine whose schema is already current; use `Store.open` instead."""
        self._engine = engine
        self.keys = KeyRepository(engine)
        self.reservations = ReservationRepository(engine)
        self.ledger = LedgerRepository(engine)
        self.channels = ChannelRepository(engine)
        self.jobs = JobRepository(engine)  # asynchronous jobs and batches (server/jobs.py)
        # Images kept for the web console; its directory is configured by the server.
        self.gallery = GalleryRepository(engine)
        # Request guarantees (server/idempotency.py, server/affinity.py).
        self.idempotency = IdempotencyRepository(engine)
        self.affinity = AffinityRepository(engine)

    @classmethod
    def open(cls, url: str | URL, *, migrate: bool = True) -> Self:
        """Connect to `url` and bring its schema up to date.

        SQLite files are created (with their directory) if missing. Raises `StoreUnavailable`
        when the database cannot be reached or has no driver, `SchemaTooNew` when it was
        migrated by a newer bananagate.
        """
        engine = create_store_engine(url)
        try:
            if migrate:
                upgrade_schema(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """Open the database `settings` point at (SQLite in the data dir unless configured)."""
        if not settings.database_url:
            settings.ensure_data_dir()
        return cls.open(settings.resolved_database_url())

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def url(self) -> URL:
        return self._engine.url

    # --- API keys (see KeyRepository for details) ---

    def create_key(self, name: str) -> tuple[ApiKeyRecord, str]:
        """Create a key; return its record and its secret (shown once). See `KeyRepository`."""
        return self.keys.create_key(name)

    def authenticate(self, secret: str) -> ApiKeyRecord | None:
        """The active key with this secret, or None."""
        return self.keys.authenticate(secret)

    def touch(self, key_id: int, when: datetime | None = None) -> None:
        """Set the key's `last_used_at` to `when` (default now), never moving it backwards."""
        self.keys.touch(key_id, when)

    def list_keys(self, include_revoked: bool = False) -> list[ApiKeyRecord]:
        """Keys in creation order; revoked ones only if `include_revoked`."""
        return self.keys.list_keys(include_revoked)

    def get_key(self, name: str) -> ApiKeyRecord | None:
        """The key named `name` (revoked or not), or None."""
        return self.keys.get_key(name)

    def revoke_key(self, name: str) -> bool:
        """Revoke a key; True if this call revoked it, False if missing or already revoked."""
        return self.keys.revoke_key(name)

    def count_keys(self, include_revoked: bool = True) -> int:
        """How many keys exist (by default counting revoked ones too)."""
        return self.keys.count_keys(include_revoked)

    def close(self) -> None:
        """Close all pooled connections (and the gallery's open segment). The store must not be
        used afterwards."""
        self.gallery.close()
        self.ledger.close()
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self._engine.url!r})"
