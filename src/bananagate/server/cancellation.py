"""Timeouts and shields on asyncio's own cancellation, for the request path.

anyio's `CancelScope` (behind `move_on_after`, `fail_after` and `CancelScope(shield=True)`) asks
sniffio for the backend, keeps a tree of scopes and re-delivers its cancellation at every await
until the scope ends. A request went through about six of them, at several microseconds each;
these do the same jobs with what asyncio has:

* `CancelAfter`: `asyncio.timeout` (3.11's logic), entered with a plain `with` so that it fits a
  synchronous context manager. Its cancellation is asyncio's: delivered once, not again at every
  await (nothing on the request path swallows a CancelledError).
* `shielded` / `wait_shielded`: anyio's shield. The request's task is cancelled natively
  (`Task.cancel()`: the client left, the server shuts down), which anyio's shield does not stop,
  and streamed responses run in Starlette's anyio task group, whose scope cancels again and
  again; these hold out against both. Plain `asyncio.shield` does not do the job by itself: the
  caller goes on at once while the work still runs, where a shield holds it until the work ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

import anyio

T = TypeVar("T")


class CancelAfter:
    """Cancel the current task `delay` seconds after entering; the CancelledError that this
    causes leaves the block as TimeoutError. A cancellation from elsewhere passes untouched."""

    __slots__ = ("_cancelling", "_delay", "_handle", "_task", "expired")

    def __init__(self, delay: float) -> None:
        self._delay = delay
        self._handle: asyncio.TimerHandle | None = None
        self.expired = False

    def __enter__(self) -> CancelAfter:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("CancelAfter must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        self._handle = task.get_loop().call_later(self._delay, self._expire)
        return self

    def _expire(self) -> None:
        self._handle = None
        self.expired = True
        self._task.cancel()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        # As asyncio.timeout: ours only if no other cancellation came meanwhile.
        if self.expired and self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc


async def shielded(work: Coroutine[Any, Any, T]) -> T:
    """Run `work` to its end even if the caller is cancelled meanwhile.

    It runs as its own task, which no cancellation of the caller reaches. A caller cancelled
    meanwhile waits for it to end, then gets the work's exception if it failed, else its own
    CancelledError (anyio would deliver that at the next await; here it is this one).
    """
    return await wait_shielded(asyncio.get_running_loop().create_task(work))


async def wait_shielded(future: asyncio.Future[T]) -> T:
    """`await future`, except that cancelling the caller neither cancels the future nor ends the
    wait early (see `shielded`)."""
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        if future.done() and future.cancelled():
            raise  # the work itself was cancelled (the loop is closing)
        await _outlast(future)
        if not future.cancelled() and (error := future.exception()) is not None:
            raise error from error.__cause__  # its own cause, not the CancelledError
        raise


def result_of(future: asyncio.Future[T]) -> T | None:
    """The future's result if it completed successfully, else None."""
    if future.done() and not future.cancelled() and future.exception() is None:
        return future.result()
    return None


async def _outlast(future: asyncio.Future[Any]) -> None:
    # The anyio shield stops an anyio scope from cancelling this wait again at every step; the
    # loop absorbs native cancellations, which the shield cannot stop (each comes once).
    with anyio.CancelScope(shield=True):
        while not future.done():
            try:
                await asyncio.wait((future,))
            except asyncio.CancelledError:
                continue
