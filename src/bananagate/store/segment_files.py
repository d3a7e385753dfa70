"""The files under a gallery's segments: positioned whole reads and writes, and the segment a
repository appends to (`store.gallery` keeps the rows that name their ranges)."""

from __future__ import annotations

import contextlib
import errno
import mmap
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
    """The segment a repository appends to: its file, name and end, and when it was written;
    `direct_fd` is the same file opened for direct writes, once one was made."""

    __slots__ = ("direct_fd", "end", "fd", "name", "path", "written_at")

    def __init__(self, fd: int, name: str, path: str) -> None:
        self.fd = fd
        self.name = name
        self.path = path
        self.end = 0
        self.written_at = time.monotonic()
        self.direct_fd: int | None = None

    def close(self) -> None:
        for fd in (self.fd, self.direct_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)


# Direct writes (O_DIRECT) skip the page cache. A buffered write of a 1 MB image into a growing
# segment cost ~1-2 ms of kernel CPU here (page-cache pages, dirty throttling, then writeback),
# a direct one ~0.1 ms; the gallery writes every image the gateway delivers, and the console
# reads few of them back. Direct I/O wants the file offset, the length and the memory aligned.
DIRECT = getattr(os, "O_DIRECT", 0)  # 0 where the platform has none (macOS): always buffered
DIRECT_ALIGN = 4096  # covers 512-byte and 4 KiB logical blocks
# Smaller images are written buffered: padding each to the alignment would waste up to 4 KiB.
DIRECT_FROM = 256 * 1024
# A scratch buffer up to this size is kept between writes; a bigger one is unmapped after use.
_KEEP_BUFFER = 8 * 1024 * 1024


def align_up(size: int) -> int:
    return -(-size // DIRECT_ALIGN) * DIRECT_ALIGN


class DirectWrites:
    """Direct writes into segments, through a page-aligned scratch buffer (an anonymous mmap).

    Off for good after the first refusal (a filesystem without O_DIRECT, tmpfs say, refuses the
    open with EINVAL): the caller then writes buffered, as it does for small images. Not
    thread-safe: the repository calls it under its lock."""

    def __init__(self) -> None:
        self.enabled = DIRECT != 0
        self._buffer: mmap.mmap | None = None

    def append(self, segment: Segment, data: bytes | memoryview) -> tuple[int, int]:
        """Write `data` at the end of `segment`, directly when it is big enough and direct I/O
        works here, else buffered: (its offset, the bytes it takes there)."""
        if self.enabled and len(data) >= DIRECT_FROM:
            offset = align_up(segment.end)
            written = self._write(segment, data, offset)
            if written is not None:
                return offset, written
        pwrite_all(segment.fd, data, segment.end)
        return segment.end, len(data)

    def _write(self, segment: Segment, data: bytes | memoryview, offset: int) -> int | None:
        """Write `data` at `offset` (aligned) padded with zeros to the alignment: the bytes
        written, or None when direct I/O cannot be used here (nothing was written)."""
        if segment.direct_fd is None:
            try:
                segment.direct_fd = os.open(segment.path, WRITE_FILE | DIRECT)
            except OSError as exc:
                if exc.errno == errno.EINVAL:
                    self.enabled = False
                return None  # written buffered through the segment's own descriptor
        size = len(data)
        padded = align_up(size)
        buffer = self._buffer
        if buffer is None or len(buffer) < padded:
            if buffer is not None:
                buffer.close()
            buffer = mmap.mmap(-1, max(padded, 1024 * 1024))
        self._buffer = buffer if len(buffer) <= _KEEP_BUFFER else None
        try:
            buffer[:size] = data
            buffer[size:padded] = bytes(padded - size)
            with memoryview(buffer) as whole, whole[:padded] as view:
                try:
                    pwrite_all(segment.direct_fd, view, offset)
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
                    # Alignment refused (a device with bigger blocks): buffered from now on;
                    # the caller's buffered write covers whatever part was written.
                    self.enabled = False
                    return None
        finally:
            if self._buffer is None:
                buffer.close()
        return padded

    def close(self) -> None:
        if self._buffer is not None:
            self._buffer.close()
            self._buffer = None


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
    return Segment(fd, name, os.path.join(directory, name))


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
