"""The gallery: every generated image the gateway kept, as a file plus one row of metadata.

Files live in one directory (`<data dir>/gallery/` by default), named by 128 random bits and the
extension of their type, like the image store's links; rows live in the `gallery_images` table.
The directory has a size cap: after inserts the oldest rows (and their files) go until the
total fits again. Files are written before their rows and rows are deleted before their files,
so a row never points at a file that is not (yet, or any more) there on purpose; a file whose row
is missing is only ever an orphan on disk.

Evicted files are not unlinked but recycled: moved to `.recycle/` and later renamed to a new
image's name and overwritten. Overwriting a file whose pages are still in the page cache costs
about a quarter of creating a file, filling new pages and unlinking an old one (0.16 against
0.65 ms of CPU per MB image, measured here), and the gallery writes every delivered image. Files
an operator or user deletes are unlinked, never recycled. The pool holds at most
`RECYCLE_MAX_FILES` files per process (disk use beyond the cap; one eviction's worth at the
default cap). A recycled file is renamed away before it is overwritten, so `read` knows it got
the image it asked for when, after reading, the name still leads to the file it read.

With several gateway hosts sharing one database each host keeps its own files; a row whose file
is on another host shows as missing there.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import orjson
from sqlalchemy import (
    BigInteger,
    Connection,
    Engine,
    Index,
    Integer,
    String,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
)
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from bananagate.protocol.catalog import extension_for
from bananagate.store.schema import NAME_MAX_LENGTH, REQUEST_ID_MAX_LENGTH, Base, UTCDateTime

FILE_NAME_RE = re.compile(r"[0-9a-f]{32}\.(png|jpg|webp|heic|heif|gif)")
# Prompts can be long; the gallery keeps enough to recognise one.
PROMPT_MAX_CHARS = 4000
TEXT_MAX_CHARS = 4000
# Evicted files kept for reuse (see the module's docstring), per process.
RECYCLE_DIR = ".recycle"
RECYCLE_MAX_FILES = 64
_RECYCLED_NAME_RE = re.compile(r"[0-9a-f]{32}")


class GalleryImage(Base):
    """One kept image. `cost_nanos` is the whole request's charge (shared by its images)."""

    __tablename__ = "gallery_images"
    __table_args__ = (
        Index("ix_gallery_images_created_at", "created_at"),
        Index("ix_gallery_images_key_name", "key_name"),
        Index("ix_gallery_images_model", "model"),
        Index("ix_gallery_images_request_id", "request_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    request_id: Mapped[str] = mapped_column(String(REQUEST_ID_MAX_LENGTH))
    # Position among the request's images (an answer may carry several).
    image_index: Mapped[int] = mapped_column(Integer())
    key_id: Mapped[int | None] = mapped_column(Integer())
    key_name: Mapped[str] = mapped_column(String(NAME_MAX_LENGTH))
    model: Mapped[str] = mapped_column(String(100))
    prompt: Mapped[str] = mapped_column(Text())
    # The model's (non-thought) text parts, joined.
    text: Mapped[str | None] = mapped_column(Text())
    # JSON: aspect ratio, image size, input image count, streamed, channel, finish reason.
    params: Mapped[str] = mapped_column(Text())
    mime_type: Mapped[str] = mapped_column(String(64))
    file_name: Mapped[str] = mapped_column(String(64), unique=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger())
    cost_nanos: Mapped[int] = mapped_column(BigInteger())
    latency_ms: Mapped[int] = mapped_column(Integer())


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

    @classmethod
    def from_row(cls, row: GalleryImage) -> GalleryEntry:
        values = {name: getattr(row, name) for name in cls.__dataclass_fields__}
        values["params"] = dict(orjson.loads(row.params or "{}"))
        return cls(**values)

    @property
    def extension(self) -> str:
        return extension_for(self.mime_type)


_TABLE = cast(Table, GalleryImage.__table__)
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
_REUSED_FILE = os.O_WRONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view) :]


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
    """Rows of `gallery_images` plus the files they name (synchronous; call from a thread).

    `directory` may be set after construction (the store is opened before settings are known
    in some embeddings); nothing touches the disk until an image is added or opened.
    """

    def __init__(self, engine: Engine, directory: Path | None = None, max_bytes: int | None = None) -> None:
        self._engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        # SQLite and PostgreSQL hand back the new ids of a many-row INSERT.
        self._many_returning = bool(engine.dialect.insert_executemany_returning)
        self._delete_returning = bool(engine.dialect.delete_returning)
        self.directory = directory
        self.max_bytes = max_bytes
        # Bytes added since the total was last summed; None means "never summed yet".
        self._unchecked_bytes: int | None = None
        self._dir_made = False
        # Names of recycled files this process may reuse, oldest first. None until the pool's
        # directory was first listed (files of earlier runs are reused too).
        self._recycled: deque[str] | None = None
        self._recycle_lock = threading.Lock()  # the writer thread evicts; console threads too

    def configure(self, directory: Path, max_bytes: int | None) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._unchecked_bytes = None
        self._dir_made = False
        with self._recycle_lock:
            self._recycled = None

    def _session(self) -> Session:
        return self._sessions()

    def _dir(self) -> Path:
        if self.directory is None:
            raise RuntimeError("the gallery has no directory configured")
        if not self._dir_made:  # once, not per image: a mkdir is a stat and a failing syscall
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._dir_made = True
        return self.directory

    # --- writing ----------------------------------------------------------------------------

    def add(self, images: Sequence[NewImage], now: datetime | None = None) -> list[int]:
        """Write the files, then their rows; evict the oldest past the cap. Returns the new ids."""
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
        self._maybe_evict(sum(row["size_bytes"] for row in rows))
        return ids

    def write(self, image: NewImage, when: datetime) -> dict[str, Any] | None:
        """Write one image's file under a new random name and return its row's values (for
        `insert`), or None when its type is not one we can name and serve safely."""
        name = secrets.token_hex(16) + extension_for(image.mime_type)
        if FILE_NAME_RE.fullmatch(name) is None:
            return None
        self._write_file(name, image.data)
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
            "size_bytes": len(image.data),
            "cost_nanos": image.cost_nanos,
            "latency_ms": image.latency_ms,
        }

    def _write_file(self, name: str, data: bytes) -> None:
        # No temporary name and rename: nothing reads a file before its row exists, and the row
        # is inserted after the write returned. O_EXCL (or 128 random bits for a recycled file,
        # which `rename` would replace): a name is never reused.
        path = os.path.join(self._dir(), name)
        fd = self._reuse_recycled(path)
        if fd is None:
            try:
                fd = os.open(path, _NEW_FILE, 0o666)
            except FileNotFoundError:  # the directory was removed under us: make it again
                self._dir_made = False
                fd = os.open(os.path.join(self._dir(), name), _NEW_FILE, 0o666)
        try:
            _write_all(fd, memoryview(data))
            os.ftruncate(fd, len(data))  # a recycled file may have been longer
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        os.close(fd)

    # --- recycling evicted files -------------------------------------------------------------

    def _pool(self) -> deque[str]:
        """With the lock held: the pool, listed from disk on first use."""
        if self._recycled is None:
            self._recycled = deque()
            assert self.directory is not None
            with contextlib.suppress(OSError):
                names = [
                    n for n in os.listdir(self.directory / RECYCLE_DIR) if _RECYCLED_NAME_RE.fullmatch(n)
                ]
                for extra in names[RECYCLE_MAX_FILES:]:  # left by earlier runs beyond the bound
                    with contextlib.suppress(OSError):
                        os.unlink(self.directory / RECYCLE_DIR / extra)
                self._recycled.extend(names[:RECYCLE_MAX_FILES])
        return self._recycled

    def _reuse_recycled(self, path: str) -> int | None:
        """A recycled file renamed to `path` and opened for writing, or None if there is none."""
        assert self.directory is not None
        pool_dir = os.path.join(self.directory, RECYCLE_DIR)
        while True:
            with self._recycle_lock:
                pool = self._pool()
                if not pool:
                    return None
                name = pool.popleft()
            try:
                os.rename(os.path.join(pool_dir, name), path)
            except OSError:
                continue  # another process on this host took it first (or it is gone)
            try:
                return os.open(path, _REUSED_FILE)
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(path)
                return None

    def _recycle(self, name: str) -> None:
        """Move an evicted image's file to the pool (or unlink it when the pool is full)."""
        assert self.directory is not None
        path = self.directory / name
        with self._recycle_lock:
            pool = self._pool()
            full = len(pool) >= RECYCLE_MAX_FILES
        if not full:
            pooled = secrets.token_hex(16)
            try:
                try:
                    os.rename(path, self.directory / RECYCLE_DIR / pooled)
                except FileNotFoundError:  # the pool's directory is made on first use
                    (self.directory / RECYCLE_DIR).mkdir(mode=0o700, exist_ok=True)
                    os.rename(path, self.directory / RECYCLE_DIR / pooled)
            except OSError:
                pass  # unlinked below instead
            else:
                with self._recycle_lock:
                    self._pool().append(pooled)
                return
        with contextlib.suppress(OSError):
            path.unlink()

    def insert(self, groups: Sequence[Sequence[dict[str, Any]]]) -> list[list[int] | Exception]:
        """Rows from `write`, several requests' at once: one transaction for all of them. When it
        fails, each group is tried alone, so a bad one fails only itself; a group that fails
        has its files removed. Returns each group's new ids (in order) or its error."""
        try:
            with self._engine.begin() as connection:
                ids = self._insert(connection, [row for group in groups for row in group])
        except Exception as exc:
            if len(groups) == 1:
                self.discard(groups[0])
                return [exc]
            return [self.insert([group])[0] for group in groups]
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
            # One multi-row INSERT ... RETURNING. Asking for the ids in parameter order would
            # make SQLAlchemy fall back to a statement per row on SQLite; the unique file name
            # maps them back instead.
            statement = insert(_TABLE).returning(_TABLE.c.id, _TABLE.c.file_name)
            by_name = {name: int(i) for i, name in connection.execute(statement, rows)}
            return [by_name[row["file_name"]] for row in rows]
        ids: list[int] = []
        for row in rows:
            key = connection.execute(insert(_TABLE), row).inserted_primary_key
            assert key is not None
            ids.append(int(key[0]))
        return ids

    def discard(self, rows: Sequence[dict[str, Any]]) -> None:
        """Remove the files of rows that were written but will not be inserted."""
        if self.directory is None:
            return
        for row in rows:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.directory, row["file_name"]))

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
        """Delete the oldest images until the total size is within the cap; how many went."""
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
            return sum(self.delete(image_id, recycle=True) for image_id in victims)
        # One DELETE for all of them; RETURNING names exactly the rows this process removed
        # (another one may have got to some first: it removes those files).
        statement = delete(GalleryImage).where(GalleryImage.id.in_(victims)).returning(GalleryImage.file_name)
        with self._session() as session, session.begin():
            names = list(session.scalars(statement))
        for name in names:
            self._unlink(name, recycle=True)
        return len(names)

    def delete(self, image_id: int, *, recycle: bool = False) -> int:
        """Remove the row, then its file and thumbnail; 1 if this call removed it, else 0.
        A deleted image's file is unlinked; an evicted one's (`recycle`) may be reused."""
        with self._session() as session, session.begin():
            row = session.get(GalleryImage, image_id)
            if row is None:
                return 0
            name = row.file_name
            gone = session.execute(delete(GalleryImage).where(GalleryImage.id == image_id))
            if not gone.rowcount:  # type: ignore[attr-defined]
                return 0  # another process got there first; it removes the file
        self._unlink(name, recycle=recycle)
        return 1

    def _unlink(self, name: str, *, recycle: bool = False) -> None:
        """Remove a deleted row's file (or recycle an evicted one's) and its thumbnail."""
        if self.directory is not None and FILE_NAME_RE.fullmatch(name):
            if recycle:
                self._recycle(name)
            else:
                with contextlib.suppress(OSError):
                    (self.directory / name).unlink()
            with contextlib.suppress(OSError):
                self.thumb_path(name).unlink()

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

    def path(self, entry: GalleryEntry) -> Path | None:
        """The entry's file, if it is (still) on this host's disk."""
        if self.directory is None or FILE_NAME_RE.fullmatch(entry.file_name) is None:
            return None
        path = self.directory / entry.file_name
        return path if path.is_file() else None

    def read(self, entry: GalleryEntry) -> bytes | None:
        """The entry's bytes, or None when its file is not (or no longer) here. An image evicted
        while it was read may have had its file recycled for another: that read gives None."""
        path = self.path(entry)
        if path is None:
            return None
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
