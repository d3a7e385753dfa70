"""The gallery pages: thumbnails filtered by key and model, a detail view, download and delete.

Thumbnails are made on first view (in a thread, with the same decompression-bomb guard as
input images) and cached next to the images, so the request path that stored an image never
decoded it.
"""

from __future__ import annotations

import io
import os
import secrets
import warnings
from pathlib import Path

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from bananagate.console.context import ConsoleContext
from bananagate.console.session import Session
from bananagate.store import GalleryEntry

PAGE_SIZE = 48
THUMB_SIZE = 384


def make_thumbnail(source: bytes, target: Path, max_pixels: int) -> bool:
    """Write a JPEG thumbnail of the image `source` to `target`; False when it cannot be read."""
    # Pillow (~2 MB) is imported when the console first shows an image, not by every gateway.
    from bananagate.imaging import ImageRejected, decode_image

    try:
        image = decode_image(source, max_pixels=max_pixels, draft=(THUMB_SIZE, THUMB_SIZE))
    except (ImageRejected, OSError):
        return False
    try:
        image.thumbnail((THUMB_SIZE, THUMB_SIZE))
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        image.convert("RGB").save(tmp, format="JPEG", quality=82)
        os.replace(tmp, target)
    finally:
        image.close()
    return True


def pixel_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the image's header (no pixels decoded)."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as image:
                return image.size
        except Exception:
            return None


def download_name(entry: GalleryEntry) -> str:
    return f"bananagate-{entry.id}{entry.extension}"


class GalleryViews:
    def __init__(self, ctx: ConsoleContext) -> None:
        self.ctx = ctx

    def routes(self) -> list[BaseRoute]:
        page, action = self.ctx.page, self.ctx.action
        return [
            Route("/gallery", page(self.index), methods=["GET", "HEAD"]),
            Route("/gallery/{image_id:int}", page(self.detail), methods=["GET", "HEAD"]),
            Route("/gallery/{image_id:int}/image", page(self.image), methods=["GET", "HEAD"]),
            Route("/gallery/{image_id:int}/thumb", page(self.thumb), methods=["GET", "HEAD"]),
            Route("/gallery/{image_id:int}/download", page(self.download), methods=["GET", "HEAD"]),
            Route("/gallery/{image_id:int}/delete", action(self.delete), methods=["POST"]),
        ]

    async def _entry(self, request: Request) -> GalleryEntry | None:
        return await self.ctx.run(self.ctx.store().gallery.get, request.path_params["image_id"])

    def _missing(self, request: Request, session: Session) -> Response:
        return self.ctx.render(
            request,
            "error.html",
            session,
            status=404,
            section="gallery",
            title="Not found",
            message="There is no such image in the gallery (it may have been deleted or evicted).",
        )

    async def index(self, request: Request, session: Session) -> Response:
        q = request.query_params
        key, model = q.get("key") or None, q.get("model") or None
        before = int(q["before"]) if q.get("before", "").isdigit() else None
        gallery = self.ctx.store().gallery
        entries = await self.ctx.run(
            lambda: gallery.page(key_name=key, model=model, before_id=before, limit=PAGE_SIZE + 1)
        )
        keys, models = await self.ctx.run(gallery.facets)
        count, size = await self.ctx.run(gallery.totals)
        more = len(entries) > PAGE_SIZE
        entries = entries[:PAGE_SIZE]
        return self.ctx.render(
            request,
            "gallery.html",
            session,
            section="gallery",
            title="Gallery",
            entries=entries,
            keys=keys,
            models=models,
            key=key,
            model=model,
            older=entries[-1].id if more and entries else None,
            count=count,
            size=size,
            cap=self.ctx.settings.gallery_max_bytes,
            only_playground=self.ctx.settings.gallery == "playground",
        )

    async def detail(self, request: Request, session: Session) -> Response:
        entry = await self._entry(request)
        if entry is None:
            return self._missing(request, session)
        data = await self.ctx.run(self.ctx.store().gallery.read, entry)
        dimensions = await self.ctx.run(pixel_size, data) if data is not None else None
        return self.ctx.render(
            request,
            "gallery_detail.html",
            session,
            section="gallery",
            title=f"Image {entry.id}",
            entry=entry,
            on_disk=data is not None,
            dimensions=dimensions,
            filename=download_name(entry),
        )

    async def _file(self, request: Request, session: Session, *, attachment: bool) -> Response:
        entry = await self._entry(request)
        # Read whole (an image is a few MB): a range of a segment, not a file to hand over.
        data = await self.ctx.run(self.ctx.store().gallery.read, entry) if entry is not None else None
        if entry is None or data is None:
            return self._missing(request, session)
        # Served as the type it was stored with and never sniffed (nosniff is on every response).
        disposition = "attachment" if attachment else "inline"
        return Response(
            data,
            media_type=entry.mime_type,
            headers={
                "cache-control": "private, max-age=86400",
                # The name is ASCII by construction: no RFC 5987 form needed.
                "content-disposition": f'{disposition}; filename="{download_name(entry)}"',
            },
        )

    async def image(self, request: Request, session: Session) -> Response:
        return await self._file(request, session, attachment=False)

    async def download(self, request: Request, session: Session) -> Response:
        return await self._file(request, session, attachment=True)

    async def thumb(self, request: Request, session: Session) -> Response:
        entry = await self._entry(request)
        gallery = self.ctx.store().gallery
        if entry is None or gallery.directory is None:
            return self._missing(request, session)
        target = gallery.thumb_path(entry.file_name)
        if not target.is_file():
            data = await self.ctx.run(gallery.read, entry)
            if data is None:
                return self._missing(request, session)
            made = await self.ctx.run(make_thumbnail, data, target, self.ctx.settings.max_image_pixels)
            if not made:  # unreadable here (e.g. HEIC without a plugin): the original will do
                return await self._file(request, session, attachment=False)
        return FileResponse(
            target, media_type="image/jpeg", headers={"cache-control": "private, max-age=86400"}
        )

    async def delete(self, request: Request, session: Session, form: FormData) -> Response:
        image_id = request.path_params["image_id"]
        await self.ctx.run(self.ctx.store().gallery.delete, image_id)
        return RedirectResponse("/console/gallery?deleted=1", status_code=303)
