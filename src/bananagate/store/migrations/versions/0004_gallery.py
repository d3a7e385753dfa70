"""Gallery: metadata of generated images kept in the image store (the files live on disk).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "gallery_images",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("image_index", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=True),
        sa.Column("key_name", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=100), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("params", sa.Text(), nullable=False),
        sa.Column("mime_type", sa.String(length=64), nullable=False),
        sa.Column("file_name", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("cost_nanos", sa.BigInteger(), nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gallery_images")),
        sa.UniqueConstraint("file_name", name=op.f("uq_gallery_images_file_name")),
    )
    op.create_index("ix_gallery_images_created_at", "gallery_images", ["created_at"])
    op.create_index("ix_gallery_images_key_name", "gallery_images", ["key_name"])
    op.create_index("ix_gallery_images_model", "gallery_images", ["model"])
    op.create_index("ix_gallery_images_request_id", "gallery_images", ["request_id"])


def downgrade() -> None:
    op.drop_index("ix_gallery_images_request_id", table_name="gallery_images")
    op.drop_index("ix_gallery_images_model", table_name="gallery_images")
    op.drop_index("ix_gallery_images_key_name", table_name="gallery_images")
    op.drop_index("ix_gallery_images_created_at", table_name="gallery_images")
    op.drop_table("gallery_images")
