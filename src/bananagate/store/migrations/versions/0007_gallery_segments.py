"""Gallery images in segment files: where a row's bytes are (NULL for the per-file layout).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable columns: a plain ADD COLUMN on SQLite too (no copy of the table).
    op.add_column("gallery_images", sa.Column("segment", sa.String(length=64), nullable=True))
    op.add_column("gallery_images", sa.Column("segment_offset", sa.BigInteger(), nullable=True))
    op.create_index("ix_gallery_images_segment", "gallery_images", ["segment"])


def downgrade() -> None:
    # Rows of images in segments keep their metadata; without these columns their bytes are
    # lost to the older version, which shows them as missing (and evicts them first: oldest).
    op.drop_index("ix_gallery_images_segment", table_name="gallery_images")
    with op.batch_alter_table("gallery_images") as batch:
        batch.drop_column("segment_offset")
        batch.drop_column("segment")
