"""The mask modality: a corpus item's mask image, its digest and the share of the frame it covers.

Revision ID: 0004_corpus_masks
Revises: 0003_vectors_changes
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_corpus_masks"
down_revision = "0003_vectors_changes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("corpus_items") as batch:
        batch.add_column(sa.Column("mask_path", sa.Text(), nullable=True))
        batch.add_column(sa.Column("mask_sha256", sa.String(64), nullable=True))
        batch.add_column(sa.Column("mask_area", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("corpus_items") as batch:
        batch.drop_column("mask_area")
        batch.drop_column("mask_sha256")
        batch.drop_column("mask_path")
