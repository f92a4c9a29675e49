"""Metadata store (SQLAlchemy): images, texts, training pairs and query sets by collection; corpora.

Each collection is replaced whole inside one transaction, so re-running ingest never duplicates
rows and a crash mid-way leaves the previous contents. One module per concern:

- ``schema``: collection names, row statuses, the models of every table (migrated by Alembic,
  ``indexer/migrations/``, never ``create_all``);
- ``engines``: opening the store (``open_store``, the shared engine, ``make_engine``) and its schema
  revisions (check, upgrade under a lock, ``tuwen db``);
- ``queries``: the competition's reads and writes.

Every public name is here too: ``from indexer import store; store.open_store(...)``,
``store.IMAGE_CANDIDATES``, ``store.list_images(...)``.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from indexer.store.engines import (
    BASELINE_REVISION,
    MIGRATIONS_DIR,
    UNVERSIONED,
    alembic_config,
    check_revision,
    dispose_engines,
    head_revision,
    make_engine,
    open_store,
    session_factory,
    shared_engine,
    store_revision,
    transaction,
    upgrade_store,
    upgrade_url,
    url_revision,
)
from indexer.store.queries import (
    counts,
    get_captions,
    get_image,
    insert_rows,
    list_images,
    list_texts,
    list_training_pairs,
    replace_images,
    replace_pairs,
    replace_texts,
)
from indexer.store.schema import (
    IMAGE_CANDIDATES,
    IMAGE_QUERIES,
    STATUS_MISSING,
    STATUS_OK,
    STATUS_UNREADABLE,
    TEXT_CANDIDATES,
    TEXT_QUERIES,
    TRAIN_IMAGES,
    Base,
    CorpusAttributeRecord,
    CorpusChangeRecord,
    CorpusFieldRecord,
    CorpusItemRecord,
    CorpusRecord,
    ImageRecord,
    PairRecord,
    TextRecord,
    VectorRecord,
)

__all__ = [
    "BASELINE_REVISION",
    "IMAGE_CANDIDATES",
    "IMAGE_QUERIES",
    "MIGRATIONS_DIR",
    "STATUS_MISSING",
    "STATUS_OK",
    "STATUS_UNREADABLE",
    "TEXT_CANDIDATES",
    "TEXT_QUERIES",
    "TRAIN_IMAGES",
    "UNVERSIONED",
    "Base",
    "CorpusAttributeRecord",
    "CorpusChangeRecord",
    "CorpusFieldRecord",
    "CorpusItemRecord",
    "CorpusRecord",
    "ImageRecord",
    "PairRecord",
    "Session",
    "TextRecord",
    "VectorRecord",
    "alembic_config",
    "check_revision",
    "counts",
    "dispose_engines",
    "get_captions",
    "get_image",
    "head_revision",
    "insert_rows",
    "list_images",
    "list_texts",
    "list_training_pairs",
    "make_engine",
    "open_store",
    "replace_images",
    "replace_pairs",
    "replace_texts",
    "session_factory",
    "shared_engine",
    "store_revision",
    "transaction",
    "upgrade_store",
    "upgrade_url",
    "url_revision",
]
