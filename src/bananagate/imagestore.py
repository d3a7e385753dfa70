"""Generated images kept on local files, reachable through signed, expiring links.

`response_format=url` answers need somewhere to put the bytes. Each image is one file under
`<data dir>/images/`, named by 128 random bits (so a name is unguessable) plus an extension for
its type. A link carries an expiry time and an HMAC-SHA256 signature over name and expiry, so
it cannot be extended or pointed at another file; the route refuses any name that is not
exactly `<32 hex>.<ext>`, so no path ever leaves the directory. Files are deleted once every
link to them has expired (a sweep runs at most once a minute, on writes).

The signing key is derived from `BANANAGATE_SECRET_KEY` when set (so several gateways behind
one balancer accept each other's links); otherwise a random key is generated once into
`<data dir>/image-links.key`, mode 0600.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from bananagate.protocol.catalog import extension_for
from bananagate.secretfile import derived_key

KEY_FILENAME = "image-links.key"
_KEY_CONTEXT = b"bananagate/image-links/v1"
_NAME_RE = re.compile(r"[0-9a-f]{32}\.(png|jpg|webp|heic|heif)")
_MIME_BY_EXT = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".webp": "image/webp",
    ".heic": "image/heic",
    ".heif": "image/heif",
}
SWEEP_INTERVAL = 60.0
# Files outlive their links by this much, so a download that starts just before expiry finishes.
GRACE = 60.0


class LinkRefused(Exception):
    """A link that does not open a file; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class StoredImage:
    path: Path
    mime_type: str
    expires: int


def signing_key(data_dir: Path, secret_key: str | None) -> bytes:
    """The HMAC key for links: derived from the configured secret, else a generated key file."""
    return derived_key(secret_key, _KEY_CONTEXT, data_dir / KEY_FILENAME)


class ImageStore:
    """Write images, sign links to them, open them again given a valid link."""

    def __init__(self, root: Path, key: bytes, ttl: int) -> None:
        self.root = root
        self.key = key
        self.ttl = ttl
        self._last_sweep = 0.0
        root.mkdir(mode=0o700, parents=True, exist_ok=True)

    @classmethod
    def open(cls, data_dir: Path, secret_key: str | None, ttl: int) -> ImageStore:
        return cls(data_dir / "images", signing_key(data_dir, secret_key), ttl)

    def put(self, data: bytes, mime_type: str) -> str:
        """Store `data`; returns its name (`<32 hex>.<ext>`). Blocking: call from a thread."""
        now = time.time()
        if now - self._last_sweep > SWEEP_INTERVAL:
            self._last_sweep = now
            self.sweep(now)
        name = secrets.token_hex(16) + extension_for(mime_type)
        if _NAME_RE.fullmatch(name) is None:
            raise ValueError(f"cannot store images of type {mime_type!r}")
        tmp = self.root / f".{name}.tmp"
        with open(tmp, "xb") as handle:
            handle.write(data)
        os.replace(tmp, self.root / name)
        return name

    def link(self, name: str, now: float | None = None) -> str:
        """`<name>?exp=...&sig=...`: the path tail of a link valid for `ttl` seconds."""
        expires = int((time.time() if now is None else now) + self.ttl)
        return f"{name}?exp={expires}&sig={self._sign(name, expires)}"

    def open_link(self, name: str, exp: str | None, sig: str | None, now: float | None = None) -> StoredImage:
        """The file a link names, once its signature and expiry check out; raises LinkRefused."""
        if _NAME_RE.fullmatch(name) is None:
            raise LinkRefused(404, "No such image.")
        if not exp or not sig or not exp.isdigit() or len(exp) > 12:
            raise LinkRefused(403, "The image link is missing its exp or sig parameter.")
        expires = int(exp)
        # The signature is checked before the expiry, so a forged link learns nothing more.
        if not hmac.compare_digest(self._sign(name, expires), sig):
            raise LinkRefused(403, "The image link's signature is not valid.")
        if expires < (time.time() if now is None else now):
            raise LinkRefused(403, "The image link has expired.")
        path = self.root / name
        # The name pattern already keeps the path inside the directory; a symlink planted there
        # (by anything else on the host) must not lead out of it either.
        if path.is_symlink() or not path.is_file() or path.resolve().parent != self.root.resolve():
            raise LinkRefused(404, "The image no longer exists.")
        return StoredImage(path, _MIME_BY_EXT[path.suffix], expires)

    def sweep(self, now: float | None = None) -> int:
        """Delete images whose links have all expired; returns how many were deleted."""
        cutoff = (time.time() if now is None else now) - self.ttl - GRACE
        removed = 0
        for path in self.root.iterdir():
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
        return removed

    def _sign(self, name: str, expires: int) -> str:
        digest = hmac.new(self.key, f"{name}\n{expires}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
