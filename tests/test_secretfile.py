import multiprocessing
import stat
from pathlib import Path

from bananagate.secretfile import derived_key, read_or_create


def _race(path: str, value: str, out: "multiprocessing.Queue[str]") -> None:
    out.put(read_or_create(Path(path), value))


def test_created_once_with_mode_0600_and_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "thing.key"
    assert read_or_create(path, "first") == "first"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_or_create(path, "second") == "first"
    assert [p.name for p in path.parent.iterdir()] == ["thing.key"]  # no temporary files left


def test_racing_processes_share_one_secret(tmp_path: Path) -> None:
    path = tmp_path / "race.key"
    out: multiprocessing.Queue[str] = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=_race, args=(str(path), f"v{i}", out)) for i in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert len({out.get() for _ in procs}) == 1


def test_derived_key_is_per_context_and_stable(tmp_path: Path) -> None:
    a = derived_key("s3cret", b"ctx/a", tmp_path / "unused.key")
    assert a == derived_key("s3cret", b"ctx/a", tmp_path / "unused.key")
    assert a != derived_key("s3cret", b"ctx/b", tmp_path / "unused.key")
    assert not (tmp_path / "unused.key").exists()
    stored = derived_key(None, b"ctx/a", tmp_path / "k.key")
    assert len(stored) == 32 and stored == derived_key(None, b"ctx/b", tmp_path / "k.key")
