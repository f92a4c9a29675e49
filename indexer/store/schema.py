"""The store's schema: collection names, row statuses and the SQLAlchemy models of every table.

Created and upgraded by the Alembic migrations in ``indexer/migrations/`` (never ``create_all``);
a new table or column here comes with a new revision there.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Collections, named after what they are in the competition layout.
TRAIN_IMAGES = "train"  # 附件1/ImageData
IMAGE_CANDIDATES = "image_candidates"  # 附件2/image_data.csv
TEXT_QUERIES = "text_queries"  # 附件2/word_test.csv
IMAGE_QUERIES = "image_queries"  # 附件3/image_test.csv
TEXT_CANDIDATES = "text_candidates"  # 附件3/word_data.csv

STATUS_OK = "ok"
STATUS_MISSING = "missing"
STATUS_UNREADABLE = "unreadable"


class Base(DeclarativeBase):
    pass


class ImageRecord(Base):
    __tablename__ = "images"
    collection: Mapped[str] = mapped_column(String(32), primary_key=True)
    image_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, index=True)
    path: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text, default="")
    format: Mapped[str | None] = mapped_column(String(16), nullable=True)
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)  # of the file's bytes (0003)


class TextRecord(Base):
    __tablename__ = "texts"
    collection: Mapped[str] = mapped_column(String(32), primary_key=True)
    text_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, index=True)
    caption: Mapped[str] = mapped_column(Text)


class PairRecord(Base):
    __tablename__ = "pairs"
    position: Mapped[int] = mapped_column(Integer, primary_key=True)  # row in ImageWordData.csv
    image_id: Mapped[str] = mapped_column(String(255), index=True)
    caption: Mapped[str] = mapped_column(Text)


# --- Corpora (``tuwen corpus add``): one row per corpus, its items, its typed attributes ----------


class CorpusRecord(Base):
    __tablename__ = "corpora"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[str] = mapped_column(Text)  # the file it was read from
    format: Mapped[str] = mapped_column(String(8))  # csv | jsonl | json
    rows: Mapped[int] = mapped_column(Integer)
    time_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)  # datetime | int
    added_at: Mapped[datetime] = mapped_column(DateTime)


class CorpusFieldRecord(Base):
    """An attribute field of a corpus and its type, in the file's column order."""

    __tablename__ = "corpus_fields"
    corpus: Mapped[str] = mapped_column(String(64), primary_key=True)
    field: Mapped[str] = mapped_column(String(255), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(8))  # int | float | str


class CorpusItemRecord(Base):
    __tablename__ = "corpus_items"
    __table_args__ = (UniqueConstraint("corpus", "item_id", name="uq_corpus_items_item_id"),)
    corpus: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)  # 0-based row order
    item_id: Mapped[str] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(Text)  # "file:line" or "file: item N"
    caption: Mapped[str | None] = mapped_column(Text, nullable=True)
    image_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    image_status: Mapped[str | None] = mapped_column(String(16), nullable=True)  # STATUS_*; None: no image
    image_detail: Mapped[str] = mapped_column(Text, default="")
    time_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)  # time_kind "datetime"
    time_int: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # time_kind "int"
    image_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)  # of the file's bytes
    caption_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)  # of its UTF-8 text
    # the mask modality (0004): a mask image per item (nonzero = garment), its digest and its area share
    mask_path: Mapped[str | None] = mapped_column(Text, nullable=True)  # absolute; None: no mask
    mask_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)  # of the mask file's bytes
    mask_area: Mapped[float | None] = mapped_column(Float, nullable=True)  # None: the mask did not decode


class CorpusAttributeRecord(Base):
    """One non-null attribute value in the column of its type; the key leads with (corpus, field)."""

    __tablename__ = "corpus_attributes"
    __table_args__ = (
        Index("ix_corpus_attributes_int", "corpus", "field", "int_value"),
        Index("ix_corpus_attributes_float", "corpus", "field", "float_value"),
    )
    corpus: Mapped[str] = mapped_column(String(64), primary_key=True)
    field: Mapped[str] = mapped_column(String(255), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    int_value: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    float_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    str_value: Mapped[str | None] = mapped_column(Text, nullable=True)


# --- Work saved by content, and the corpora's change log (issue 19; migration 0003) --------------


class VectorRecord(Base):
    """An encoded vector, kept under the model that made it and the digest of what it encoded.

    ``model_id`` is the model's id and the precision of its tower (``indexer.vector_cache``), ``kind``
    "image" (``sha256`` of the file's bytes) or "text" (of the caption's UTF-8 text); ``vector`` is
    the L2-normalised float32 vector's bytes, ``dim`` its length.
    """

    __tablename__ = "vectors"
    model_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    dim: Mapped[int] = mapped_column(Integer)


class CorpusChangeRecord(Base):
    """One change of a corpus (``op`` put | delete), appended in the transaction that made it.

    ``seq`` only grows, so a server follows the log by asking for rows after the last it applied;
    ``data`` is the put item as JSON (caption, image path and digests, time, attributes).
    """

    __tablename__ = "corpus_changes"
    __table_args__ = (Index("ix_corpus_changes_corpus_seq", "corpus", "seq"),)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    corpus: Mapped[str] = mapped_column(String(64))
    item_id: Mapped[str] = mapped_column(String(255))
    op: Mapped[str] = mapped_column(String(8))  # put | delete
    at: Mapped[datetime] = mapped_column(DateTime)
    data: Mapped[str | None] = mapped_column(Text, nullable=True)
