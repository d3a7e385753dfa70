"""The key made on first start, so a fresh gateway is usable without running `keys create`."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from bananagate.store.errors import KeyNameTaken
from bananagate.store.store import Store

DEFAULT_KEY_NAME = "default"
DEFAULT_KEY_FILENAME = "default.key"


def write_secret_file(path: Path, secret: str) -> None:
    """Write `secret` and a newline to `path`, readable by its owner only (mode 0600).

    The file is created 0600 under a temporary name and renamed over `path`, so it is never
    readable by others, not even briefly, nor seen half-written.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(secret + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def ensure_default_key(store: Store, data_dir: Path) -> str | None:
    """Create the `default` key if the store has no keys at all (revoked ones count).

    Its secret is written to `<data_dir>/default.key` (mode 0600) and returned; when keys
    already exist (or another process just made the default key), return None.
    """
    if store.keys.count_keys() > 0:
        return None
    try:
        _record, secret = store.keys.create_key(DEFAULT_KEY_NAME)
    except KeyNameTaken:
        return None
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        write_secret_file(data_dir / DEFAULT_KEY_FILENAME, secret)
    except BaseException:
        # Nobody could ever learn this secret: remove the key so that the next start retries.
        store.keys.delete_key(DEFAULT_KEY_NAME)
        raise
    return secret
