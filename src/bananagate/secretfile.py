"""Secrets the gateway generates for itself and keeps in its data dir (admin key, signing keys,
webhook secret, the key that encrypts upstream keys): one way to make them, safe under races."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from pathlib import Path


def read_or_create(path: Path, make: str) -> str:
    """The secret stored at `path`; when there is none, store `make` there first (mode 0600).

    Written under a temporary name, fsynced, then hard-linked into place: the link never replaces
    an existing file, so processes starting at once all end up with the first one's secret, and
    the file is never readable by others, not even briefly.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(make + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return path.read_text(encoding="ascii").strip()


def derived_key(secret_key: str | None, context: bytes, path: Path) -> bytes:
    """A 32-byte key for `context`: derived from the configured secret, else kept in `path`."""
    if secret_key:
        return hmac.new(secret_key.encode(), context, hashlib.sha256).digest()
    return bytes.fromhex(read_or_create(path, secrets.token_hex(32)))
