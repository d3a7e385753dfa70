"""Sampling bananagate while it serves a workload, with py-spy (attached by pid, no restart),
and summarising where the time goes.

py-spy writes collapsed stacks (`frame;frame;... count`, one line per distinct stack; open them
in speedscope or turn them into a flame graph with inferno/flamegraph.pl). The summary counts
samples by the function on top of the stack ("self") and by every function on the stack
("inclusive"), and groups self time by module.
"""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.tools import ensure_venv, find_executable

PYSPY_RATE = 100  # samples per second
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def find_pyspy(*, allow_install: bool, log: list[str]) -> str | None:
    found = find_executable("py-spy")
    if found:
        return found
    python = ensure_venv("tools-venv", ["py-spy"], allow_install=allow_install, log=log)
    if python is None:
        return None
    candidate = python.parent / "py-spy"
    return str(candidate) if candidate.exists() else None


def start_pyspy(
    binary: str, pid: int, duration: float, output: Path, log_path: Path
) -> subprocess.Popen[bytes]:
    """Record `duration` seconds of `pid` into `output` (collapsed stacks); runs in the background."""
    argv = [
        binary, "record", "--pid", str(pid), "--duration", str(max(1, round(duration))),
        "--rate", str(PYSPY_RATE), "--format", "raw", "--threads", "--full-filenames",
        "--output", str(output),
    ]  # fmt: skip
    log_file = log_path.open("ab")
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file)
    finally:
        log_file.close()


_PATH_PREFIX = re.compile(r"\((?:[^();]*?/(?:site-packages|src)/|[^();]*?/lib/python3\.\d+/)")


_THREAD_ID = re.compile(r"^thread \(\d+\): ")


def shorten_paths(collapsed: str) -> str:
    """Frames as `func (package/module.py:line)`, without the machine's directories or thread
    ids (half the size, and the same text on every machine); identical stacks merged."""
    counts: dict[str, int] = {}
    for line in collapsed.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if stack and count.isdigit():
            short = _THREAD_ID.sub("thread: ", _PATH_PREFIX.sub("(", stack), count=1)
            counts[short] = counts.get(short, 0) + int(count)
    return "".join(f"{stack} {count}\n" for stack, count in counts.items())


# --- reading collapsed stacks -------------------------------------------------------------------


def module_of(path: str) -> str:
    """A dotted module name for a source path (site-packages, the src layout, the stdlib, or a
    path relative to one of those as py-spy prints it without --full-filenames)."""
    p = path.replace("\\", "/")
    if p.startswith("<frozen "):
        return p[len("<frozen ") :].rstrip(">")
    for marker in ("/site-packages/", "/src/", "/lib/python3.", "/lib/python"):
        at = p.rfind(marker)
        if at >= 0:
            rest = p[at + len(marker) :]
            if marker.startswith("/lib/python"):
                rest = rest.split("/", 1)[1] if "/" in rest else rest
            p = rest
            break
    else:
        p = p.lstrip("/") if not p.startswith("/") else p.rsplit("/", 1)[-1]
    if p.endswith(".py"):
        p = p[:-3]
    if p.endswith("/__init__"):
        p = p[: -len("/__init__")]
    return p.replace("/", ".") or path


def parse_frame(frame: str) -> tuple[str, str]:
    """(function, module) of one `func (file:line)` frame."""
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip(), "?"
    return match.group("func"), module_of(match.group("file"))


def package_group(module: str) -> str:
    """Where a module belongs for the summary: bananagate modules by name, others by package."""
    if module.startswith("bananagate."):
        return module
    return module.split(".", 1)[0]


# Leaf frames of a thread that is parked, not working (py-spy's idle detection misses some of
# them on a busy machine): they are counted apart, not as time spent.
WAITING = frozenset(
    {
        "threading:Condition.wait",
        "threading:Event.wait",
        "threading:Thread.join",
        "queue:Queue.get",
        "selectors:EpollSelector.select",
        "concurrent.futures.thread:_worker",
    }
)


# Frames every sample passes through (the command line, `serve`): no information in them.
_ENTRY_MODULES = ("bananagate.__main__", "bananagate.cli")


@dataclass
class ProfileSummary:
    samples: int = 0  # every sample, waiting ones included
    waiting: int = 0
    busy_by_thread: Counter[str] = field(default_factory=Counter)
    self_by_function: Counter[str] = field(default_factory=Counter)
    self_by_group: Counter[str] = field(default_factory=Counter)
    inclusive_by_function: Counter[str] = field(default_factory=Counter)

    @property
    def busy(self) -> int:
        return self.samples - self.waiting

    def share(self, count: int) -> float:
        return round(100 * count / self.busy, 1) if self.busy else 0.0

    def to_dict(self, top: int = 25) -> dict[str, Any]:
        def table(counter: Counter[str]) -> list[dict[str, Any]]:
            return [{"name": k, "samples": v, "pct": self.share(v)} for k, v in counter.most_common(top)]

        return {
            "samples": self.samples,
            "busy_samples": self.busy,
            "waiting_samples": self.waiting,
            "busy_by_thread": table(self.busy_by_thread),
            "self_by_group": table(self.self_by_group),
            "self_by_function": table(self.self_by_function),
            "inclusive_bananagate": table(self.inclusive_by_function),
        }


def summarise(collapsed: str) -> ProfileSummary:
    """Count collapsed stacks (`thread (tid): name;frame;...;frame count`, as recorded with
    --threads; the thread part is optional)."""
    summary = ProfileSummary()
    for line in collapsed.splitlines():
        stack, _, count_text = line.rstrip().rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        thread = "?"
        raw_frames = stack.split(";")
        if raw_frames and raw_frames[0].startswith("process "):
            raw_frames = raw_frames[1:]
        if raw_frames and raw_frames[0].startswith(("thread ", "thread:")):
            thread = raw_frames[0].split(":", 1)[-1].strip() or "?"
            raw_frames = raw_frames[1:]
        frames = [parse_frame(f) for f in raw_frames if f]
        if not frames:
            continue
        summary.samples += count
        func, module = frames[-1]
        leaf = f"{module}:{func}"
        if leaf in WAITING:
            summary.waiting += count
            continue
        summary.busy_by_thread[_thread_kind(thread)] += count
        summary.self_by_function[leaf] += count
        summary.self_by_group[package_group(module)] += count
        seen = set()
        for func, module in frames:
            if module.startswith("bananagate.") and not module.startswith(_ENTRY_MODULES):
                name = f"{module}:{func}"
                if name not in seen:
                    seen.add(name)
                    summary.inclusive_by_function[name] += count
    return summary


def _thread_kind(name: str) -> str:
    """Thread names without their numbers, so a pool's threads add up ("AnyIO worker thread")."""
    return re.sub(r"[\s_-]*\d+$", "", name) or name


def cpu_ms_per_request(summary: ProfileSummary, requests: float) -> float | None:
    """Busy CPU time per request, all threads together (each sample stands for 1/rate s)."""
    if requests <= 0:
        return None
    return round(summary.busy * 1000 / PYSPY_RATE / requests, 2)


def summary_text(title: str, summary: ProfileSummary, requests: float = 0, top: int = 20) -> str:
    per_request = cpu_ms_per_request(summary, requests)
    lines = [
        f"# {title}",
        f"{summary.busy} busy samples at {PYSPY_RATE} Hz per thread "
        f"({summary.waiting} more of parked threads left out);",
        "percentages are of busy samples, all threads together.",
    ]
    if per_request is not None:
        lines.append(
            f"about {requests:.0f} requests were served while sampling: {per_request} ms of CPU per request."
        )
    lines.append("")
    for heading, counter in (
        ("Busy samples by thread", summary.busy_by_thread),
        ("Self time by module (bananagate modules by name, others by package)", summary.self_by_group),
        ("Self time by function", summary.self_by_function),
        ("Inclusive time of bananagate functions (on the stack)", summary.inclusive_by_function),
    ):
        lines.append(f"## {heading}")
        for name, count in counter.most_common(top):
            lines.append(f"{summary.share(count):6.1f}%  {count:7d}  {name}")
        lines.append("")
    return "\n".join(lines)
