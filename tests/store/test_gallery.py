"""The gallery repository on SQLite and PostgreSQL: several requests' rows in one INSERT with
their ids in order, a bad group failing alone, eviction in one DELETE; images appended to
segment files, read back byte for byte, never another image's bytes; segments unlinked with
their last row, deleted images zeroed, rows of the per-file layout still served; several
threads and processes writing into one directory."""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import hashlib
import mmap
import os
import secrets
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from sqlalchemy import event

import bananagate.store.gallery as gallery_module
import bananagate.store.segment_files as segment_files
from bananagate.store import GalleryEntry, GalleryRepository, NewImage, Store


def image(index: int, size: int = 100, mime: str = "image/png") -> NewImage:
    return NewImage(
        data=bytes([index % 256]) * size,
        mime_type=mime,
        request_id=f"rid-{index}",
        image_index=0,
        key_id=1,
        key_name="alice",
        model="gemini-2.5-flash-image",
        prompt=f"prompt {index}",
        params={"finish_reason": "STOP"},
        cost_nanos=39_000_000,
    )


def statements(store: Store) -> list[str]:
    seen: list[str] = []
    event.listen(store.engine, "before_cursor_execute", lambda c, cur, statement, *a: seen.append(statement))
    return seen


def segments(directory: Path) -> set[str]:
    return {p.name for p in (directory / gallery_module.SEGMENT_DIR).glob("*.seg")}


def pooled(directory: Path) -> set[str]:
    """Freed segments kept for reuse."""
    return {p.name for p in (directory / gallery_module.SEGMENT_DIR).glob("*.free")}


def segment_bytes(directory: Path, name: str | None) -> bytes:
    assert name is not None
    return (directory / gallery_module.SEGMENT_DIR / name).read_bytes()


def test_insert_keeps_several_requests_in_one_statement(store: Store, data_dir: Path) -> None:
    gallery = store.gallery
    gallery.configure(data_dir / "gallery", max_bytes=None)
    when = datetime.now(UTC)
    groups: list[list[dict[str, Any]]] = [[], [], []]
    for i in range(6):
        row = gallery.write(image(i), when)
        assert row is not None
        groups[i % 3].append(row)
    seen = statements(store)
    result = gallery.insert(groups)
    assert sum(s.lstrip().upper().startswith("INSERT INTO GALLERY_IMAGES") for s in seen) == 1
    assert all(isinstance(ids, list) for ids in result)
    for group, ids in zip(groups, result, strict=True):
        assert isinstance(ids, list)
        entries = [gallery.get(i) for i in ids]
        assert [e.file_name for e in entries if e] == [row["file_name"] for row in group]
    assert gallery.totals() == (6, 600)
    assert gallery.insert([[], []]) == [[], []]


def test_a_batch_past_the_rows_per_statement_goes_in_several_statements(
    store: Store, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows beyond `MAX_ROWS_PER_STATEMENT` go in further INSERTs, ids still in row order."""
    import bananagate.store.driver_sql as driver_sql

    monkeypatch.setattr(driver_sql, "MAX_ROWS_PER_STATEMENT", 2)
    gallery = store.gallery
    gallery.configure(data_dir / "gallery", max_bytes=None)
    when = datetime.now(UTC)
    groups = [
        [row for row in (gallery.write(image(i), when) for i in range(j, j + 3)) if row] for j in (0, 3)
    ]
    seen = statements(store)
    result = gallery.insert(groups)
    assert sum(s.lstrip().upper().startswith("INSERT INTO GALLERY_IMAGES") for s in seen) == 3  # 2 + 2 + 2
    for group, ids in zip(groups, result, strict=True):
        assert isinstance(ids, list) and len(ids) == 3
        assert [e.file_name for e in map(gallery.get, ids) if e] == [row["file_name"] for row in group]
    assert gallery.totals() == (6, 600)


def test_without_multi_row_returning_rows_go_one_by_one(store: Store, data_dir: Path) -> None:
    """A database without multi-row INSERT ... RETURNING (SQLite before 3.35) gets a statement
    per row, with the same ids and rows."""
    gallery = store.gallery
    gallery.configure(data_dir / "gallery", max_bytes=None)
    gallery._many_returning = False
    when = datetime.now(UTC)
    groups = [
        [row for row in (gallery.write(image(i), when) for i in range(j, j + 2)) if row] for j in (0, 2)
    ]
    seen = statements(store)
    result = gallery.insert(groups)
    assert sum(s.lstrip().upper().startswith("INSERT INTO GALLERY_IMAGES") for s in seen) == 4
    for group, ids in zip(groups, result, strict=True):
        assert isinstance(ids, list)
        assert [e.file_name for e in map(gallery.get, ids) if e] == [row["file_name"] for row in group]


def test_rows_are_stored_exactly_as_the_orm_stores_them(store: Store, data_dir: Path) -> None:
    """The batch INSERT is the driver's own SQL: every column must read back as the same values
    inserted through SQLAlchemy's statement execution (dates, NULLs, text, big integers)."""
    gallery = store.gallery
    gallery.configure(data_dir / "gallery", max_bytes=None)
    when = datetime(2026, 12, 6, 13, 45, 7, 123456, tzinfo=UTC)
    rows = []
    for i, text in enumerate((None, "a caption ✓")):
        row = gallery.write(dataclasses.replace(image(i), text=text, cost_nanos=2**40 + i), when)
        assert row is not None
        rows.append(row)
    [ids] = gallery.insert([rows[:1]])
    assert isinstance(ids, list)
    twin = {**rows[1], "file_name": rows[0]["file_name"][:-4] + "0.png"}
    with store.engine.begin() as connection:
        orm_id = connection.execute(sqlalchemy.insert(gallery_module.GalleryImage), twin).inserted_primary_key
    assert orm_id is not None
    [ids2] = gallery.insert([rows[1:]])
    assert isinstance(ids2, list)
    columns = [c for c in gallery_module.GalleryImage.__table__.columns if c.name not in ("id", "file_name")]
    with store.engine.connect() as connection:
        got = {
            r.id: r
            for r in connection.execute(
                sqlalchemy.select(gallery_module.GalleryImage.__table__).where(
                    gallery_module.GalleryImage.id.in_([ids[0], ids2[0], orm_id[0]])
                )
            )
        }
    raw, orm = got[ids2[0]], got[orm_id[0]]
    assert [raw._mapping[c.name] for c in columns] == [orm._mapping[c.name] for c in columns]
    # And as the database holds them (SQLite keeps dates as text: the same text, not just a
    # value that parses back the same).
    names = ", ".join(c.name for c in columns)
    with store.engine.connect() as connection:
        stored = connection.exec_driver_sql(
            f"SELECT {names} FROM gallery_images WHERE id IN ({ids2[0]}, {orm_id[0]}) ORDER BY id"
        ).all()
    assert stored[0] == stored[1]
    first = got[ids[0]]
    assert first.created_at == when and first.text is None and first.cost_nanos == 2**40
    assert raw.text == "a caption ✓" and raw.segment_offset == rows[1]["segment_offset"]


def test_a_bad_group_fails_alone_and_takes_its_bytes(store: Store, data_dir: Path) -> None:
    gallery = store.gallery
    gallery.configure(data_dir / "gallery", max_bytes=None)
    when = datetime.now(UTC)
    good = [gallery.write(image(1), when), gallery.write(image(2), when)]
    bad = gallery.write(image(3), when)
    assert bad is not None and all(good)
    bad["prompt"] = None  # NOT NULL: the database refuses this row
    result = gallery.insert([[good[0]], [bad], [good[1]]])  # type: ignore[list-item]
    assert isinstance(result[0], list) and isinstance(result[2], list)
    assert isinstance(result[1], Exception)
    assert gallery.totals() == (2, 200)
    # The refused row's range is zeroed; the others read back.
    assert segment_bytes(data_dir / "gallery", bad["segment"]) == bytes([1]) * 100 + bytes([2]) * 100 + bytes(
        100
    )
    for ids, data in ((result[0], bytes([1]) * 100), (result[2], bytes([2]) * 100)):
        assert isinstance(ids, list)
        assert gallery.read(entry_of(gallery, ids[0])) == data


def test_unnamed_types_are_skipped_and_add_returns_ids(store: Store, data_dir: Path) -> None:
    gallery = store.gallery
    gallery.configure(data_dir / "gallery", max_bytes=None)
    ids = gallery.add([image(1), image(2, mime="text/plain"), image(3, mime="image/webp")])
    assert [e.mime_type for e in (gallery.get(i) for i in ids) if e] == ["image/png", "image/webp"]


def test_eviction_deletes_the_oldest_in_one_statement(store: Store, data_dir: Path) -> None:
    gallery = store.gallery
    gallery.configure(data_dir / "gallery", max_bytes=None)
    ids = [gallery.add([image(i)])[0] for i in range(6)]
    thumb = gallery.thumb_path(gallery.get(ids[0]).file_name)  # type: ignore[union-attr]
    thumb.parent.mkdir()
    thumb.write_bytes(b"jpeg")
    gallery.configure(data_dir / "gallery", max_bytes=350)
    seen = statements(store)
    assert gallery.evict() == 3
    assert sum(s.lstrip().upper().startswith("DELETE FROM GALLERY_IMAGES") for s in seen) == 1
    assert [e.id for e in gallery.page()] == ids[:2:-1]
    assert not thumb.exists()
    assert [gallery.read(e) for e in gallery.page()] == [bytes([i]) * 100 for i in (5, 4, 3)]
    assert gallery.evict() == 0


@pytest.mark.parametrize("size", [10, 4096, 64 * 1024, 1_050_001, 3 * 4096 * 256])
def test_segments_hold_the_exact_bytes(store: Store, data_dir: Path, size: int) -> None:
    gallery, directory = store.gallery, data_dir / "gallery"
    gallery.configure(directory, max_bytes=None)
    data = [os.urandom(size), os.urandom(size)]
    ids = gallery.add([NewImage(d, "image/png", "rid", 0, 1, "alice", "m", "p") for d in data])
    entries = [entry_of(gallery, image_id) for image_id in ids]
    assert [gallery.read(e) for e in entries] == data and entries[0].size_bytes == size
    # Appended one after the other to one segment, which holds nothing else; a big image
    # written directly starts at an aligned offset and is padded with zeros to the next.
    direct = size >= segment_files.DIRECT_FROM and gallery.writes_direct
    step = segment_files.align_up(size) if direct else size
    name = entries[0].segment
    assert [(e.segment, e.segment_offset) for e in entries] == [(name, 0), (name, step)]
    padding = bytes(step - size)
    assert segments(directory) == {name}
    assert segment_bytes(directory, name) == data[0] + padding + data[1] + padding


def entry_of(gallery: GalleryRepository, image_id: int) -> GalleryEntry:
    entry = gallery.get(image_id)
    assert entry is not None
    return entry


def test_a_full_segment_is_left_for_a_new_one(
    store: Store, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gallery_module, "SEGMENT_MAX_BYTES", 250)
    gallery, directory = store.gallery, data_dir / "gallery"
    gallery.configure(directory, max_bytes=None)
    entries = [entry_of(gallery, i) for i in gallery.add([image(i) for i in range(5)])]
    assert [e.segment_offset for e in entries] == [0, 100, 0, 100, 0]
    names = [e.segment for e in entries]
    assert names[0] == names[1] != names[2] == names[3] != names[4]
    assert segments(directory) == set(names)
    assert segment_bytes(directory, names[2]) == bytes([2]) * 100 + bytes([3]) * 100
    # An image larger than a segment gets one of its own.
    big = entry_of(gallery, gallery.add([image(9, size=1000)])[0])
    assert big.segment not in names and big.segment_offset == 0
    assert gallery.read(big) == bytes([9]) * 1000
    assert [gallery.read(e) for e in entries] == [bytes([i]) * 100 for i in range(5)]


def test_a_writer_moves_on_from_an_idle_segment(
    store: Store, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gallery_module, "SEGMENT_IDLE_SECONDS", 0.0)
    gallery = store.gallery
    gallery.configure(data_dir / "gallery", max_bytes=None)
    first, second = (entry_of(gallery, gallery.add([image(i)])[0]) for i in (1, 2))
    assert first.segment != second.segment and second.segment_offset == 0


def test_a_segment_goes_with_its_last_row(
    store: Store, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gallery_module, "SEGMENT_MAX_BYTES", 250)
    gallery, directory = store.gallery, data_dir / "gallery"
    gallery.configure(directory, max_bytes=None)
    ids = [gallery.add([image(i)])[0] for i in range(5)]  # segments: (0, 1), (2, 3), (4, open)
    _, second, third = (entry_of(gallery, ids[i]).segment for i in (0, 2, 4))
    gallery.max_bytes = 250
    assert gallery.evict() == 3  # all of the first segment's images, one of the second's
    assert segments(directory) == {second, third} and len(pooled(directory)) == 1
    assert [gallery.read(entry_of(gallery, i)) for i in ids[3:]] == [bytes([3]) * 100, bytes([4]) * 100]
    gallery.max_bytes = 0
    assert gallery.evict() == 2
    assert segments(directory) == {third}  # still being appended to: it stays
    assert len(pooled(directory)) == 2
    monkeypatch.setattr(gallery_module, "SEGMENT_POOL_MAX", 0)  # the pool is full: unlinked
    gallery.close()  # as at shutdown: the next sweep takes it, the pool is unlinked
    assert pooled(directory) == set()
    assert gallery.sweep() == 1 and segments(directory) == set() and pooled(directory) == set()


def test_deleting_an_image_zeroes_its_range(
    store: Store, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gallery_module, "SEGMENT_MAX_BYTES", 250)
    gallery, directory = store.gallery, data_dir / "gallery"
    gallery.configure(directory, max_bytes=None)
    ids = gallery.add([image(i) for i in (1, 2, 3)])  # segments: (1, 2), (3, open)
    first, second, third = (entry_of(gallery, i) for i in ids)
    assert gallery.delete(ids[0]) == 1 and gallery.delete(ids[0]) == 0
    assert segment_bytes(directory, first.segment) == bytes(100) + bytes([2]) * 100
    assert gallery.read(second) == bytes([2]) * 100
    # A segment this process has left goes with its last image.
    assert gallery.delete(ids[1]) == 1
    assert segments(directory) == {third.segment} and gallery.read(second) is None
    # The one it appends to stays, zeroed.
    assert gallery.delete(ids[2]) == 1
    assert segment_bytes(directory, third.segment) == bytes(100)


def test_discarded_rows_leave_no_readable_bytes(store: Store, data_dir: Path) -> None:
    gallery, directory = store.gallery, data_dir / "gallery"
    gallery.configure(directory, max_bytes=None)
    when = datetime.now(UTC)
    rows = [gallery.write(image(i), when) for i in (1, 2)]
    assert rows[0] is not None and rows[1] is not None
    gallery.discard([row for row in rows if row])
    assert segment_bytes(directory, rows[0]["segment"]) == bytes(200)
    gallery.close()
    assert gallery.sweep() == 1 and segments(directory) == set()


def test_a_segment_waits_for_the_rows_written_into_it(
    store: Store, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gallery_module, "SEGMENT_MAX_BYTES", 150)
    gallery, directory = store.gallery, data_dir / "gallery"
    gallery.configure(directory, max_bytes=None)
    when = datetime.now(UTC)
    rows = [row for row in (gallery.write(image(i), when) for i in (1, 2)) if row]
    assert rows[0]["segment"] != rows[1]["segment"]  # the first segment is left, the rows not in
    gallery.close()
    assert gallery.sweep() == 0  # both wait for their rows
    (ids,) = gallery.insert([rows])
    assert isinstance(ids, list) and gallery.sweep() == 0  # named by rows now
    assert [gallery.read(entry_of(gallery, i)) for i in ids] == [bytes([1]) * 100, bytes([2]) * 100]


def test_a_read_never_returns_another_images_bytes(
    store: Store, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gallery, directory = store.gallery, data_dir / "gallery"
    gallery.configure(directory, max_bytes=None)
    first = entry_of(gallery, gallery.add([image(1, size=1000)])[0])
    assert gallery.read(first) == bytes([1]) * 1000
    assert gallery.read(dataclasses.replace(first, segment_offset=500)) is None  # past the end
    assert gallery.read(dataclasses.replace(first, segment="../x.seg")) is None
    # The image is evicted while it is being read, its segment unlinked, and others written.
    real_pread = os.pread

    def evicted_meanwhile(fd: int, size: int, offset: int) -> bytes:
        monkeypatch.setattr(gallery_module.os, "pread", real_pread)
        gallery.max_bytes = 0
        assert gallery.evict() == 1
        gallery.close()
        assert gallery.sweep() == 1
        gallery.max_bytes = None
        gallery.add([image(2, size=1000), image(3, size=1000)])
        return real_pread(fd, size, offset)

    monkeypatch.setattr(gallery_module.os, "pread", evicted_meanwhile)
    # Its segment was freed and reused for image 2: the name it opened leads nowhere now.
    assert gallery.read(first) is None
    assert gallery.read(first) is None  # and afterwards
    assert pooled(directory) == set()
    assert [gallery.read(e) for e in reversed(gallery.page())] == [bytes([2]) * 1000, bytes([3]) * 1000]


def test_freed_segments_are_overwritten_under_a_new_name(
    store: Store, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gallery_module, "SEGMENT_MAX_BYTES", 250)
    gallery, directory = store.gallery, data_dir / "gallery"
    gallery.configure(directory, max_bytes=None)
    ids = [gallery.add([image(i)])[0] for i in range(3)]  # segments: (0, 1), (2, open)
    old = [entry_of(gallery, i) for i in ids]
    inode = (directory / gallery_module.SEGMENT_DIR / str(old[0].segment)).stat().st_ino
    gallery.max_bytes = 100
    assert gallery.evict() == 2 and len(pooled(directory)) == 1
    gallery.max_bytes = None
    # Image 3 fills the open segment, image 4 goes to the freed one, renamed and overwritten.
    new = [entry_of(gallery, gallery.add([image(i, size=150)])[0]) for i in (3, 4)]
    assert new[0].segment == old[2].segment and new[1].segment not in {e.segment for e in old}
    assert new[1].segment_offset == 0 and pooled(directory) == set()
    assert (directory / gallery_module.SEGMENT_DIR / str(new[1].segment)).stat().st_ino == inode
    assert segment_bytes(directory, new[1].segment)[:200] == bytes([4]) * 150 + bytes([1]) * 50
    assert [gallery.read(e) for e in new] == [bytes([3]) * 150, bytes([4]) * 150]
    # The evicted images' place is no longer theirs: reads and zeroing through it do nothing.
    assert gallery.read(old[0]) is None and gallery.read(old[1]) is None
    gallery.discard([{"segment": old[0].segment, "segment_offset": 0, "size_bytes": 100, "file_name": "x"}])
    assert gallery.read(new[1]) == bytes([4]) * 150
    # Pool files other processes left (and leave alone) go after the grace period.
    stale = directory / gallery_module.SEGMENT_DIR / ("ab" * 16 + ".free")
    stale.write_bytes(b"x")
    gallery.sweep()
    assert stale.exists()
    monkeypatch.setattr(gallery_module, "SEGMENT_GRACE_SECONDS", 0.0)
    gallery.sweep()
    assert not stale.exists()


# --- direct writes ------------------------------------------------------------------------------


def resident_pages(path: Path, offset: int, size: int) -> int:
    """How many pages of `path`'s range are in the page cache (mincore on a read-only map)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    page = mmap.PAGESIZE
    start = offset - offset % page
    length = offset + size - start
    pages = -(-length // page)
    vec = (ctypes.c_ubyte * pages)()
    fd = os.open(path, os.O_RDONLY)
    try:
        address = libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, start)
        assert address not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
        try:
            assert libc.mincore(address, length, vec) == 0, os.strerror(ctypes.get_errno())
        finally:
            libc.munmap(address, length)
    finally:
        os.close(fd)
    return sum(v & 1 for v in vec)


needs_direct_io = pytest.mark.skipif(
    segment_files.DIRECT == 0 or not sys.platform.startswith("linux"),
    reason="O_DIRECT and mincore are Linux's",
)


@needs_direct_io
def test_big_images_are_written_past_the_page_cache(store: Store, data_dir: Path) -> None:
    gallery, directory = store.gallery, data_dir / "gallery"
    gallery.configure(directory, max_bytes=None)
    big = os.urandom(1024 * 1024 + 10)
    ids = gallery.add(
        [NewImage(d, "image/png", "rid", 0, 1, "a", "m", "p") for d in (b"s" * 1000, big, b"t" * 10)]
    )
    if not gallery.writes_direct:
        pytest.skip("this filesystem refuses O_DIRECT: the buffered path is what runs here")
    small, large, tail = (entry_of(gallery, i) for i in ids)
    step = segment_files.align_up(len(big))
    assert [e.segment_offset for e in (small, large, tail)] == [0, 4096, 4096 + step]
    path = directory / gallery_module.SEGMENT_DIR / str(large.segment)
    # Written buffered, the small image sits in the page cache; the big one never went through it.
    assert resident_pages(path, 0, 1000) == 1
    assert resident_pages(path, large.segment_offset, len(big)) == 0
    assert [gallery.read(e) for e in (small, large, tail)] == [b"s" * 1000, big, b"t" * 10]
    assert segment_bytes(directory, large.segment)[1000:4096] == bytes(3096)  # the gap before it


@needs_direct_io
def test_direct_writes_through_eviction_deletes_and_reuse(
    store: Store, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Segments written directly are evicted, zeroed (buffered) and reused (directly again):
    every image left reads back as written, a deleted one as nothing."""
    size = segment_files.DIRECT_FROM + 123
    monkeypatch.setattr(gallery_module, "SEGMENT_MAX_BYTES", 3 * size)
    gallery, directory = store.gallery, data_dir / "gallery"
    gallery.configure(directory, max_bytes=None)
    reused: list[str] = []

    def counted(directory: str, free: str, name: str) -> segment_files.Segment | None:
        segment = segment_files.reuse_segment(directory, free, name)
        if segment is not None:
            reused.append(name)
        return segment

    monkeypatch.setattr(gallery_module, "reuse_segment", counted)
    written: dict[int, bytes] = {}
    for round_ in range(4):
        batch = [os.urandom(size) for _ in range(4)]
        ids = gallery.add(
            [NewImage(d, "image/png", f"r{round_}", i, 1, "a", "m", "p") for i, d in enumerate(batch)]
        )
        written.update(zip(ids, batch, strict=True))
        deleted = ids[1]
        assert gallery.delete(deleted) == 1
        del written[deleted]
        gallery.max_bytes = 6 * size
        gallery.evict()
        gallery.max_bytes = None
    kept = {e.id: e for e in gallery.page(limit=100)}
    assert kept and set(kept) <= set(written)
    assert all(gallery.read(entry) == written[image_id] for image_id, entry in kept.items())
    assert gallery.writes_direct and reused  # freed segments were overwritten directly


@needs_direct_io
def test_a_filesystem_refusing_direct_io_gets_buffered_writes(
    store: Store, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def no_direct(path: str, flags: int, mode: int = 0o777) -> int:
        if flags & segment_files.DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")  # as tmpfs answers
        return real_open(path, flags, mode)

    monkeypatch.setattr(segment_files.os, "open", no_direct)
    gallery = store.gallery
    gallery.configure(data_dir / "gallery", max_bytes=None)
    data = [b"s" * 1000, os.urandom(segment_files.DIRECT_FROM + 1), os.urandom(segment_files.DIRECT_FROM)]
    ids = gallery.add([NewImage(d, "image/png", "rid", 0, 1, "a", "m", "p") for d in data])
    entries = [entry_of(gallery, i) for i in ids]
    assert not gallery.writes_direct
    assert [e.segment_offset for e in entries] == [0, 1000, 1000 + len(data[1])]  # nothing aligned
    assert [gallery.read(e) for e in entries] == data


def legacy_row(name: str, size: int) -> dict[str, Any]:
    """A row as the per-file layout wrote them: no segment, a file named `file_name`."""
    return {
        "created_at": datetime.now(UTC),
        "request_id": f"old-{name[:4]}",
        "image_index": 0,
        "key_id": 1,
        "key_name": "alice",
        "model": "m",
        "prompt": "p",
        "text": None,
        "params": "{}",
        "mime_type": "image/png",
        "file_name": name,
        "size_bytes": size,
        "cost_nanos": 0,
        "latency_ms": 0,
    }


def test_rows_of_the_per_file_layout_are_still_served(store: Store, data_dir: Path) -> None:
    gallery, directory = store.gallery, data_dir / "gallery"
    gallery.configure(directory, max_bytes=None)
    directory.mkdir(parents=True)
    names = [secrets.token_hex(16) + ".png" for _ in range(3)]
    for i, name in enumerate(names):
        (directory / name).write_bytes(bytes([i]) * 100)
    (old,) = gallery.insert([[legacy_row(name, 100) for name in names]])
    assert isinstance(old, list)
    (old_pool := directory / ".recycle").mkdir()
    (old_pool / secrets.token_hex(16)).write_bytes(b"an evicted file")
    new = gallery.add([image(7)])[0]
    entries = [entry_of(gallery, i) for i in old]
    assert all(e.segment is None and e.segment_offset is None for e in entries)
    assert [gallery.read(e) for e in entries] == [bytes([i]) * 100 for i in range(3)]
    assert gallery.read(entry_of(gallery, new)) == bytes([7]) * 100
    assert gallery.delete(old[1]) == 1 and not (directory / names[1]).exists()
    gallery.max_bytes = 150  # the two oldest go: a file, then the other file
    assert gallery.evict() == 2
    assert not any((directory / name).exists() for name in names)
    assert not old_pool.exists()  # the per-file layout's pool goes at eviction
    assert [gallery.read(e) for e in gallery.page()] == [bytes([7]) * 100]


def test_several_threads_write_at_once(store: Store, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gallery_module, "SEGMENT_MAX_BYTES", 4096)
    gallery = store.gallery
    gallery.configure(data_dir / "gallery", max_bytes=None)

    def work(thread: int) -> list[tuple[int, bytes]]:
        out = []
        for i in range(10):
            data = os.urandom(500 + 37 * i + thread)
            out.append(
                (gallery.add([NewImage(data, "image/png", f"t{thread}", i, 1, "a", "m", "p")])[0], data)
            )
        return out

    with ThreadPoolExecutor(4) as pool:
        written = [pair for pairs in pool.map(work, range(4)) for pair in pairs]
    assert len(written) == 40
    assert all(gallery.read(entry_of(gallery, image_id)) == data for image_id, data in written)


WRITER = textwrap.dedent(
    """
    import hashlib, sys
    from pathlib import Path
    import bananagate.store.gallery as gallery_module
    from bananagate.store import GalleryEntry, GalleryRepository, NewImage, Store

    url, directory, name, cap = sys.argv[1:5]
    gallery_module.SEGMENT_MAX_BYTES = 20_000
    with Store.open(url) as store:
        store.gallery.configure(Path(directory), int(cap))
        for i in range(30):
            rid = f"{name}-{i}"
            data = hashlib.sha256(rid.encode()).digest() * (50 + i)
            store.gallery.add([NewImage(data, "image/png", rid, 0, None, name, "m", "p")])
    """
)


def test_several_processes_share_one_directory(
    store: Store, db_url: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Processes append to segments of their own, evict each other's images, and never unlink a
    segment under another process; every image left reads back as written."""
    directory, cap = data_dir / "gallery", 100_000
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, db_url, str(directory), f"p{i}", str(cap)])
        for i in range(3)
    ]
    try:
        assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    gallery = store.gallery
    gallery.configure(directory, cap)
    gallery.evict()
    count, size = gallery.totals()
    assert 0 < size <= cap
    entries = gallery.page(limit=1000)
    assert len(entries) == count and {e.key_name for e in entries} <= {"p0", "p1", "p2"}
    for e in entries:
        assert gallery.read(e) == hashlib.sha256(e.request_id.encode()).digest() * (
            50 + int(e.request_id[3:])
        )
    # The writers' segments are young: left alone. Once old, those no row names go.
    on_disk = segments(directory)
    assert {e.segment for e in entries} <= on_disk
    gallery.sweep()
    assert segments(directory) == on_disk
    monkeypatch.setattr(gallery_module, "SEGMENT_GRACE_SECONDS", 0.0)
    gallery.sweep()
    assert segments(directory) == {e.segment for e in entries}
    assert all(gallery.read(e) is not None for e in entries)
