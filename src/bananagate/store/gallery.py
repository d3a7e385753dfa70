"""The gallery: every generated image the gateway kept, as bytes in a segment file plus one row.

Images are appended to segment files (`<data dir>/gallery/segments/<128 random bits>.seg`, each up
to `SEGMENT_MAX_BYTES`); a row names its segment and the offset of its bytes there. Appending to
a file costs a sixth of the CPU of creating one per image (block allocation for a fresh inode:
~3 against ~0.5 ms per 1.1 MB image, measured here), and the gallery writes every delivered
image. Rows live in the `gallery_images` table; `file_name` stays the image's unique random name
(its thumbnail's name), and rows from before segments (no `segment`) name a file of their own.

The directory has a size cap: after inserts the oldest rows go until the total fits again, then
every segment no row names any more is freed. Bytes are written before their rows and rows are
deleted before their bytes, so a row never points at bytes that are not (yet, or any more) there
on purpose. An image a user deletes has its range overwritten with zeros at once.

Images from `DIRECT_FROM` (256 KiB) on are written with O_DIRECT where the filesystem allows
it, at offsets aligned to 4 KiB and padded with zeros to it (`segment_files.DirectWrites`): the
page cache is the kernel's most expensive part of keeping an image (~1-2 ms of CPU per 1 MB
buffered against ~0.1 ms direct, measured here), and the console reads few of them back.

A process keeps up to `SEGMENT_POOL_MAX` of its own freed segments for reuse: overwriting blocks
that are already allocated costs a third of appending (~0.15 ms per image). A freed segment is
renamed (to `<random>.free`) before anything overwrites it and gets a new random name when it is
reused, and names are never reused, so `read` knows it got the image it asked for when, after
reading, the segment's name still leads to the file it read. Zeroing a range checks the same
under a shared `flock`, which reuse waits for.

Segments are only ever appended to by the process that created them (O_EXCL, or a rename of its
own freed one), one open segment per repository at a time; a segment holding rows written but not
inserted yet stays. Several processes share a directory: a segment of another process is only
unlinked once it was left alone for `SEGMENT_GRACE_SECONDS` (a process moves on to a new segment
when its current one was idle for `SEGMENT_IDLE_SECONDS`, a fraction of that), so it is never
unlinked under its writer; other processes' segments are never reused.

With several gateway hosts sharing one database each host keeps its own files; a row whose
bytes are on another host shows as missing there.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import orjson
from sqlalchemy import Connection, Engine, Table, delete, func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from bananagate.protocol.catalog import extension_for
from bananagate.store.driver_sql import DriverInsert
from bananagate.store.gallery_schema import GalleryImage
from bananagate.store.schema import NAME_MAX_LENGTH, REQUEST_ID_MAX_LENGTH
from bananagate.store.segment_files import (
    CAN_LOCK,
    NEW_FILE,
    READ_FILE,
    DirectWrites,
    Segment,
    pread_all,
    reuse_segment,
    same_file,
    zero_range,
)

FILE_NAME_RE = re.compile(r"[0-9a-f]{32}\.(png|jpg|webp|heic|heif|gif)")
# Prompts can be long; the gallery keeps enough to recognise one.
PROMPT_MAX_CHARS = 4000
TEXT_MAX_CHARS = 4000
SEGMENT_DIR = "segments"
SEGMENT_NAME_RE = re.compile(r"[0-9a-f]{32}\.seg")
# A new image goes to a new segment when it would make the current one larger than this (an
# image larger than this gets a segment of its own).
SEGMENT_MAX_BYTES = 64 * 1024 * 1024
# A process moves on from a segment left idle this long; another process unlinks a segment no
# row names only once it was not written to for the (much longer) grace period.
SEGMENT_IDLE_SECONDS = 60.0
SEGMENT_GRACE_SECONDS = 600.0
# Segments of its own a process keeps for reuse once no row names them (renamed to `.free`).
SEGMENT_POOL_MAX = 2
FREE_NAME_RE = re.compile(r"[0-9a-f]{32}\.free")
# Files of the per-file layout's recycling pool (before segments), removed at eviction.
_OLD_RECYCLE_DIR = ".recycle"


@dataclass(frozen=True, slots=True)
class GalleryEntry:
    id: int
    created_at: datetime
    request_id: str
    image_index: int
    key_id: int | None
    key_name: str
    model: str
    prompt: str
    text: str | None
    params: dict[str, Any]
    mime_type: str
    file_name: str
    size_bytes: int
    cost_nanos: int
    latency_ms: int
    segment: str | None = None
    segment_offset: int | None = None

    @classmethod
    def from_row(cls, row: GalleryImage) -> GalleryEntry:
        values = {name: getattr(row, name) for name in cls.__dataclass_fields__}
        values["params"] = dict(orjson.loads(row.params or "{}"))
        return cls(**values)

    @property
    def extension(self) -> str:
        return extension_for(self.mime_type)


_TABLE = cast(Table, GalleryImage.__table__)
# The columns `write` gives a row (all but the id).
_ROW_FIELDS = tuple(column.name for column in _TABLE.columns if column.name != "id")


@dataclass(frozen=True, slots=True)
class NewImage:
    """An image to keep: its bytes and what is known about the request that made it."""

    data: bytes
    mime_type: str
    request_id: str
    image_index: int
    key_id: int | None
    key_name: str
    model: str
    prompt: str
    text: str | None = None
    params: dict[str, Any] | None = None
    cost_nanos: int = 0
    latency_ms: int = 0


class GalleryRepository:
    """Rows of `gallery_images` plus the segments holding their bytes (synchronous; call from a
    thread).

    `directory` may be set after construction (the store is opened before settings are known
    in some embeddings); nothing touches the disk until an image is added or opened.
    """

    def __init__(self, engine: Engine, directory: Path | None = None, max_bytes: int | None = None) -> None:
        self._engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        # SQLite (3.35 on) and PostgreSQL hand back the new ids of a multi-row INSERT.
        self._many_returning = bool(
            engine.dialect.insert_returning and engine.dialect.supports_multivalues_insert
        )
        self._driver_insert = DriverInsert(_TABLE, _ROW_FIELDS, engine.dialect)
        self._delete_returning = bool(engine.dialect.delete_returning)
        self.directory = directory
        self.max_bytes = max_bytes
        # Bytes added since the total was last summed; None means "never summed yet".
        self._unchecked_bytes: int | None = None
        self._dir_made = False
        # The writer thread appends and evicts, console threads delete: segment state is shared.
        self._lock = threading.Lock()
        self._segment: Segment | None = None  # the one this repository appends to
        # Rows written into a segment but not inserted or discarded yet, by segment: it stays.
        self._unsettled: Counter[str] = Counter()
        # Segments this process made and no longer appends to: free as soon as no row names them.
        self._left: set[str] = set()
        # Freed segments of this process waiting to be overwritten (names of `.free` files).
        self._pool: list[str] = []
        self._direct = DirectWrites()

    @property
    def writes_direct(self) -> bool:
        """Whether images from `DIRECT_FROM` on are written with O_DIRECT (False where the
        platform has none or the filesystem refused it)."""
        return self._direct.enabled

    def configure(self, directory: Path, max_bytes: int | None) -> None:
        with self._lock:
            self._leave_segment()
            self._pool = []  # left for the sweep (of this or another process) to unlink
            self.directory = directory
            self.max_bytes = max_bytes
            self._unchecked_bytes = None
            self._dir_made = False

    def close(self) -> None:
        """Stop appending to the current segment (the next write starts a new one), and give the
        freed segments kept for reuse back to the disk."""
        with self._lock:
            self._leave_segment()
            self._direct.close()
            pool, self._pool = self._pool, []
        for name in pool:
            self._unlink_segment(name)

    def _session(self) -> Session:
        return self._sessions()

    def _segments_dir(self) -> str:
        if self.directory is None:
            raise RuntimeError("the gallery has no directory configured")
        segments = self.directory / SEGMENT_DIR
        if not self._dir_made:  # once, not per segment: a mkdir is a stat and a failing syscall
            segments.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._dir_made = True
        return str(segments)

    def _segment_path(self, name: str) -> str | None:
        if self.directory is None or SEGMENT_NAME_RE.fullmatch(name) is None:
            return None
        return os.path.join(self.directory, SEGMENT_DIR, name)

    # --- writing ----------------------------------------------------------------------------

    def add(self, images: Sequence[NewImage], now: datetime | None = None) -> list[int]:
        """Write the images, then their rows; evict the oldest past the cap. Returns the new ids."""
        when = now or datetime.now(UTC)
        rows: list[dict[str, Any]] = []
        try:
            for image in images:
                row = self.write(image, when)
                if row is not None:
                    rows.append(row)
            with self._engine.begin() as connection:
                ids = self._insert(connection, rows)
        except BaseException:
            self.discard(rows)  # no row will name them
            raise
        self._settle(rows)
        self._maybe_evict(sum(row["size_bytes"] for row in rows))
        return ids

    def write(self, image: NewImage, when: datetime) -> dict[str, Any] | None:
        """Append one image to the current segment and return its row's values (for `insert`,
        or `discard` when it will not be inserted), or None when its type is not one we can
        name and serve safely."""
        name = secrets.token_hex(16) + extension_for(image.mime_type)
        if FILE_NAME_RE.fullmatch(name) is None:
            return None
        segment, offset = self._append(image.data)
        return {
            "created_at": when,
            "request_id": image.request_id[:REQUEST_ID_MAX_LENGTH],
            "image_index": image.image_index,
            "key_id": image.key_id,
            "key_name": image.key_name[:NAME_MAX_LENGTH],
            "model": image.model[:100],
            "prompt": image.prompt[:PROMPT_MAX_CHARS],
            "text": image.text[:TEXT_MAX_CHARS] if image.text else None,
            "params": orjson.dumps(image.params or {}).decode(),
            "mime_type": image.mime_type[:64],
            "file_name": name,
            "segment": segment,
            "segment_offset": offset,
            "size_bytes": len(image.data),
            "cost_nanos": image.cost_nanos,
            "latency_ms": image.latency_ms,
        }

    def _append(self, data: bytes) -> tuple[str, int]:
        """Append `data` to this repository's segment (a new one when it is full or was idle):
        (segment, offset). The bytes count as unsettled until `insert` or `discard`."""
        with self._lock:
            now = time.monotonic()
            segment = self._segment
            if segment is not None and (
                (segment.end and segment.end + len(data) > SEGMENT_MAX_BYTES)
                or now - segment.written_at > SEGMENT_IDLE_SECONDS
            ):
                self._leave_segment()
                segment = None
            if segment is None:
                segment = self._segment = self._open_segment()
            try:
                offset, written = self._direct.append(segment, data)
            except BaseException:
                self._leave_segment()  # its end is unknown now: nothing more goes into it
                raise
            segment.end = offset + written
            segment.written_at = now
            self._unsettled[segment.name] += 1
            return segment.name, offset

    def _open_segment(self) -> Segment:
        """With the lock held: a new segment, created by this process alone (O_EXCL), or one of
        its freed ones under a new name, to be overwritten."""
        name = secrets.token_hex(16) + ".seg"
        while self._pool:
            reused = self._reuse(self._pool.pop(), name)
            if reused is not None:
                return reused
        path = os.path.join(self._segments_dir(), name)
        try:
            fd = os.open(path, NEW_FILE, 0o666)
        except FileNotFoundError:  # the directory was removed under us: make it again
            self._dir_made = False
            self._segments_dir()
            fd = os.open(path, NEW_FILE, 0o666)
        return Segment(fd, name, path)

    def _reuse(self, free: str, name: str) -> Segment | None:
        """With the lock held: the freed segment `free` renamed to `name`, or None if it is gone.

        Its old name led nowhere since it was freed, so reads of its images fail their check
        and no zeroing starts on it; an exclusive lock waits for a zeroing that started before
        (`_zero`) to finish. A fresh mtime keeps other processes' sweeps off it."""
        assert self.directory is not None
        return reuse_segment(os.path.join(self.directory, SEGMENT_DIR), free, name)

    def _leave_segment(self) -> None:
        """With the lock held: stop appending to the current segment."""
        segment, self._segment = self._segment, None
        if segment is not None:
            segment.close()
            self._left.add(segment.name)

    def _settle(self, rows: Sequence[dict[str, Any]]) -> None:
        """The rows were inserted or discarded: their segments may go once no row names them."""
        with self._lock:
            for row in rows:
                name = row.get("segment")
                if name is not None and name in self._unsettled:
                    self._unsettled[name] -= 1
                    if self._unsettled[name] <= 0:
                        del self._unsettled[name]

    def insert(self, groups: Sequence[Sequence[dict[str, Any]]]) -> list[list[int] | Exception]:
        """Rows from `write`, several requests' at once: one transaction for all of them. When it
        fails, each group is tried alone, so a bad one fails only itself; a group that fails
        has its bytes discarded. Returns each group's new ids (in order) or its error."""
        try:
            with self._engine.begin() as connection:
                ids = self._insert(connection, [row for group in groups for row in group])
        except Exception as exc:
            if len(groups) == 1:
                self.discard(groups[0])
                return [exc]
            return [self.insert([group])[0] for group in groups]
        for group in groups:
            self._settle(group)
        out: list[list[int] | Exception] = []
        at = 0
        for group in groups:
            out.append(ids[at : at + len(group)])
            at += len(group)
        return out

    def _insert(self, connection: Connection, rows: list[dict[str, Any]]) -> list[int]:
        if not rows:
            return []
        if self._many_returning:
            # The driver's own SQL (`store.driver_sql`); rows come back in no set order, and
            # their unique file names map them to theirs.
            values = [[row.get(name) for name in _ROW_FIELDS] for row in rows]
            returned = self._driver_insert.returning(connection, values, ("id", "file_name"))
            by_name = {name: int(i) for i, name in (tuple(r) for r in returned)}
            return [by_name[row["file_name"]] for row in rows]
        ids: list[int] = []
        for row in rows:
            key = connection.execute(insert(_TABLE), row).inserted_primary_key
            assert key is not None
            ids.append(int(key[0]))
        return ids

    def discard(self, rows: Sequence[dict[str, Any]]) -> None:
        """Zero the bytes of rows that were written but will not be inserted (eviction unlinks
        their segment once no inserted row is left in it)."""
        for row in rows:
            if row.get("segment") is not None:
                self._zero(row["segment"], row["segment_offset"], row["size_bytes"])
            elif self.directory is not None and FILE_NAME_RE.fullmatch(row["file_name"]):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.directory, row["file_name"]))
        self._settle(rows)

    def _zero(self, segment: str, offset: int | None, size: int) -> None:
        """Overwrite an image's range of its segment with zeros (if the segment is still here)."""
        path = self._segment_path(segment)
        if path is not None and offset is not None:
            zero_range(path, offset, size)

    def note_added(self, added: int) -> int:
        """Account for `added` bytes kept by `insert`; evicts when due. How many images went."""
        return self._maybe_evict(added)

    def _maybe_evict(self, added: int) -> int:
        # Summing every row on every add costs more than the image write itself once the gallery
        # is large: sum again only after ~2 % of the cap has been added (and at the first add).
        if self.max_bytes is None:
            return 0
        if self._unchecked_bytes is not None:
            self._unchecked_bytes += added
            if self._unchecked_bytes < max(self.max_bytes // 50, 1):
                return 0
        removed = self.evict()
        self._unchecked_bytes = 0
        return removed

    def evict(self) -> int:
        """Delete the oldest images until the total size is within the cap, then the segments no
        row names any more; how many images went."""
        if self.max_bytes is None:
            return 0
        with self._session() as session:
            total = int(session.scalar(select(func.coalesce(func.sum(GalleryImage.size_bytes), 0))) or 0)
            if total <= self.max_bytes:
                return 0
            oldest = session.execute(
                select(GalleryImage.id, GalleryImage.size_bytes).order_by(GalleryImage.id).limit(1000)
            ).all()
        victims: list[int] = []
        for image_id, size in oldest:
            if total <= self.max_bytes:
                break
            victims.append(int(image_id))
            total -= int(size)
        if not self._delete_returning:
            removed = sum(self.delete(image_id, evicted=True) for image_id in victims)
        else:
            # One DELETE for all of them; RETURNING names exactly the rows this process removed
            # (another one may have got to some first: it removes those files).
            statement = (
                delete(GalleryImage)
                .where(GalleryImage.id.in_(victims))
                .returning(GalleryImage.file_name, GalleryImage.segment)
            )
            with self._session() as session, session.begin():
                gone = session.execute(statement).all()
            for name, segment in gone:
                self._unlink(name, own_file=segment is None)
            removed = len(gone)
        self.sweep()
        return removed

    def delete(self, image_id: int, *, evicted: bool = False) -> int:
        """Remove the row, then its bytes and thumbnail; 1 if this call removed it, else 0. A
        deleted image's range is zeroed at once (and its segment unlinked if that was its last
        image); an evicted one's (`evicted`) goes with its segment."""
        with self._session() as session, session.begin():
            row = session.get(GalleryImage, image_id)
            if row is None:
                return 0
            name, segment, offset, size = row.file_name, row.segment, row.segment_offset, row.size_bytes
            gone = session.execute(delete(GalleryImage).where(GalleryImage.id == image_id))
            if not gone.rowcount:  # type: ignore[attr-defined]
                return 0  # another process got there first; it removes the bytes
        if segment is not None and not evicted:
            self._zero(segment, offset, size)
            self._free([segment])
        self._unlink(name, own_file=segment is None)
        return 1

    def _unlink(self, name: str, *, own_file: bool) -> None:
        """Remove a deleted row's thumbnail, and its file when it had one (before segments)."""
        if self.directory is not None and FILE_NAME_RE.fullmatch(name):
            if own_file:
                with contextlib.suppress(OSError):
                    (self.directory / name).unlink()
            with contextlib.suppress(OSError):
                self.thumb_path(name).unlink()

    def sweep(self) -> int:
        """Free the segments on disk that no row names (see `_free`); how many went. Files of
        the per-file layout's recycling pool go too."""
        if self.directory is None:
            return 0
        try:
            names = os.listdir(self.directory / SEGMENT_DIR)
        except OSError:
            names = []
        freed = self._free(names)
        # Freed segments another process (or an earlier run) kept for reuse and then left alone.
        now = time.time()
        with self._lock:
            pool = set(self._pool)
        for name in names:
            if FREE_NAME_RE.fullmatch(name) and name not in pool:
                path = os.path.join(self.directory, SEGMENT_DIR, name)
                with contextlib.suppress(OSError):
                    if now - os.stat(path).st_mtime >= SEGMENT_GRACE_SECONDS:
                        os.unlink(path)
        old_pool = self.directory / _OLD_RECYCLE_DIR
        with contextlib.suppress(OSError):
            for name in os.listdir(old_pool):
                with contextlib.suppress(OSError):
                    os.unlink(old_pool / name)
            old_pool.rmdir()
        return freed

    def _free(self, names: Iterable[str]) -> int:
        """Free those segments of `names` that no row names and that nobody may still append
        to or insert rows for: this repository's own once it has left them and settled their
        rows (kept for reuse while the pool has room, else unlinked), another process's (or an
        earlier run's) once untouched for the grace period (unlinked)."""
        now = time.time()
        candidates: list[str] = []
        with self._lock:
            current = self._segment.name if self._segment is not None else None
            for name in set(names):
                path = self._segment_path(name)
                if path is None or name == current or name in self._unsettled:
                    continue
                if name not in self._left:
                    try:
                        modified = os.stat(path).st_mtime
                    except OSError:
                        continue
                    if now - modified < SEGMENT_GRACE_SECONDS:
                        continue
                candidates.append(name)
        if not candidates:
            return 0
        named: set[str | None] = set()
        with self._session() as session:
            for at in range(0, len(candidates), 500):
                chunk = candidates[at : at + 500]
                query = select(GalleryImage.segment).where(GalleryImage.segment.in_(chunk)).distinct()
                named.update(session.scalars(query))
        freed = 0
        for name in candidates:
            if name in named:
                continue
            with self._lock:
                mine = name in self._left
                self._left.discard(name)
                if mine and CAN_LOCK and len(self._pool) < SEGMENT_POOL_MAX:
                    free = self._keep_for_reuse(name)
                    if free is not None:
                        self._pool.append(free)
                        freed += 1
                        continue
            freed += self._unlink_segment(name)
        return freed

    def _keep_for_reuse(self, name: str) -> str | None:
        """Rename a freed segment out of the way (its images' reads fail their check from now
        on): the `.free` name it has in the pool, or None if that failed."""
        assert self.directory is not None
        directory = os.path.join(self.directory, SEGMENT_DIR)
        free = secrets.token_hex(16) + ".free"
        try:
            os.rename(os.path.join(directory, name), os.path.join(directory, free))
            os.utime(os.path.join(directory, free))  # other processes' sweeps keep off it
        except OSError:
            return None
        return free

    def _unlink_segment(self, name: str) -> int:
        """Unlink a segment (or a `.free` one); 1 if this call removed it."""
        assert self.directory is not None
        try:
            os.unlink(os.path.join(self.directory, SEGMENT_DIR, name))
        except OSError:
            return 0  # another process freed it first (or it cannot be: the sweep tries again)
        return 1

    # --- reading ----------------------------------------------------------------------------

    def get(self, image_id: int) -> GalleryEntry | None:
        with self._session() as session:
            row = session.get(GalleryImage, image_id)
            return None if row is None else GalleryEntry.from_row(row)

    def by_request(self, request_id: str) -> list[GalleryEntry]:
        query = (
            select(GalleryImage)
            .where(GalleryImage.request_id == request_id[:REQUEST_ID_MAX_LENGTH])
            .order_by(GalleryImage.image_index)
        )
        with self._session() as session:
            return [GalleryEntry.from_row(row) for row in session.scalars(query)]

    def page(
        self,
        *,
        key_name: str | None = None,
        model: str | None = None,
        before_id: int | None = None,
        limit: int = 60,
    ) -> list[GalleryEntry]:
        """Newest first; `before_id` pages to older images."""
        query = select(GalleryImage).order_by(GalleryImage.id.desc()).limit(limit)
        if key_name:
            query = query.where(GalleryImage.key_name == key_name)
        if model:
            query = query.where(GalleryImage.model == model)
        if before_id is not None:
            query = query.where(GalleryImage.id < before_id)
        with self._session() as session:
            return [GalleryEntry.from_row(row) for row in session.scalars(query)]

    def facets(self) -> tuple[list[str], list[str]]:
        """The key names and models that have images (for the filter menus)."""
        with self._session() as session:
            keys = session.scalars(select(GalleryImage.key_name).distinct().order_by(GalleryImage.key_name))
            models = session.scalars(select(GalleryImage.model).distinct().order_by(GalleryImage.model))
            return list(keys), list(models)

    def totals(self) -> tuple[int, int]:
        """(images, bytes) kept."""
        query = select(func.count(GalleryImage.id), func.coalesce(func.sum(GalleryImage.size_bytes), 0))
        with self._session() as session:
            count, size = session.execute(query).one()
        return int(count or 0), int(size or 0)

    def read(self, entry: GalleryEntry) -> bytes | None:
        """The entry's bytes, or None when they are not (or no longer) here. An image evicted
        while it was read may have had its segment reused for others: that read gives None."""
        if self.directory is None:
            return None
        if entry.segment is None:
            return self._read_file(entry)
        path = self._segment_path(entry.segment)
        if path is None or entry.segment_offset is None:
            return None
        try:
            fd = os.open(path, READ_FILE)
        except OSError:
            return None
        try:
            data = pread_all(fd, entry.size_bytes, entry.segment_offset)
            # A freed segment is renamed before it is overwritten with other images: when the
            # name still leads to the file that was read, the bytes are this image's.
            return data if data is not None and same_file(fd, path) else None
        except OSError:
            return None
        finally:
            os.close(fd)

    def _read_file(self, entry: GalleryEntry) -> bytes | None:
        """An image of the per-file layout (written before segments). Its file may have been
        recycled for another image by a gateway of that version: then the name leads to another
        file after reading, and the read gives None."""
        if self.directory is None or FILE_NAME_RE.fullmatch(entry.file_name) is None:
            return None
        path = self.directory / entry.file_name
        try:
            with open(path, "rb") as file:
                data = file.read()
                same = os.fstat(file.fileno()).st_ino == os.stat(path).st_ino
        except OSError:
            return None
        return data if same and len(data) == entry.size_bytes else None

    def thumb_path(self, file_name: str) -> Path:
        assert self.directory is not None
        return self.directory / "thumbs" / (Path(file_name).stem + ".jpg")
