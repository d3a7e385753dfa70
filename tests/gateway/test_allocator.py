"""The allocator settings `bananagate serve` applies: megabyte bodies stop costing page faults."""

from __future__ import annotations

import asyncio
import platform
import subprocess
import sys

import pytest

from bananagate.server.allocator import THRESHOLD_BYTES, IdleTrimmer, tune_allocator

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")

# A gateway's allocation pattern in miniature: an answer read in 64 KiB chunks, joined, sliced
# and copied; page faults counted once the heap is warm.
PATTERN = """
import resource, os, sys
{setup}
src = os.urandom(1 << 20) * 2
def one():
    chunks = [src[i:i + 65536] for i in range(0, 1_400_000, 65536)]
    body = b"".join(chunks)
    del chunks
    return len(body[:1_399_000]) + len(bytes(body) + b"x")
for _ in range(20):
    one()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(100):
    one()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 100)
"""


def faults_per_round(setup: str) -> float:
    env = {"PATH": "/usr/bin:/bin"}  # no MALLOC_* of the caller's
    out = subprocess.run(
        [sys.executable, "-c", PATTERN.format(setup=setup)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip())


def test_tuned_heap_reuses_its_memory_instead_of_faulting_it_in_again() -> None:
    untuned = faults_per_round("")
    tuned = faults_per_round(
        "from bananagate.server.allocator import tune_allocator; assert tune_allocator()"
    )
    assert untuned > 100  # glibc's adaptive thresholds map ~1.4 MB again and again
    assert tuned < untuned / 10


def test_settings_reach_worker_processes_through_the_environment() -> None:
    environ: dict[str, str] = {}
    assert tune_allocator(environ)
    assert environ == {
        "MALLOC_MMAP_THRESHOLD_": str(THRESHOLD_BYTES),
        "MALLOC_TRIM_THRESHOLD_": str(THRESHOLD_BYTES),
    }


@pytest.mark.parametrize("name", ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_"])
def test_an_operators_own_malloc_settings_win(name: str) -> None:
    environ = {name: "65536"}
    assert not tune_allocator(environ)
    assert environ == {name: "65536"}


# --- giving memory back when idle -----------------------------------------------------------------

FRAGMENTED = """
import os
from bananagate.server.allocator import tune_allocator, heap_trimmer
import asyncio
tune_allocator()
def rss():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) // 1024
blocks = [os.urandom(1 << 20) for _ in range(200)]
keep = blocks[1::2]  # every other block stays: the freed ones are holes, not the heap's top
del blocks
before = rss()
asyncio.run(heap_trimmer()())
print(before, rss(), len(keep))
"""


def test_a_trim_gives_back_the_holes_a_burst_left_in_the_heap() -> None:
    out = subprocess.run(
        [sys.executable, "-c", FRAGMENTED],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    before, after, _ = map(int, out.stdout.split())
    assert before - after > 60  # ~100 MB of holes; free() alone returned none of it


async def test_the_idle_trimmer_trims_once_per_quiet_spell_after_work() -> None:
    state = {"busy": 0, "ended": 0}
    trims: list[float] = []

    async def trim() -> None:
        trims.append(asyncio.get_running_loop().time())

    trimmer = IdleTrimmer(
        lambda: state["busy"], lambda: state["ended"], trim, idle_seconds=0.1, poll_seconds=0.02
    )
    task = asyncio.create_task(trimmer.run())
    try:
        await asyncio.sleep(0.3)
        assert trims == []  # no work yet: nothing to give back
        state["busy"] = 1
        await asyncio.sleep(0.3)
        assert trims == []  # never while a request runs
        state["busy"], state["ended"] = 0, 1
        await asyncio.sleep(0.3)
        assert len(trims) == 1
        await asyncio.sleep(0.3)
        assert len(trims) == 1  # once per quiet spell
        for _ in range(10):  # steady traffic keeps it from trimming
            state["ended"] += 1
            await asyncio.sleep(0.04)
        assert len(trims) == 1
        await asyncio.sleep(0.3)
        assert len(trims) == 2
    finally:
        task.cancel()
