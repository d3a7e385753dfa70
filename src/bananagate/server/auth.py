"""API-key authentication: the four ways clients send a key (protocol reference §2), then the
key's own door checks (expiry, client address allow-list)."""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache

from starlette.requests import Request

from bananagate.protocol.errors import ERROR_INFO_TYPE, ApiError, resource_exhausted
from bananagate.store.keys import KeyLimits

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the gateway key that authenticated the request, with its limits."""

    key_id: int
    key_name: str
    limits: KeyLimits = field(default_factory=KeyLimits)
    client_ip: str | None = None


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


def expired_key_error() -> ApiError:
    return ApiError(
        401,
        "API key expired. Please renew the API key.",
        "UNAUTHENTICATED",
        [{"@type": ERROR_INFO_TYPE, "reason": "API_KEY_EXPIRED", "domain": "bananagate"}],
    )


def address_denied_error(ip: str | None) -> ApiError:
    return ApiError(
        403,
        f"The client address {ip or '(unknown)'} is not allowed to use this API key.",
        "PERMISSION_DENIED",
        [{"@type": ERROR_INFO_TYPE, "reason": "API_KEY_IP_ADDRESS_BLOCKED", "domain": "bananagate"}],
    )


@lru_cache(maxsize=1024)
def _networks(blocks: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(b, strict=False) for b in blocks)


def address_allowed(ip: str | None, blocks: tuple[str, ...]) -> bool:
    """True when there is no allow-list or `ip` is inside one of its blocks."""
    if not blocks:
        return True
    if ip is None:
        return False
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address.version == net.version and address in net for net in _networks(blocks))


def check_key(principal: Principal, now: datetime | None = None) -> None:
    """Refuse an expired key (401) or a client outside the key's allow-list (403)."""
    limits = principal.limits
    if limits.expires_at is not None and limits.expires_at <= (now or datetime.now(UTC)):
        raise expired_key_error()
    if not address_allowed(principal.client_ip, limits.allow_cidrs):
        raise address_denied_error(principal.client_ip)


class AuthFailureLimiter:
    """Wrong credentials per client address: past `per_minute` failures within 60 s, the address
    is refused (429) until the oldest failure is a minute old.

    Guessing keys is hopeless (they carry 190+ random bits); what this stops is a client hammering
    the key store and the logs with bad keys. A refused address is refused *before* its key is
    looked at, even a valid one: answering a right guess differently from a wrong one would make
    the limit worthless. Successes are never counted, so a client that authenticates correctly is
    never affected by its own traffic. Kept in memory, per process; at most `max_addresses`
    addresses are tracked (the least recently failing are forgotten first), so a flood of
    spoofed addresses cannot grow it without bound.
    """

    WINDOW = 60.0

    def __init__(
        self, per_minute: int, *, max_addresses: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.per_minute = per_minute
        self.max_addresses = max_addresses
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, address: str, now: float) -> deque[float] | None:
        times = self._failures.get(address)
        if times is None:
            return None
        while times and times[0] <= now - self.WINDOW:
            times.popleft()
        if not times:
            del self._failures[address]
            return None
        return times

    def retry_after(self, address: str | None) -> float | None:
        """Seconds until `address` may try again, or None when it is not refused."""
        if self.per_minute <= 0 or address is None:
            return None
        now = self._clock()
        times = self._recent(address, now)
        if times is None or len(times) < self.per_minute:
            return None
        return max(times[-self.per_minute] + self.WINDOW - now, 0.001)

    def failed(self, address: str | None) -> None:
        if self.per_minute <= 0 or address is None:
            return
        now = self._clock()
        times = self._recent(address, now) or deque(maxlen=self.per_minute)
        times.append(now)
        self._failures[address] = times
        self._failures.move_to_end(address)
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)

    def check(self, address: str | None) -> None:
        """Raise the 429 when `address` has failed too often."""
        wait = self.retry_after(address)
        if wait is not None:
            raise too_many_failures(math.ceil(wait))


def too_many_failures(retry_after: float) -> ApiError:
    error = resource_exhausted(
        "Too many requests with an invalid API key from this address; try again later.", retry_after
    )
    error.details.append(
        {"@type": ERROR_INFO_TYPE, "reason": "AUTH_FAILURES_EXCEEDED", "domain": "bananagate"}
    )
    return error


class Authenticator:
    """Resolves a request to a Principal or raises 401; remembers when each key was last used."""

    def __init__(
        self,
        lookup: KeyLookup,
        touch: Callable[[int], Awaitable[None]] | None = None,
        touch_interval: float = 30.0,
        failures: AuthFailureLimiter | None = None,
    ) -> None:
        self._lookup = lookup
        self._touch = touch
        self._touch_interval = touch_interval
        self._last_touch: dict[int, float] = {}
        self.failures = failures or AuthFailureLimiter(0)

    async def authenticate(self, request: Request) -> Principal:
        # The peer address as uvicorn gives it (it applies X-Forwarded-For from trusted proxies).
        client_ip = request.client.host if request.client else None
        self.failures.check(client_ip)
        secret = extract_key(request)
        if secret is None:
            raise missing_key_error()  # not counted: a forgotten key is not a guess
        principal = await self._lookup(secret)
        if principal is None:
            self.failures.failed(client_ip)
            raise invalid_key_error()
        principal = dataclasses.replace(principal, client_ip=client_ip)
        request.scope.setdefault("state", {})["key_name"] = principal.key_name
        check_key(principal)
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
