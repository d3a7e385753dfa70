"""`server.cancellation`: the asyncio-native timeouts and shields of the request path behave as
the anyio scopes they replaced (timeouts raise, shielded work ends even when its caller is
cancelled, natively or by an anyio scope)."""

from __future__ import annotations

import asyncio
import time

import anyio
import pytest

from bananagate.protocol.errors import ApiError
from bananagate.server.cancellation import CancelAfter, shielded, wait_shielded
from bananagate.server.deadlines import bounded_by


async def test_cancel_after_raises_timeout_and_leaves_the_task_uncancelled() -> None:
    task = asyncio.current_task()
    assert task is not None
    with pytest.raises(TimeoutError), CancelAfter(0.01) as scope:
        await asyncio.sleep(5)
    assert scope.expired
    assert task.cancelling() == 0
    await asyncio.sleep(0)  # no cancellation left behind


async def test_cancel_after_that_does_not_expire_changes_nothing() -> None:
    with CancelAfter(5) as scope:
        await asyncio.sleep(0.01)
    assert not scope.expired


async def test_cancel_after_lets_another_cancellation_through() -> None:
    entered = asyncio.Event()

    async def victim() -> None:
        with CancelAfter(5):
            entered.set()
            await asyncio.sleep(5)

    task = asyncio.create_task(victim())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_bounded_by_raises_deadline_exceeded() -> None:
    with pytest.raises(ApiError) as caught, bounded_by(time.monotonic() + 0.01):
        await asyncio.sleep(5)
    assert caught.value.code == 504
    with pytest.raises(ApiError), bounded_by(time.monotonic() - 1):  # already past: nothing starts
        pytest.fail("ran past its deadline")


async def _slow(log: list[str], seconds: float = 0.05) -> str:
    await asyncio.sleep(seconds)
    log.append("done")
    return "result"


async def test_shielded_work_ends_before_a_natively_cancelled_caller_goes_on() -> None:
    log: list[str] = []

    async def caller() -> None:
        await shielded(_slow(log))
        log.append("after")  # not reached: the caller was cancelled

    task = asyncio.create_task(caller())
    await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.sleep(0.01)
    task.cancel()  # a second cancellation is absorbed too
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == ["done"]


async def test_shielded_work_survives_an_anyio_scope() -> None:
    log: list[str] = []
    with anyio.move_on_after(0.01) as scope:
        await shielded(_slow(log))
        log.append("after")
    assert scope.cancelled_caught
    assert log == ["done"]


async def test_shielded_returns_and_raises_like_the_work() -> None:
    assert await shielded(_slow([], 0)) == "result"

    async def fails() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError):
        await shielded(fails())


async def test_wait_shielded_does_not_cancel_the_future() -> None:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[int] = loop.create_future()
    waiter = asyncio.create_task(wait_shielded(future))
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.sleep(0.01)
    assert not waiter.done() and not future.cancelled()
    future.set_exception(ValueError("the work's own error"))
    with pytest.raises(ValueError):  # the work failed: its error, as anyio's shield gives it
        await waiter
