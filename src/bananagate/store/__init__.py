"""The gateway's database: API keys, upstream channels, budgets and usage (SQLAlchemy, Alembic).

Open it with `Store.open(url)`, which migrates the schema, then e.g.
`record, secret = store.create_key("ci")` and `store.authenticate(secret)`.
The server calls `ensure_default_key(store, data_dir)` on start-up.
"""

from __future__ import annotations

from bananagate.store.affinity import AffinityRepository
from bananagate.store.channels import ChannelNameTaken, ChannelRecord, ChannelRepository
from bananagate.store.crypto import KeyCipher, SecretKeyMismatch, SecretKeyMissing
from bananagate.store.default_key import DEFAULT_KEY_FILENAME, DEFAULT_KEY_NAME, ensure_default_key
from bananagate.store.errors import (
    InvalidKeyName,
    KeyNameTaken,
    SchemaTooNew,
    StoreError,
    StoreUnavailable,
)
from bananagate.store.gallery import GalleryEntry, GalleryRepository, NewImage
from bananagate.store.idempotency import AnswerFiles, Claim, IdempotencyRepository, KeptAnswer
from bananagate.store.jobs_records import BatchRecord, ClaimedJob, JobRecord, NewJob, Submission
from bananagate.store.jobs_repo import JobRepository
from bananagate.store.keys import ApiKeyRecord, KeyLimits, KeyRepository, generate_secret, hash_secret
from bananagate.store.ledger import LedgerRepository, LedgerRow, UsageSummary
from bananagate.store.reservations import Hold, ReservationRepository
from bananagate.store.store import Store

__all__ = [
    "DEFAULT_KEY_FILENAME",
    "DEFAULT_KEY_NAME",
    "AffinityRepository",
    "AnswerFiles",
    "ApiKeyRecord",
    "BatchRecord",
    "ChannelNameTaken",
    "ChannelRecord",
    "ChannelRepository",
    "Claim",
    "ClaimedJob",
    "GalleryEntry",
    "GalleryRepository",
    "Hold",
    "IdempotencyRepository",
    "InvalidKeyName",
    "JobRecord",
    "JobRepository",
    "KeptAnswer",
    "KeyCipher",
    "KeyLimits",
    "KeyNameTaken",
    "KeyRepository",
    "LedgerRepository",
    "LedgerRow",
    "NewImage",
    "NewJob",
    "ReservationRepository",
    "SchemaTooNew",
    "SecretKeyMismatch",
    "SecretKeyMissing",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "Submission",
    "UsageSummary",
    "ensure_default_key",
    "generate_secret",
    "hash_secret",
]
