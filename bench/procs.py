"""Child processes of a benchmark run: start, wait until they answer, stop, measure memory.

Every process the harness starts is recorded in a `ProcessGroup` and stopped by its own pid when
the run ends (SIGTERM, then SIGKILL after a grace period), never by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class StartError(RuntimeError):
    """A process did not come up; the message ends with the tail of its log."""


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class ProcessGroup:
    """The processes of one run, stopped together (in reverse order of start) by `close`."""

    def __init__(self) -> None:
        self.processes: list[tuple[str, subprocess.Popen[bytes]]] = []

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stdout_pipe: bool = False,
    ) -> subprocess.Popen[bytes]:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = log_path.open("ab")
        try:
            process = subprocess.Popen(
                list(argv),
                env=dict(env) if env is not None else None,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout_pipe else log_file,
                stderr=log_file,
                start_new_session=True,  # a Ctrl-C on the harness reaches it through `close`, once
            )
        finally:
            log_file.close()
        self.processes.append((name, process))
        return process

    def stop(self, process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                process.wait(timeout=5)
        if process.stdout is not None:
            process.stdout.close()

    def close(self) -> None:
        while self.processes:
            _, process = self.processes.pop()
            self.stop(process)


def wait_http(url: str, process: subprocess.Popen[bytes], log_path: Path, timeout: float = 60.0) -> None:
    """Poll `url` until it answers (any status below 500); StartError if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise StartError(f"exited with status {process.returncode}:\n{log_tail(log_path)}")
        try:
            if httpx.get(url, timeout=2.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise StartError(f"did not answer {url} within {timeout:.0f} s:\n{log_tail(log_path)}")
        time.sleep(0.1)


def read_ready_line(process: subprocess.Popen[bytes], log_path: Path, timeout: float = 30.0) -> str:
    """The first stdout line of a process that announces itself (`READY ...`)."""
    assert process.stdout is not None
    import selectors

    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if selector.select(timeout=0.2):
                line = process.stdout.readline().decode(errors="replace").strip()
                if line:
                    return line
            if process.poll() is not None:
                break
    finally:
        selector.close()
    raise StartError(f"never said READY (status {process.poll()}):\n{log_tail(log_path)}")


# --- memory ------------------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (via /proc/<pid>/task/<tid>/children)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        task_dir = Path(f"/proc/{current}/task")
        try:
            tids = os.listdir(task_dir)
        except OSError:
            continue
        for tid in tids:
            try:
                children = (task_dir / tid / "children").read_text().split()
            except OSError:
                continue
            todo.extend(int(c) for c in children)
    return out


def reset_peak_rss(pids: Sequence[int]) -> bool:
    """Reset VmHWM (peak RSS) to the current RSS: `5` to /proc/<pid>/clear_refs (Linux >= 4.0)."""
    ok = True
    for pid in pids:
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            ok = False
    return ok


def peak_rss_bytes(pids: Sequence[int]) -> int | None:
    """Sum of VmHWM over `pids`, in bytes; None when it cannot be read (not Linux, gone, ...)."""
    total = 0
    found = False
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1]) * 1024
                found = True
                break
    return total if found else None


CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of `pids` (fields 14 and 15 of /proc/<pid>/stat), in seconds; 0 for a pid
    that cannot be read."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS
