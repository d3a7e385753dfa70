"""The store's exceptions: everything it raises on purpose is a `StoreError`."""

from __future__ import annotations


class StoreError(Exception):
    """Base class for errors raised by the store."""


class StoreUnavailable(StoreError):
    """The database cannot be reached, or its driver is not installed."""


class SchemaTooNew(StoreError):
    """The database was migrated by a newer bananagate than this one."""


class InvalidKeyName(StoreError, ValueError):
    """A key name that does not follow the naming rules."""


class KeyNameTaken(StoreError):
    """A key with this name already exists (revoked keys keep their names)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"an API key named {name!r} already exists")
        self.name = name
