"""The image store behind `response_format=url`: names, signatures, expiry, sweeping, keys."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bananagate.imagestore import KEY_FILENAME, ImageStore, LinkRefused, signing_key
from tests.openai.conftest import png


def parts(link: str) -> tuple[str, str, str]:
    name, _, query = link.partition("?")
    params = dict(p.split("=", 1) for p in query.split("&"))
    return name, params["exp"], params["sig"]


def test_put_link_open(tmp_path: Path) -> None:
    store = ImageStore.open(tmp_path, None, ttl=60)
    name = store.put(png(), "image/png")
    assert len(name) == 36 and name.endswith(".png")
    image = store.open_link(*parts(store.link(name)))
    assert image.path.read_bytes() == png() and image.mime_type == "image/png"
    assert (tmp_path / KEY_FILENAME).stat().st_mode & 0o777 == 0o600


def test_expired_and_forged_links_are_refused(tmp_path: Path) -> None:
    store = ImageStore.open(tmp_path, None, ttl=60)
    name = store.put(b"jpeg bytes", "image/jpeg")
    old = store.link(name, now=time.time() - 120)
    with pytest.raises(LinkRefused, match="expired") as caught:
        store.open_link(*parts(old))
    assert caught.value.status == 403
    _, exp, sig = parts(store.link(name))
    with pytest.raises(LinkRefused, match="signature"):
        store.open_link(name, str(int(exp) + 1), sig)
    for bad in ("../image-links.key", "x" * 32 + ".png", name.replace(".jpg", ".png")):
        with pytest.raises(LinkRefused):
            store.open_link(bad, exp, sig)


def test_key_from_secret_is_shared_and_writes_no_file(tmp_path: Path) -> None:
    a = ImageStore.open(tmp_path / "a", "the-secret", ttl=60)
    b = ImageStore(tmp_path / "b", signing_key(tmp_path / "b", "the-secret"), ttl=60)
    name = a.put(png(), "image/png")
    link = a.link(name, now=1_000_000)
    assert b.link(name, now=1_000_000) == link  # another gateway with the same secret accepts it
    assert not (tmp_path / "a" / KEY_FILENAME).exists()
    assert ImageStore.open(tmp_path / "c", None, ttl=60).link(name, now=1_000_000) != link


def test_generated_key_is_stable(tmp_path: Path) -> None:
    assert signing_key(tmp_path, None) == signing_key(tmp_path, None)


def test_sweep_deletes_files_past_their_links(tmp_path: Path) -> None:
    store = ImageStore.open(tmp_path, None, ttl=60)
    old = store.put(png(), "image/png")
    fresh = store.put(png(), "image/png")
    past = time.time() - 600
    os.utime(store.root / old, (past, past))
    assert store.sweep() == 1
    assert not (store.root / old).exists() and (store.root / fresh).exists()
