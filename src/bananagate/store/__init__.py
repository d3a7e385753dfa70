"""The gateway's database: API keys (and later budgets and usage), via SQLAlchemy + Alembic.

    from bananagate.store import Store, ensure_default_key

    with Store.open("sqlite:////var/lib/bananagate/bananagate.db") as store:
        record, secret = store.keys.create_key("ci")
        assert store.keys.authenticate(secret) == record
"""

from __future__ import annotations

from bananagate.store.default_key import DEFAULT_KEY_FILENAME, DEFAULT_KEY_NAME, ensure_default_key
from bananagate.store.errors import (
    InvalidKeyName,
    KeyNameTaken,
    SchemaTooNew,
    StoreError,
    StoreUnavailable,
)
from bananagate.store.keys import ApiKeyRecord, KeyRepository, generate_secret, hash_secret
from bananagate.store.store import Store

__all__ = [
    "DEFAULT_KEY_FILENAME",
    "DEFAULT_KEY_NAME",
    "ApiKeyRecord",
    "InvalidKeyName",
    "KeyNameTaken",
    "KeyRepository",
    "SchemaTooNew",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "ensure_default_key",
    "generate_secret",
    "hash_secret",
]
