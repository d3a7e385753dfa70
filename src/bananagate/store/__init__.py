"""The gateway's database: API keys (later also budgets and usage), via SQLAlchemy and Alembic.

Open it with `Store.open(url)`, which migrates the schema, then e.g.
`record, secret = store.create_key("ci")` and `store.authenticate(secret)`.
The server calls `ensure_default_key(store, data_dir)` on start-up.
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
