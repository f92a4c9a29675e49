"""Corpora: ``tuwen corpus add`` stores any captioned-image collection with typed attributes.

Revision ID: 0002_corpora
Revises: 0001_baseline
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_corpora"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "corpora",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("format", sa.String(8), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("time_kind", sa.String(16), nullable=True),
        sa.Column("added_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "corpus_fields",
        sa.Column("corpus", sa.String(64), nullable=False),
        sa.Column("field", sa.String(255), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.PrimaryKeyConstraint("corpus", "field"),
    )
    op.create_table(
        "corpus_items",
        sa.Column("corpus", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("item_id", sa.String(255), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("caption", sa.Text(), nullable=True),
        sa.Column("image_path", sa.Text(), nullable=True),
        sa.Column("image_status", sa.String(16), nullable=True),
        sa.Column("image_detail", sa.Text(), nullable=False),
        sa.Column("time_at", sa.DateTime(), nullable=True),
        sa.Column("time_int", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("corpus", "position"),
        sa.UniqueConstraint("corpus", "item_id", name="uq_corpus_items_item_id"),
    )
    op.create_table(
        "corpus_attributes",
        sa.Column("corpus", sa.String(64), nullable=False),
        sa.Column("field", sa.String(255), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("int_value", sa.BigInteger(), nullable=True),
        sa.Column("float_value", sa.Float(), nullable=True),
        sa.Column("str_value", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("corpus", "field", "position"),
    )
    op.create_index("ix_corpus_attributes_int", "corpus_attributes", ["corpus", "field", "int_value"])
    op.create_index("ix_corpus_attributes_float", "corpus_attributes", ["corpus", "field", "float_value"])


def downgrade() -> None:
    op.drop_table("corpus_attributes")
    op.drop_table("corpus_items")
    op.drop_table("corpus_fields")
    op.drop_table("corpora")
