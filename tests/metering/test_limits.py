"""Rate, concurrency and daily-image limits, in memory and in Redis (same behaviour)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bananagate.server.limits import Admission, Limiter, LimitExceeded, MemoryLimiter, RedisLimiter
from bananagate.store import KeyLimits
from tests.metering.conftest import REDIS_URL


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[Limiter]:
    if request.param == "memory":
        yield MemoryLimiter()
        return
    prefix = request.getfixturevalue("redis_prefix")
    backend = RedisLimiter(REDIS_URL, prefix=prefix, lease_ttl=30)
    try:
        yield backend
    finally:
        await backend.aclose()


async def _take(
    limiter: Limiter, limits: KeyLimits, n: int, images: int = 1
) -> tuple[list[Admission], list[LimitExceeded]]:
    results = await asyncio.gather(
        *(limiter.acquire(1, limits, images) for _ in range(n)), return_exceptions=True
    )
    ok = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, LimitExceeded)]
    assert len(ok) + len(refused) == n
    return ok, refused


async def test_rpm_window(limiter: Limiter) -> None:
    ok, refused = await _take(limiter, KeyLimits(rpm=5), 12)
    assert len(ok) == 5 and len(refused) == 7
    assert refused[0].reason == "rpm" and refused[0].retry_after is not None
    assert 0 < refused[0].retry_after <= 60
    # A call that never ran (e.g. refused by the budget) gives its slot back.
    await limiter.cancel(ok[0])
    ok2, _ = await _take(limiter, KeyLimits(rpm=5), 3)
    assert len(ok2) == 1


async def test_concurrency_leases(limiter: Limiter) -> None:
    limits = KeyLimits(max_concurrent=2)
    ok, refused = await _take(limiter, limits, 5)
    assert len(ok) == 2 and refused[0].reason == "concurrency"
    await limiter.finish(ok[0], 1)
    ok2, _ = await _take(limiter, limits, 3)
    assert len(ok2) == 1
    await limiter.heartbeat(30)  # renewing live leases keeps them
    _, refused = await _take(limiter, limits, 1)
    assert refused


async def test_images_per_day_refunds_calls_without_image(limiter: Limiter) -> None:
    limits = KeyLimits(images_per_day=3)
    ok, refused = await _take(limiter, limits, 5)
    assert len(ok) == 3 and refused[0].reason == "images_per_day"
    assert refused[0].retry_after is not None and refused[0].retry_after <= 86400
    await limiter.finish(ok[0], 0)  # a safety-blocked answer: its image comes back
    await limiter.finish(ok[1], 1)
    ok2, _ = await _take(limiter, limits, 2)
    assert len(ok2) == 1


async def test_all_or_nothing(limiter: Limiter) -> None:
    limits = KeyLimits(rpm=10, max_concurrent=1)
    ok, refused = await _take(limiter, limits, 3)
    assert len(ok) == 1 and len(refused) == 2
    # The refusals by concurrency did not consume rpm: 9 more fit after the lease ends.
    await limiter.finish(ok[0], 1)
    for _ in range(9):
        admission = await limiter.acquire(1, limits, 1)
        await limiter.finish(admission, 1)
    with pytest.raises(LimitExceeded) as info:
        await limiter.acquire(1, limits, 1)
    assert info.value.reason == "rpm"


async def test_redis_shares_limits_between_instances(redis_prefix: str) -> None:
    one = RedisLimiter(REDIS_URL, prefix=redis_prefix)
    two = RedisLimiter(REDIS_URL, prefix=redis_prefix)
    try:
        limits = KeyLimits(rpm=4)
        results = await asyncio.gather(
            *(backend.acquire(7, limits, 1) for backend in [one, two] * 5), return_exceptions=True
        )
        assert sum(not isinstance(r, BaseException) for r in results) == 4
    finally:
        await one.aclose()
        await two.aclose()


async def test_redis_lease_of_a_dead_process_expires(redis_prefix: str) -> None:
    dead = RedisLimiter(REDIS_URL, prefix=redis_prefix, lease_ttl=0.3)
    alive = RedisLimiter(REDIS_URL, prefix=redis_prefix, lease_ttl=0.3)
    try:
        limits = KeyLimits(max_concurrent=1)
        await dead.acquire(3, limits, 1)  # never finished: its process "crashed"
        with pytest.raises(LimitExceeded):
            await alive.acquire(3, limits, 1)
        await asyncio.sleep(0.5)
        await alive.acquire(3, limits, 1)
    finally:
        await dead.aclose()
        await alive.aclose()


async def test_redis_down_falls_back_to_memory() -> None:
    limiter = RedisLimiter("redis://127.0.0.1:1/0", prefix="x:")
    try:
        limits = KeyLimits(rpm=2)
        first = await limiter.acquire(1, limits, 1)
        assert first.backend == "memory"
        await limiter.acquire(1, limits, 1)
        with pytest.raises(LimitExceeded):
            await limiter.acquire(1, limits, 1)
        await limiter.finish(first, 1)
    finally:
        await limiter.aclose()
