"""glibc malloc settings for a process that moves megabyte-sized bodies.

glibc serves a request of more than its mmap threshold with a fresh mapping, and gives the top of
its heap back to the kernel once more than the trim threshold is free there. Both thresholds start
small (128 KiB) and adapt, but for a gateway's mix of ~1.4 MB bodies, their Base64 slices and
joined copies they still end up returning memory that the next request maps again: every page of
it is then a page fault (~200 per request here, a fifth of the CPU of a 1.4 MB answer).
Fixed thresholds of 32 MiB keep that memory in the heap for reuse. The peak RSS does not grow
(measured by `python -m bench`); memory freed after a burst is returned in pieces over 32 MiB.

Operators who set glibc's own `MALLOC_*` variables keep theirs: nothing here overrides them.

A burst (64 concurrent image requests, or a few 21 MB ones) leaves free memory scattered through
the heap, which `free` never returns: RSS would stay at the burst's peak for good. `IdleTrimmer`
calls `malloc_trim` once the gateway has been idle for a moment after work, so a quiet gateway
gives that memory back without paying page faults while it is busy.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import platform
import time
from collections.abc import Awaitable, Callable, MutableMapping

log = logging.getLogger("bananagate.server")

# mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
THRESHOLD_BYTES = 32 * 1024 * 1024
# Environment spellings of the same settings: worker processes read them at their start.
_ENV = {"MALLOC_MMAP_THRESHOLD_": M_MMAP_THRESHOLD, "MALLOC_TRIM_THRESHOLD_": M_TRIM_THRESHOLD}
_OPERATOR_SETTINGS = (*_ENV, "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")


def _glibc() -> ctypes.CDLL | None:
    """The C library, when it is glibc (musl and others have no such tuning)."""
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def tune_allocator(environ: MutableMapping[str, str] | None = None) -> bool:
    """Set both thresholds in this process (and in `environ`, for the worker processes it will
    start). False, changing nothing, off glibc or when the operator set any of glibc's variables."""
    environ = os.environ if environ is None else environ
    libc = _glibc()
    if libc is None or any(name in environ for name in _OPERATOR_SETTINGS):
        return False
    mallopt = libc.mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    if not all(mallopt(parameter, THRESHOLD_BYTES) == 1 for parameter in _ENV.values()):
        return False
    for name in _ENV:
        environ[name] = str(THRESHOLD_BYTES)
    return True


def heap_trimmer() -> Callable[[], Awaitable[None]] | None:
    """An awaitable `malloc_trim(0)` run in a thread (it walks every arena), or None off glibc."""
    libc = _glibc()
    if libc is None:
        return None
    trim = libc.malloc_trim
    trim.argtypes = (ctypes.c_size_t,)
    trim.restype = ctypes.c_int

    async def run() -> None:
        await asyncio.to_thread(trim, 0)

    return run


class IdleTrimmer:
    """Trims the heap once no request has run for `idle_seconds` since the last one ended.

    `busy()` is the number of requests running and `ended()` counts those finished: one trim per
    quiet spell that followed work, none while requests run, none again until more have ended.
    """

    def __init__(
        self,
        busy: Callable[[], int],
        ended: Callable[[], int],
        trim: Callable[[], Awaitable[None]],
        *,
        idle_seconds: float = 2.0,
        poll_seconds: float = 0.5,
    ) -> None:
        self._busy = busy
        self._ended = ended
        self._trim = trim
        self.idle_seconds = idle_seconds
        self.poll_seconds = poll_seconds

    async def run(self) -> None:
        trimmed_after = self._ended()  # nothing to give back before any work
        seen = trimmed_after
        quiet_since = time.monotonic()
        while True:
            await asyncio.sleep(self.poll_seconds)
            now, ended = time.monotonic(), self._ended()
            if self._busy() or ended != seen:
                seen, quiet_since = ended, now
                continue
            if ended != trimmed_after and now - quiet_since >= self.idle_seconds:
                try:
                    await self._trim()
                except Exception as exc:  # a missing symbol or the like: not worth a crash
                    log.warning("heap trim failed: %s", exc)
                    return
                trimmed_after = ended
