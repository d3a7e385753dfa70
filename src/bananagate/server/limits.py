"""Per-key rate limits: requests per minute, concurrent requests, images per UTC day.

One interface (`Limiter`), two backends:

* `MemoryLimiter`: in this process only (each `--workers` process counts on its own).
* `RedisLimiter`: shared by every gateway process; each check-and-take is one Lua script, so it
  is atomic however many processes race. If Redis stops answering, it falls back to the memory
  backend (limits become per process for that time) rather than refusing all traffic; the
  budget is unaffected, as it is held in the database.

Semantics, identical in both: rpm is a sliding 60 s window (never more than `rpm` admissions in
any 60 s); concurrency is a set of leases that expire unless their process renews them (so a
crashed process cannot hold slots forever); images per day are taken at admission (the images
the call asks for) and corrected when it ends (a call without an image gives its count back).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, cast

from bananagate.store.keys import KeyLimits

log = logging.getLogger("bananagate.limits")

WINDOW_SECONDS = 60.0
CONCURRENCY_RETRY_SECONDS = 1.0


class LimitExceeded(Exception):
    """A limit refuses the call. `retry_after` is set when waiting helps."""

    def __init__(self, reason: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Admission:
    """What one admitted call took, to give back (`cancel`) or finish (`finish`)."""

    key_id: int
    token: str  # unique per call: the rpm window member and the concurrency lease id
    day: str
    rpm: bool
    lease: bool
    images: int | None  # counted against today's images; None when the key has no daily limit
    backend: str
    # Requests left in the rpm window after this one, and seconds until its oldest leaves it
    # (None without an rpm limit): the answer's `x-ratelimit-*` headers.
    rpm_remaining: int | None = None
    rpm_reset: float | None = None


def utc_day(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y%m%d")


def seconds_to_midnight(now: float) -> float:
    moment = datetime.fromtimestamp(now, UTC)
    midnight = (moment + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max((midnight - moment).total_seconds(), 1.0)


def _rpm_message(limits: KeyLimits) -> str:
    return f"Quota exceeded: this key allows {limits.rpm} requests per minute."


def _concurrency_message(limits: KeyLimits) -> str:
    return f"Quota exceeded: this key allows {limits.max_concurrent} concurrent requests."


def _images_message(limits: KeyLimits) -> str:
    return f"Quota exceeded: this key allows {limits.images_per_day} images per day (UTC)."


class Limiter(Protocol):
    async def acquire(self, key_id: int, limits: KeyLimits, images: int) -> Admission:
        """Take one request (and `images`) or raise LimitExceeded, all or nothing."""
        ...

    async def finish(self, admission: Admission, images_used: int) -> None:
        """The call ended: free its concurrency slot and correct today's image count."""
        ...

    async def cancel(self, admission: Admission) -> None:
        """The call never ran (e.g. refused by the budget): give back everything it took."""
        ...

    async def heartbeat(self, lease_ttl: float) -> None:
        """Renew this process's live leases."""
        ...

    async def aclose(self) -> None: ...


def _image_delta(admission: Admission, images_used: int | None) -> int:
    """How today's image count changes when the call ends (None: it never ran)."""
    if admission.images is None:
        return 0
    return -admission.images if images_used is None else images_used - admission.images


class MemoryLimiter:
    """Limits kept in this process. Methods never await, so each is atomic on the event loop."""

    def __init__(self, clock: Any = time.time) -> None:
        self._clock = clock
        self._windows: dict[int, deque[tuple[float, str]]] = {}
        self._leases: dict[int, set[str]] = {}
        self._images: dict[tuple[int, str], int] = {}

    def take(self, key_id: int, limits: KeyLimits, images: int, backend: str = "memory") -> Admission:
        now = self._clock()
        token = uuid.uuid4().hex
        day = utc_day(now)
        window = self._windows.setdefault(key_id, deque())
        while window and window[0][0] <= now - WINDOW_SECONDS:
            window.popleft()
        if limits.rpm is not None and len(window) >= limits.rpm:
            wait = window[0][0] + WINDOW_SECONDS - now if window else WINDOW_SECONDS
            raise LimitExceeded("rpm", _rpm_message(limits), max(wait, 0.001))
        leases = self._leases.setdefault(key_id, set())
        if limits.max_concurrent is not None and len(leases) >= limits.max_concurrent:
            raise LimitExceeded("concurrency", _concurrency_message(limits), CONCURRENCY_RETRY_SECONDS)
        counted = images if limits.images_per_day is not None else None
        if limits.images_per_day is not None:
            used = self._images.get((key_id, day), 0)
            if used + images > limits.images_per_day:
                raise LimitExceeded("images_per_day", _images_message(limits), seconds_to_midnight(now))
        rpm_remaining = rpm_reset = None
        if limits.rpm is not None:
            window.append((now, token))
            rpm_remaining = limits.rpm - len(window)
            rpm_reset = window[0][0] + WINDOW_SECONDS - now
        if limits.max_concurrent is not None:
            leases.add(token)
        if counted is not None:
            self._drop_old_days(day)
            self._images[(key_id, day)] = self._images.get((key_id, day), 0) + counted
        return Admission(
            key_id,
            token,
            day,
            limits.rpm is not None,
            limits.max_concurrent is not None,
            counted,
            backend,
            rpm_remaining,
            rpm_reset,
        )

    def _drop_old_days(self, today: str) -> None:
        for key in [k for k in self._images if k[1] != today]:
            del self._images[key]

    def give_back(self, admission: Admission, images_used: int | None) -> None:
        """Free the lease; with images_used None also undo the rpm entry and all images."""
        self._leases.get(admission.key_id, set()).discard(admission.token)
        delta = _image_delta(admission, images_used)
        key = (admission.key_id, admission.day)
        if delta and key in self._images:
            self._images[key] = max(self._images[key] + delta, 0)
        if images_used is None and admission.rpm:
            window = self._windows.get(admission.key_id)
            if window:
                for entry in list(window):
                    if entry[1] == admission.token:
                        window.remove(entry)
                        break

    async def acquire(self, key_id: int, limits: KeyLimits, images: int) -> Admission:
        return self.take(key_id, limits, images)

    async def finish(self, admission: Admission, images_used: int) -> None:
        self.give_back(admission, images_used)

    async def cancel(self, admission: Admission) -> None:
        self.give_back(admission, None)

    async def heartbeat(self, lease_ttl: float) -> None:
        return None  # leases in memory die with their process

    async def aclose(self) -> None:
        return None


# KEYS: rpm window (zset), leases (zset), images today (string)
# ARGV: window_ms, rpm, max_concurrent, lease_ttl_ms, token, images_limit, images, images_ttl_s
# Returns {ok, reason, wait_ms, requests in the window, ms until its oldest leaves it}.
# Time comes from Redis itself, so gateways on hosts with skewed clocks agree.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local rpm = tonumber(ARGV[2])
local conc = tonumber(ARGV[3])
local img_limit = tonumber(ARGV[6])
local images = tonumber(ARGV[7])
if rpm >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  if redis.call('ZCARD', KEYS[1]) >= rpm then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    local wait = window
    if oldest[2] then wait = tonumber(oldest[2]) + window - now end
    return {0, 'rpm', wait}
  end
end
if conc >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= conc then
    return {0, 'concurrency', 0}
  end
end
if img_limit >= 0 then
  local used = tonumber(redis.call('GET', KEYS[3]) or '0')
  if used + images > img_limit then
    return {0, 'images_per_day', 0}
  end
end
if rpm >= 0 then
  redis.call('ZADD', KEYS[1], now, ARGV[5])
  redis.call('PEXPIRE', KEYS[1], window * 2)
end
if conc >= 0 then
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[5])
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[4]) * 4)
end
if img_limit >= 0 and images > 0 then
  redis.call('INCRBY', KEYS[3], images)
  redis.call('EXPIRE', KEYS[3], tonumber(ARGV[8]))
end
local used, reset = -1, 0
if rpm >= 0 then
  used = redis.call('ZCARD', KEYS[1])
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if oldest[2] then reset = tonumber(oldest[2]) + window - now end
end
return {1, '', 0, used, reset}
"""

# KEYS: rpm window, leases, images today; ARGV: token, images delta, undo rpm (1/0)
_GIVE_BACK = """
redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[3] == '1' then redis.call('ZREM', KEYS[1], ARGV[1]) end
local delta = tonumber(ARGV[2])
if delta ~= 0 and redis.call('EXISTS', KEYS[3]) == 1 then
  local left = redis.call('INCRBY', KEYS[3], delta)
  if left < 0 then redis.call('SET', KEYS[3], 0, 'KEEPTTL') end
end
return 1
"""

# KEYS: leases; ARGV: lease ttl ms, tokens... (renews only leases that still exist)
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 4)
return 1
"""


class RedisLimiter:
    """Limits shared through Redis (see module docstring); memory fallback while Redis is down."""

    def __init__(self, url: str, *, prefix: str = "bananagate:", lease_ttl: float = 120.0) -> None:
        import redis.asyncio as aioredis

        self._redis = aioredis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._prefix = prefix
        self._lease_ttl = lease_ttl
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._give_back = self._redis.register_script(_GIVE_BACK)
        self._renew = self._redis.register_script(_RENEW)
        self._fallback = MemoryLimiter()
        self._live: dict[str, int] = {}  # lease token -> key id, for the heartbeat
        self._warned_at = 0.0

    def _keys(self, key_id: int, day: str) -> list[str]:
        p = f"{self._prefix}key:{key_id}:"
        return [p + "rpm", p + "leases", p + "images:" + day]

    def _down(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._warned_at > 30:
            self._warned_at = now
            log.warning("Redis unavailable (%s): limits are per process until it is back", exc)

    async def acquire(self, key_id: int, limits: KeyLimits, images: int) -> Admission:
        import redis.exceptions

        now = time.time()
        day = utc_day(now)
        token = uuid.uuid4().hex
        args: list[str | int] = [
            int(WINDOW_SECONDS * 1000),
            -1 if limits.rpm is None else limits.rpm,
            -1 if limits.max_concurrent is None else limits.max_concurrent,
            int(self._lease_ttl * 1000),
            token,
            -1 if limits.images_per_day is None else limits.images_per_day,
            images,
            2 * 86400,
        ]
        try:
            result = await cast(Awaitable[list[Any]], self._acquire(keys=self._keys(key_id, day), args=args))
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            self._down(exc)
            return self._fallback.take(key_id, limits, images, backend="memory")
        ok, reason, wait = int(result[0]), result[1], int(result[2])
        if not ok:
            reason = reason.decode() if isinstance(reason, bytes) else str(reason)
            if reason == "rpm":
                raise LimitExceeded("rpm", _rpm_message(limits), max(wait, 1) / 1000)
            if reason == "concurrency":
                raise LimitExceeded("concurrency", _concurrency_message(limits), CONCURRENCY_RETRY_SECONDS)
            raise LimitExceeded("images_per_day", _images_message(limits), seconds_to_midnight(now))
        lease = limits.max_concurrent is not None
        if lease:
            self._live[token] = key_id
        counted = images if limits.images_per_day is not None else None
        rpm_remaining = rpm_reset = None
        if limits.rpm is not None and len(result) >= 5:
            rpm_remaining, rpm_reset = limits.rpm - int(result[3]), max(int(result[4]), 0) / 1000
        return Admission(
            key_id, token, day, limits.rpm is not None, lease, counted, "redis", rpm_remaining, rpm_reset
        )

    async def _return(self, admission: Admission, images_used: int | None) -> None:
        import redis.exceptions

        if admission.backend != "redis":
            self._fallback.give_back(admission, images_used)
            return
        self._live.pop(admission.token, None)
        delta = _image_delta(admission, images_used)
        if not (admission.lease or delta or (images_used is None and admission.rpm)):
            return
        args: list[str | int] = [admission.token, delta, 1 if images_used is None and admission.rpm else 0]
        try:
            await self._give_back(keys=self._keys(admission.key_id, admission.day), args=args)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            # The lease expires by itself; a lost image refund errs in the key's disfavour only.
            self._down(exc)

    async def finish(self, admission: Admission, images_used: int) -> None:
        await self._return(admission, images_used)

    async def cancel(self, admission: Admission) -> None:
        await self._return(admission, None)

    async def heartbeat(self, lease_ttl: float) -> None:
        import redis.exceptions

        by_key: dict[int, list[str]] = {}
        for token, key_id in list(self._live.items()):
            by_key.setdefault(key_id, []).append(token)
        try:
            for key_id, tokens in by_key.items():
                keys = [self._keys(key_id, "")[1]]
                await self._renew(keys=keys, args=[int(lease_ttl * 1000), *tokens])
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            self._down(exc)

    async def ping(self) -> bool:
        try:
            return bool(await cast(Awaitable[Any], self._redis.ping()))
        except Exception:
            return False

    async def aclose(self) -> None:
        await self._redis.aclose()


def build_limiter(redis_url: str | None, *, prefix: str, lease_ttl: float) -> Limiter:
    if redis_url:
        return RedisLimiter(redis_url, prefix=prefix, lease_ttl=lease_ttl)
    return MemoryLimiter()
