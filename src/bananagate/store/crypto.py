"""Encryption at rest for upstream keys and per-job webhook secrets (AES-128-CBC + HMAC-SHA256,
via Fernet).

The secret is `BANANAGATE_SECRET_KEY` when set (any string; a 32-byte key is derived from it with
HKDF), else a random key kept in `<data dir>/secret.key` (mode 0600), created on first use. Keep
that file (or the variable) with the database: without it the stored keys cannot be read.
"""

from __future__ import annotations

import base64
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

from bananagate.secretfile import read_or_create
from bananagate.store.errors import StoreError

SECRET_FILENAME = "secret.key"
TOKEN_PREFIX = "fernet1:"
_HKDF_INFO = b"bananagate upstream channel keys v1"


class SecretKeyMismatch(StoreError):
    """Stored keys cannot be decrypted with the secret at hand."""


class SecretKeyMissing(StoreError):
    """There is no secret: neither BANANAGATE_SECRET_KEY nor a key file."""


def _derive(secret: str) -> bytes:
    # Imported on first use: `cryptography` costs ~7 MB of RSS, and a gateway whose channels
    # come from its config file (or the emulator) never opens a sealed key.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(secret.encode())
    return base64.urlsafe_b64encode(raw)


class KeyCipher:
    """Seals a list of upstream keys into one opaque string and opens it again."""

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("empty secret")
        from cryptography.fernet import Fernet

        self._fernet: Fernet = Fernet(_derive(secret))

    @classmethod
    def load(cls, secret_key: str | None, data_dir: Path, *, create: bool = True) -> KeyCipher:
        """The cipher for this installation (see module docstring)."""
        if secret_key:
            return cls(secret_key)
        path = data_dir / SECRET_FILENAME
        if not path.exists() and not create:
            raise SecretKeyMissing(
                f"no secret to decrypt channel keys: set BANANAGATE_SECRET_KEY or restore {path}"
            )
        return cls(read_or_create(path, secrets.token_urlsafe(32)))

    def seal(self, keys: list[str]) -> str:
        return TOKEN_PREFIX + self._fernet.encrypt(orjson.dumps(keys)).decode("ascii")

    def open(self, token: str) -> list[str]:
        from cryptography.fernet import InvalidToken

        if not token.startswith(TOKEN_PREFIX):
            raise SecretKeyMismatch("stored keys are in an unknown format")
        try:
            data = orjson.loads(self._fernet.decrypt(token[len(TOKEN_PREFIX) :].encode("ascii")))
        except InvalidToken:
            raise SecretKeyMismatch(
                "stored upstream keys cannot be decrypted: BANANAGATE_SECRET_KEY (or secret.key) "
                "differs from the one they were saved with"
            ) from None
        if not isinstance(data, list) or not all(isinstance(k, str) for k in data):
            raise SecretKeyMismatch("stored keys are malformed")
        return list(data)

    def seal_secret(self, secret: str) -> str:
        """One secret (a job's webhook secret) sealed for the database."""
        return self.seal([secret])

    def open_secret(self, stored: str) -> str:
        """A secret from `seal_secret`. A value without the token prefix is returned as it is:
        webhook secrets stored before they were sealed are still in plain text."""
        if not stored.startswith(TOKEN_PREFIX):
            return stored
        try:
            opened = self.open(stored)
        except SecretKeyMismatch:
            raise SecretKeyMismatch(
                "a stored webhook secret cannot be decrypted: BANANAGATE_SECRET_KEY (or secret.key) "
                "differs from the one it was sealed with"
            ) from None
        if len(opened) != 1:
            raise SecretKeyMismatch("a stored secret is malformed")
        return opened[0]
