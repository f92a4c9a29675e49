"""Work saved by content and the corpora's change log: ``vectors``, ``corpus_changes``, digests.

Revision ID: 0003_vectors_changes
Revises: 0002_corpora
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_vectors_changes"
down_revision = "0002_corpora"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vectors",
        sa.Column("model_id", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("model_id", "kind", "sha256"),
    )
    op.create_table(
        "corpus_changes",
        sa.Column("seq", sa.Integer(), nullable=False, autoincrement=True),
        sa.Column("corpus", sa.String(64), nullable=False),
        sa.Column("item_id", sa.String(255), nullable=False),
        sa.Column("op", sa.String(8), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("data", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_index("ix_corpus_changes_corpus_seq", "corpus_changes", ["corpus", "seq"])
    with op.batch_alter_table("corpus_items") as batch:
        batch.add_column(sa.Column("image_sha256", sa.String(64), nullable=True))
        batch.add_column(sa.Column("caption_sha256", sa.String(64), nullable=True))
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("sha256", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.drop_column("sha256")
    with op.batch_alter_table("corpus_items") as batch:
        batch.drop_column("caption_sha256")
        batch.drop_column("image_sha256")
    op.drop_index("ix_corpus_changes_corpus_seq", table_name="corpus_changes")
    op.drop_table("corpus_changes")
    op.drop_table("vectors")
