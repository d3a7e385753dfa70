"""The gallery repository's batch writes on SQLite and PostgreSQL: several requests' rows in one
INSERT with their ids in order, a bad group failing alone, and eviction in one DELETE."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

import bananagate.store.gallery as gallery_module
from bananagate.store import NewImage, Store


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


def files(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir() if p.is_file()}


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


def test_a_bad_group_fails_alone_and_takes_its_files(store: Store, data_dir: Path) -> None:
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
    assert files(data_dir / "gallery") == {row["file_name"] for row in good if row}


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
    assert len(files(data_dir / "gallery")) == 3 and not thumb.exists()
    assert gallery.evict() == 0


@pytest.mark.parametrize("size", [10, 4096, 64 * 1024, 1_050_001, 3 * 4096 * 256])
def test_files_hold_the_exact_bytes(store: Store, data_dir: Path, size: int) -> None:
    store.gallery.configure(data_dir / "gallery", max_bytes=None)
    data = os.urandom(size)
    ids = store.gallery.add([NewImage(data, "image/png", "rid", 0, 1, "alice", "m", "p")] * 2)
    for image_id in ids:
        entry = store.gallery.get(image_id)
        assert entry is not None and entry.size_bytes == size
        assert store.gallery.path(entry).read_bytes() == data  # type: ignore[union-attr]
    assert len(files(data_dir / "gallery")) == 2


def pool(directory: Path) -> set[str]:
    recycle = directory / gallery_module.RECYCLE_DIR
    return {p.name for p in recycle.iterdir()} if recycle.exists() else set()


def inode(path: Path | None) -> int:
    assert path is not None
    return path.stat().st_ino


def test_evicted_files_are_recycled_for_new_images(store: Store, data_dir: Path) -> None:
    gallery = store.gallery
    directory = data_dir / "gallery"
    gallery.configure(directory, max_bytes=None)
    ids = [gallery.add([image(i, size=1000)])[0] for i in range(4)]
    evicted = {inode(gallery.path(gallery.get(i))) for i in ids[:2]}  # type: ignore[arg-type]
    gallery.max_bytes = 2000
    assert gallery.evict() == 2
    assert len(pool(directory)) == 2 and len(files(directory)) == 2
    gallery.max_bytes = None  # no further eviction
    # A smaller image in a reused (longer) file: the file holds exactly its bytes.
    data = os.urandom(300)
    new_id = gallery.add([NewImage(data, "image/png", "rid-new", 0, 1, "alice", "m", "p")])[0]
    path = gallery.path(gallery.get(new_id))  # type: ignore[arg-type]
    assert path is not None and path.read_bytes() == data
    assert inode(path) in evicted
    assert len(pool(directory)) == 1


def test_a_read_never_returns_another_images_bytes(
    store: Store, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gallery = store.gallery
    directory = data_dir / "gallery"
    gallery.configure(directory, max_bytes=None)
    first = gallery.get(gallery.add([image(1, size=1000)])[0])
    assert first is not None and gallery.read(first) == bytes([1]) * 1000
    # The image is evicted while it is being read, and its file at once reused for another.
    real_stat = os.stat

    def evicted_meanwhile(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        monkeypatch.setattr(gallery_module.os, "stat", real_stat)
        gallery.max_bytes = 0
        assert gallery.evict() == 1
        gallery.max_bytes = None
        gallery.add([image(2, size=1000)])
        assert not pool(directory)  # image 2 took the evicted file
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(gallery_module.os, "stat", evicted_meanwhile)
    assert gallery.read(first) is None
    assert gallery.read(first) is None  # and afterwards, its name leads nowhere


def test_deleted_images_are_unlinked_not_recycled(store: Store, data_dir: Path) -> None:
    gallery = store.gallery
    directory = data_dir / "gallery"
    gallery.configure(directory, max_bytes=None)
    ids = gallery.add([image(1), image(2)])
    assert gallery.delete(ids[0]) == 1
    assert not pool(directory) and len(files(directory)) == 1


def test_the_pool_is_bounded_and_survives_a_restart(
    store: Store, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gallery_module, "RECYCLE_MAX_FILES", 2)
    gallery = store.gallery
    directory = data_dir / "gallery"
    gallery.configure(directory, max_bytes=None)
    ids = [gallery.add([image(i, size=100)])[0] for i in range(5)]
    gallery.configure(directory, max_bytes=100)
    assert gallery.evict() == 4
    assert len(pool(directory)) == 2 and len(files(directory)) == 1
    # Another process (or a restart) finds the pool on disk and may reuse it at once; two
    # processes that both want the same file do not both get it.
    other = gallery_module.GalleryRepository(store.engine, directory, None)
    gallery.configure(directory, max_bytes=None)
    written = []
    for repository in (other, gallery, other, gallery):
        data = os.urandom(50)
        written.append((repository.add([NewImage(data, "image/png", "r", 0, 1, "a", "m", "p")])[0], data))
    assert not pool(directory)
    for image_id, data in written:
        assert gallery.path(gallery.get(image_id)).read_bytes() == data  # type: ignore[arg-type, union-attr]
    assert len(files(directory)) == 5 and ids[-1] in [e.id for e in gallery.page()]
