"""API-key authentication: the four ways clients send a key (protocol reference §2)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request

from bananagate.protocol.errors import ERROR_INFO_TYPE, ApiError


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the gateway key that authenticated the request."""

    key_id: int
    key_name: str


KeyLookup = Callable[[str], Awaitable[Principal | None]]

MISSING_KEY_MESSAGE = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)
INVALID_KEY_MESSAGE = "API key not valid. Please pass a valid API key."


def extract_key(request: Request) -> str | None:
    """The key from `x-goog-api-key`, `Authorization` (raw `sk-...` or `Bearer sk-...`) or `?key=`."""
    header = request.headers.get("x-goog-api-key")
    if header and header.strip():
        return header.strip()
    auth = request.headers.get("authorization")
    if auth and auth.strip():
        scheme, _, rest = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and rest.strip():
            return rest.strip()
        return auth.strip()
    query = request.query_params.get("key")
    if query and query.strip():
        return query.strip()
    return None


def missing_key_error() -> ApiError:
    return ApiError(
        401,
        MISSING_KEY_MESSAGE,
        "UNAUTHENTICATED",
        [{"@type": ERROR_INFO_TYPE, "reason": "CREDENTIALS_MISSING", "domain": "bananagate"}],
    )


def invalid_key_error() -> ApiError:
    return ApiError(
        401,
        INVALID_KEY_MESSAGE,
        "UNAUTHENTICATED",
        [{"@type": ERROR_INFO_TYPE, "reason": "API_KEY_INVALID", "domain": "bananagate"}],
    )


class Authenticator:
    """Resolves a request to a Principal or raises 401; remembers when each key was last used."""

    def __init__(
        self,
        lookup: KeyLookup,
        touch: Callable[[int], Awaitable[None]] | None = None,
        touch_interval: float = 30.0,
    ) -> None:
        self._lookup = lookup
        self._touch = touch
        self._touch_interval = touch_interval
        self._last_touch: dict[int, float] = {}

    async def authenticate(self, request: Request) -> Principal:
        secret = extract_key(request)
        if secret is None:
            raise missing_key_error()
        principal = await self._lookup(secret)
        if principal is None:
            raise invalid_key_error()
        request.scope.setdefault("state", {})["key_name"] = principal.key_name
        await self._maybe_touch(principal.key_id)
        return principal

    async def _maybe_touch(self, key_id: int) -> None:
        # `last used` is informational: write it at most once per interval per key, not per request.
        if self._touch is None:
            return
        now = time.monotonic()
        last = self._last_touch.get(key_id)
        if last is not None and now - last < self._touch_interval:
            return
        self._last_touch[key_id] = now
        await self._touch(key_id)
