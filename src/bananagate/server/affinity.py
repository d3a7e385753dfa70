"""Conversation affinity: a multi-turn request goes first to the channel that produced its history.

A `thoughtSignature` is bound to the upstream that issued it (another one may refuse it or lose
the model's reasoning), and an image this gateway produced is best edited where it was made.
So, when an answer passes through a route with several channels, the digests of its signatures
and images are recorded with the channel that served it; a later request carrying one of them
in its history is routed to that channel first (`x-bananagate-affinity: kept`), and fails over
like any request when that channel cannot serve it (`x-bananagate-affinity: broken`).

Cheap on the hot path: answers are searched as bytes (no JSON parse, no Base64 decoding), a
signature is hashed whole (it is small) and an image by its length and three 512-byte samples
of its Base64 text, in either alphabet, with or without padding. The mapping lives in Redis when
configured, else in the database, so every gateway process shares it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Sequence
from typing import Any, Protocol, cast

import anyio.to_thread

from bananagate.protocol.scan import Bytes
from bananagate.protocol.wire import GenerateContentRequest
from bananagate.providers.base import Call
from bananagate.store import Store

log = logging.getLogger("bananagate.affinity")

AFFINITY_HEADER = "x-bananagate-affinity"
SAMPLE = 512
# The most recent history items looked up per request (a long chat has many).
MAX_LOOKUP = 32
_SIG_KEYS = (b'"thoughtSignature"', b'"thought_signature"')
_BLOB_KEYS = (b'"inlineData"', b'"inline_data"')
_URLSAFE = bytes.maketrans(b"-_", b"+/")
_URLSAFE_STR = str.maketrans("-_", "+/")


def _canonical(text: str | bytes) -> bytes:
    """Base64 text in the standard alphabet without padding (answers and clients differ)."""
    if isinstance(text, str):
        return text.strip().rstrip("=").translate(_URLSAFE_STR).encode("ascii", "replace")
    return text.strip().rstrip(b"=").translate(_URLSAFE)


def signature_digest(signature: str | bytes) -> str:
    return hashlib.sha256(b"sig\0" + _canonical(signature)).hexdigest()[:32]


def _char(text: str | memoryview, index: int) -> str:
    value = text[index]
    return value if isinstance(value, str) else chr(value)


def image_digest(data: str | bytes | memoryview) -> str:
    """Length plus start, middle and end samples: enough to tell images apart without hashing
    megabytes (only the samples are copied). Padding does not count, in the length either."""
    text: str | memoryview = data if isinstance(data, str) else memoryview(data)
    end = len(text)
    while end and _char(text, end - 1) in "= \r\n":
        end -= 1
    starts = (0,) if end <= 3 * SAMPLE else (0, end // 2, end - SAMPLE)
    pieces = (text[a : min(a + SAMPLE, end) if len(starts) > 1 else end] for a in starts)
    sample = b"".join(_canonical(p if isinstance(p, str) else bytes(p)) for p in pieces)
    return hashlib.sha256(b"img\0%d\0" % end + sample).hexdigest()[:32]


def request_digests(request: GenerateContentRequest, body: Bytes = b"") -> list[str]:
    """Digests of the signatures and inline images in a request's history, newest first.

    A lean-parsed request's image data is read from `body`, at its `elided_spans`."""
    digests: list[str] = []
    spans = request.elided_spans
    blob = sum(1 for c in request.contents for p in c.parts if p.inline_data is not None)
    for content in reversed(request.contents):
        for part in reversed(content.parts):
            if part.thought_signature:
                digests.append(signature_digest(part.thought_signature))
            if part.inline_data is not None:
                blob -= 1
                if spans:
                    start, end = spans[blob]
                    digests.append(image_digest(memoryview(body)[start:end]))
                elif part.inline_data.data:
                    digests.append(image_digest(part.inline_data.data))
            if len(digests) >= MAX_LOOKUP:
                return digests
    return digests


def _string_at(body: Bytes, key_end: int) -> tuple[int, int] | None:
    """Bounds of the JSON string value after the key ending at `key_end` (no escapes in Base64)."""
    colon = body.find(b":", key_end)
    start = body.find(b'"', colon + 1) if colon >= 0 else -1
    end = body.find(b'"', start + 1) if start >= 0 else -1
    return (start + 1, end) if end > start >= 0 else None


def answer_digests(body: Bytes) -> list[str]:
    """Digests of the signatures and images in an answer body or stream event.

    Hops from quote to quote (one memchr over each Base64 string, which holds none) and looks
    at what follows each: several times faster than searching for every key name in turn.
    """
    digests: list[str] = []
    view = memoryview(body)
    at = body.find(b'"')
    while at >= 0:
        bounds: tuple[int, int] | None = None
        if body.startswith(_SIG_KEYS, at):
            bounds = _string_at(body, body.find(b'"', at + 1) + 1)
            if bounds is not None:
                digests.append(signature_digest(bytes(view[bounds[0] : bounds[1]])))
        elif body.startswith(_BLOB_KEYS, at):
            data_key = body.find(b'"data"', at, at + 512)  # within the small blob header
            bounds = _string_at(body, data_key + 6) if data_key >= 0 else None
            if bounds is not None:
                digests.append(image_digest(view[bounds[0] : bounds[1]]))
        at = body.find(b'"', bounds[1] + 1 if bounds is not None else at + 1)
    return digests


class AffinityStore(Protocol):
    async def lookup(self, digests: Sequence[str]) -> str | None: ...

    async def remember(self, digests: Sequence[str], channel: str) -> None: ...

    async def aclose(self) -> None: ...


class DatabaseAffinity:
    """The mapping in the `conversation_affinity` table (no Redis configured)."""

    def __init__(self, store: Any, ttl_seconds: float) -> None:
        self._store = store  # Callable[[], Store]
        self._ttl = ttl_seconds
        self._remembered = 0

    async def lookup(self, digests: Sequence[str]) -> str | None:
        store = cast(Store, self._store())
        return await anyio.to_thread.run_sync(store.affinity.lookup, list(digests))

    async def remember(self, digests: Sequence[str], channel: str) -> None:
        store = cast(Store, self._store())
        await anyio.to_thread.run_sync(store.affinity.remember, list(digests), channel, self._ttl)
        self._remembered += 1
        if self._remembered % 1000 == 1:  # now and then, forget what expired
            await anyio.to_thread.run_sync(store.affinity.sweep)

    async def aclose(self) -> None:
        return None


class RedisAffinity:
    """The mapping as Redis keys `<prefix>affinity:<digest>` with a TTL."""

    def __init__(self, url: str, prefix: str, ttl_seconds: float) -> None:
        import redis.asyncio as aioredis

        self._redis = aioredis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._prefix = f"{prefix}affinity:"
        self._ttl = max(1, int(ttl_seconds))

    async def lookup(self, digests: Sequence[str]) -> str | None:
        if not digests:
            return None
        values = await self._redis.mget([self._prefix + d for d in digests])
        found = next((v for v in values if v is not None), None)
        return found.decode() if isinstance(found, bytes) else found

    async def remember(self, digests: Sequence[str], channel: str) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for digest in dict.fromkeys(digests):
                pipe.set(self._prefix + digest, channel, ex=self._ttl)
            await pipe.execute()

    async def aclose(self) -> None:
        await self._redis.aclose()


class Affinity:
    """What the pipeline calls: `prefer` before routing, `remember` after an answer."""

    def __init__(self, store: AffinityStore) -> None:
        self.store = store
        self._warned_at = -math.inf

    async def prefer(self, call: Call) -> None:
        digests = request_digests(call.request, call.body)
        if not digests:
            return
        try:
            call.prefer_channel = await self.store.lookup(digests)
        except Exception as exc:  # affinity is a preference: routing goes on without it
            self._warn("affinity lookup failed", exc)

    async def remember(self, call: Call, digests: Sequence[str]) -> None:
        if not digests or not call.channel:
            return
        try:
            await self.store.remember(digests, call.channel)
        except Exception as exc:
            self._warn(f"affinity not recorded for request {call.request_id}", exc)

    def _warn(self, what: str, exc: Exception) -> None:
        # Once in a while, not per request, while the store is away.
        now = time.monotonic()
        if now - self._warned_at > 30:
            self._warned_at = now
            log.warning("%s: %s", what, exc)

    async def aclose(self) -> None:
        await self.store.aclose()


def build_affinity(store: Any, redis_url: str | None, prefix: str, ttl_seconds: float) -> Affinity:
    backend: AffinityStore = (
        RedisAffinity(redis_url, prefix, ttl_seconds) if redis_url else DatabaseAffinity(store, ttl_seconds)
    )
    return Affinity(backend)
