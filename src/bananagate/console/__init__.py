"""The web console at `/console`: playground, gallery, keys, channels and usage, for the holder
of the admin key. Server-rendered (Jinja2) with one small script; no network at run time."""

from __future__ import annotations

from bananagate.console.app import build_console
from bananagate.console.recorder import GalleryRecorder

__all__ = ["GalleryRecorder", "build_console"]
