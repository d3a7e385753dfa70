"""The files under a gallery's segments: positioned whole reads and writes, and the segment a
repository appends to (`store.gallery` keeps the rows that name their ranges)."""

from __future__ import annotations

import os
import time

try:
    import fcntl
except ImportError:  # not POSIX: segments are unlinked, never reused
    fcntl = None  # type: ignore[assignment]

# Whether freed segments can be reused: reuse waits, under a lock, for zeroing to finish.
CAN_LOCK = fcntl is not None

NEW_FILE = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
READ_FILE = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
WRITE_FILE = os.O_WRONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def pread_all(fd: int, size: int, offset: int) -> bytes | None:
    """`size` bytes at `offset`, or None when the file ends before."""
    data = os.pread(fd, size, offset)
    if len(data) == size:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = os.pread(fd, size - got, offset + got)
        if not more:
            return None
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def same_file(fd: int, path: str) -> bool:
    """Whether `path` still leads to the file open as `fd`."""
    try:
        named, opened = os.stat(path), os.fstat(fd)
    except OSError:
        return False
    return (named.st_ino, named.st_dev) == (opened.st_ino, opened.st_dev)


class Segment:
    """The segment a repository appends to: its file, name and end, and when it was written."""

    __slots__ = ("end", "fd", "name", "written_at")

    def __init__(self, fd: int, name: str) -> None:
        self.fd = fd
        self.name = name
        self.end = 0
        self.written_at = time.monotonic()


def reuse_segment(directory: str, free: str, name: str) -> Segment | None:
    """The freed segment `free` renamed to `name` and opened for writing, or None if it is gone.

    Its old name led nowhere since it was freed, so reads of its images fail their check and no
    zeroing starts on it; an exclusive lock waits for a zeroing that started before
    (`zero_range`) to finish. A fresh mtime keeps other processes' sweeps off it."""
    assert fcntl is not None
    try:
        fd = os.open(os.path.join(directory, free), WRITE_FILE)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.utime(fd)
        os.rename(os.path.join(directory, free), os.path.join(directory, name))
    except OSError:
        os.close(fd)
        return None
    return Segment(fd, name)


def zero_range(path: str, offset: int, size: int) -> None:
    """Overwrite `size` bytes at `offset` of the segment at `path` with zeros, if it is still
    there and still under that name."""
    try:
        fd = os.open(path, WRITE_FILE)
    except OSError:
        return
    try:
        if fcntl is not None:  # a freed segment is not reused while it is zeroed (`reuse_segment`)
            fcntl.flock(fd, fcntl.LOCK_SH)
            if not same_file(fd, path):
                return  # freed meanwhile: the range is no image's any more
        zeros = bytes(min(size, 1 << 20))
        end = offset + size
        while offset < end:
            pwrite_all(fd, zeros[: end - offset], offset)
            offset += min(len(zeros), end - offset)
    except OSError:
        pass
    finally:
        os.close(fd)
