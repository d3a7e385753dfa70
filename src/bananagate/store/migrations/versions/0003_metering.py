"""Metering: key limits and money columns, reservations and the usage ledger.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEY_COLUMNS = (
    "label",
    "allowed_models",
    "allow_cidrs",
    "budget_nanos",
    "spent_nanos",
    "reserved_nanos",
    "rpm",
    "images_per_day",
    "max_concurrent",
    "expires_at",
)


def upgrade() -> None:
    # Batch mode: SQLite cannot ALTER much in place (env.py renders batch ops for it).
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("label", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("allowed_models", sa.Text(), nullable=True))
        batch.add_column(sa.Column("allow_cidrs", sa.Text(), nullable=True))
        batch.add_column(sa.Column("budget_nanos", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("spent_nanos", sa.BigInteger(), server_default="0", nullable=False))
        batch.add_column(sa.Column("reserved_nanos", sa.BigInteger(), server_default="0", nullable=False))
        batch.add_column(sa.Column("rpm", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("images_per_day", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("max_concurrent", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))

    op.create_table(
        "reservations",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("amount_nanos", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reservations")),
    )
    op.create_index("ix_reservations_expires_at", "reservations", ["expires_at"])

    op.create_table(
        "usage_ledger",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=True),
        sa.Column("key_name", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=100), nullable=False),
        sa.Column("channel", sa.String(length=100), nullable=True),
        sa.Column("streamed", sa.Boolean(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("finish_reason", sa.String(length=48), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("images", sa.Integer(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("image_tokens", sa.Integer(), nullable=False),
        sa.Column("thoughts_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_nanos", sa.BigInteger(), nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("client_ip", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_ledger")),
        sa.UniqueConstraint("request_id", name=op.f("uq_usage_ledger_request_id")),
    )
    op.create_index("ix_usage_ledger_created_at", "usage_ledger", ["created_at"])
    op.create_index("ix_usage_ledger_key_id_created_at", "usage_ledger", ["key_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_usage_ledger_key_id_created_at", table_name="usage_ledger")
    op.drop_index("ix_usage_ledger_created_at", table_name="usage_ledger")
    op.drop_table("usage_ledger")
    op.drop_index("ix_reservations_expires_at", table_name="reservations")
    op.drop_table("reservations")
    with op.batch_alter_table("api_keys") as batch:
        for column in reversed(_KEY_COLUMNS):
            batch.drop_column(column)
