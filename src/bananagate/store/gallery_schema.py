"""The `gallery_images` table (migrations 0004 and 0007): one row per kept image, naming the
segment and offset of its bytes (`store.gallery` writes and reads them)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from bananagate.store.schema import NAME_MAX_LENGTH, REQUEST_ID_MAX_LENGTH, Base, UTCDateTime


class GalleryImage(Base):
    """One kept image. `cost_nanos` is the whole request's charge (shared by its images)."""

    __tablename__ = "gallery_images"
    __table_args__ = (
        Index("ix_gallery_images_created_at", "created_at"),
        Index("ix_gallery_images_key_name", "key_name"),
        Index("ix_gallery_images_model", "model"),
        Index("ix_gallery_images_request_id", "request_id"),
        Index("ix_gallery_images_segment", "segment"),
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
    # The image's unique random name: its file's before segments, its thumbnail's.
    file_name: Mapped[str] = mapped_column(String(64), unique=True)
    # Where its bytes are: a segment's name and the offset in it (NULL: the file `file_name`).
    segment: Mapped[str | None] = mapped_column(String(64))
    segment_offset: Mapped[int | None] = mapped_column(BigInteger())
    size_bytes: Mapped[int] = mapped_column(BigInteger())
    cost_nanos: Mapped[int] = mapped_column(BigInteger())
    latency_ms: Mapped[int] = mapped_column(Integer())
