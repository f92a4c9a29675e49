"""Baseline: the schema of the releases before migrations (images, texts, pairs).

Stores made by those releases have these tables and no ``alembic_version``; opening one stamps
it at this revision (``indexer.store``) and upgrades from there.

Revision ID: 0001_baseline
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("collection", sa.String(32), nullable=False),
        sa.Column("image_id", sa.String(255), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("format", sa.String(16), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("collection", "image_id"),
    )
    op.create_index("ix_images_position", "images", ["position"])
    op.create_table(
        "texts",
        sa.Column("collection", sa.String(32), nullable=False),
        sa.Column("text_id", sa.String(255), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("caption", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("collection", "text_id"),
    )
    op.create_index("ix_texts_position", "texts", ["position"])
    op.create_table(
        "pairs",
        sa.Column("position", sa.Integer(), nullable=False),  # SERIAL on PostgreSQL, as create_all made it
        sa.Column("image_id", sa.String(255), nullable=False),
        sa.Column("caption", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("position"),
    )
    op.create_index("ix_pairs_image_id", "pairs", ["image_id"])


def downgrade() -> None:
    op.drop_table("pairs")
    op.drop_table("texts")
    op.drop_table("images")
