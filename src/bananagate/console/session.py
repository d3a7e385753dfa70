"""Console sign-in: a signed session cookie, CSRF tokens and the same-origin check.

The session is a stateless cookie, `<payload>.<HMAC-SHA256>`, HttpOnly, SameSite=Strict, path
`/console`. Its payload holds a CSRF token, when it was issued and, once signed in, a fingerprint
of the admin key: changing the admin key (or the secret) signs every session out. Before
sign-in the cookie is an anonymous session that only carries the CSRF token for the sign-in form.

The signing key is derived from `BANANAGATE_SECRET_KEY` when set (so several gateways accept
each other's sessions); otherwise a random key is generated once into `<data dir>/console.key`,
mode 0600.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import orjson
from starlette.requests import Request
from starlette.responses import Response

from bananagate.secretfile import derived_key

COOKIE_NAME = "bananagate_console"
COOKIE_PATH = "/console"
CSRF_FIELD = "csrf_token"
KEY_FILENAME = "console.key"
_KEY_CONTEXT = b"bananagate/console-session/v1"
# Anonymous sessions (only the sign-in form's CSRF token) last an hour.
ANONYMOUS_TTL = 3600


def session_key(data_dir: Path, secret_key: str | None) -> bytes:
    """The HMAC key for session cookies: derived from the configured secret, else a key file."""
    return derived_key(secret_key, _KEY_CONTEXT, data_dir / KEY_FILENAME)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Session:
    csrf: str
    issued: int
    # The admin-key fingerprint this session was signed in with; None before sign-in.
    admin: str | None = None

    @property
    def signed_in(self) -> bool:
        return self.admin is not None


class Sessions:
    """Issues and reads session cookies. `key` and `admin_key` are read lazily (files)."""

    def __init__(self, key: Callable[[], bytes], admin_key: Callable[[], str], ttl: int) -> None:
        self._key = key
        self._admin_key = admin_key
        self.ttl = ttl

    def _sign(self, payload: bytes) -> str:
        return _b64(hmac.new(self._key(), payload, hashlib.sha256).digest())

    def admin_fingerprint(self) -> str:
        digest = hashlib.sha256(self._admin_key().encode()).digest()
        return _b64(hmac.new(self._key(), b"admin\n" + digest, hashlib.sha256).digest()[:18])

    def is_admin_key(self, presented: str) -> bool:
        # Compared as digests, in constant time, so neither length nor content leaks.
        want = hashlib.sha256(self._admin_key().encode()).digest()
        return hmac.compare_digest(hashlib.sha256(presented.strip().encode()).digest(), want)

    def new(self, *, signed_in: bool) -> Session:
        admin = self.admin_fingerprint() if signed_in else None
        return Session(csrf=secrets.token_urlsafe(32), issued=int(time.time()), admin=admin)

    def encode(self, session: Session) -> str:
        payload = orjson.dumps({"c": session.csrf, "t": session.issued, "a": session.admin})
        return f"{_b64(payload)}.{self._sign(payload)}"

    def decode(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The cookie's session if its signature holds and it has not expired, else None."""
        if not cookie or len(cookie) > 1024 or "." not in cookie:
            return None
        body, _, signature = cookie.partition(".")
        try:
            payload = _unb64(body)
        except ValueError:
            return None
        if not hmac.compare_digest(self._sign(payload), signature):
            return None
        try:
            data = orjson.loads(payload)
            session = Session(csrf=str(data["c"]), issued=int(data["t"]), admin=data.get("a"))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
        ttl = self.ttl if session.signed_in else ANONYMOUS_TTL
        if session.issued + ttl < (time.time() if now is None else now):
            return None
        if session.admin is not None and not hmac.compare_digest(session.admin, self.admin_fingerprint()):
            return None  # signed in with an admin key that is no longer the admin key
        return session

    def read(self, request: Request) -> Session | None:
        return self.decode(request.cookies.get(COOKIE_NAME))

    def attach(self, response: Response, request: Request, session: Session) -> None:
        response.set_cookie(
            COOKIE_NAME,
            self.encode(session),
            max_age=self.ttl if session.signed_in else ANONYMOUS_TTL,
            path=COOKIE_PATH,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )

    def clear(self, response: Response, request: Request) -> None:
        response.delete_cookie(
            COOKIE_NAME,
            path=COOKIE_PATH,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )


def csrf_ok(session: Session, presented: object) -> bool:
    return isinstance(presented, str) and hmac.compare_digest(session.csrf.encode(), presented.encode())


def _origin_of(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def same_origin(request: Request, public_url: str | None = None) -> bool:
    """True when the request says it comes from a page of this gateway.

    Browsers send `Origin` with every POST; `Referer` (kept for same-origin requests by our
    Referrer-Policy) is the fallback. A request with neither, or with `Origin: null`
    (sandboxed or privacy-stripped contexts), is refused: console actions are for browsers.
    """
    own = {f"{request.url.scheme}://{request.url.netloc}".lower()}
    if public_url and (public := _origin_of(public_url)) is not None:
        own.add(public)
    origin = request.headers.get("origin")
    if origin is not None:
        return origin.strip().lower() in own
    referer = request.headers.get("referer")
    return referer is not None and _origin_of(referer) in own


class LoginThrottle:
    """Slows guessing at the sign-in form: after `limit` failures from one address within
    `window` seconds, that address waits out the window (per process)."""

    def __init__(self, limit: int = 10, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[str, list[float]] = {}

    def _recent(self, address: str, now: float) -> list[float]:
        recent = [t for t in self._failures.get(address, []) if now - t < self.window]
        if recent:
            self._failures[address] = recent
        else:
            self._failures.pop(address, None)
        return recent

    def blocked(self, address: str, now: float | None = None) -> bool:
        return len(self._recent(address, time.monotonic() if now is None else now)) >= self.limit

    def failed(self, address: str, now: float | None = None) -> None:
        when = time.monotonic() if now is None else now
        self._failures[address] = [*self._recent(address, when), when]
        if len(self._failures) > 10_000:  # bounded memory under a spray of addresses
            self._failures.clear()

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)
