"""The competition's queries: each collection replaced whole in one transaction, rows listed in
file order, training pairs joined to their readable images, counts."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from indexer.store.schema import (
    IMAGE_CANDIDATES,
    IMAGE_QUERIES,
    STATUS_OK,
    TRAIN_IMAGES,
    Base,
    ImageRecord,
    PairRecord,
    TextRecord,
)


def replace_images(session: Session, *, collection: str, rows: Iterable[dict]) -> int:
    session.execute(delete(ImageRecord).where(ImageRecord.collection == collection))
    return insert_rows(session, ImageRecord, [{**r, "collection": collection} for r in rows])


def replace_texts(session: Session, *, collection: str, rows: Iterable[dict]) -> int:
    session.execute(delete(TextRecord).where(TextRecord.collection == collection))
    return insert_rows(session, TextRecord, [{**r, "collection": collection} for r in rows])


def replace_pairs(session: Session, *, rows: Iterable[dict]) -> int:
    session.execute(delete(PairRecord))
    return insert_rows(session, PairRecord, list(rows))


def insert_rows(session: Session, model: type[Base], rows: list[dict], chunk: int = 5000) -> int:
    """Insert ``rows`` (dicts with the same keys) in batches.

    A Core insert on the table, not the ORM's bulk insert: the ORM leaves out None values row by
    row and batches only consecutive rows with the same None pattern, which for rows of mixed
    nulls (attributes, optional captions) means one statement per row (20,000 rows: 23 s vs <1 s).
    """
    table = model.__table__
    for start in range(0, len(rows), chunk):
        session.execute(insert(table), rows[start : start + chunk])
    return len(rows)


def list_images(session: Session, *, collection: str) -> list[ImageRecord]:
    stmt = select(ImageRecord).where(ImageRecord.collection == collection)
    return list(session.scalars(stmt.order_by(ImageRecord.position)))


def list_texts(session: Session, *, collection: str) -> list[TextRecord]:
    stmt = select(TextRecord).where(TextRecord.collection == collection)
    return list(session.scalars(stmt.order_by(TextRecord.position)))


def list_training_pairs(session: Session) -> list[tuple[str, str, str]]:
    """(image_id, caption, path) of every pair whose image is readable, in CSV order."""
    stmt = (
        select(PairRecord.image_id, PairRecord.caption, ImageRecord.path)
        .join(
            ImageRecord,
            (ImageRecord.image_id == PairRecord.image_id) & (ImageRecord.collection == TRAIN_IMAGES),
        )
        .where(ImageRecord.status == STATUS_OK)
        .order_by(PairRecord.position)
    )
    return [tuple(row) for row in session.execute(stmt)]


def get_image(
    session: Session,
    *,
    image_id: str,
    collections: tuple[str, ...] = (IMAGE_CANDIDATES, IMAGE_QUERIES, TRAIN_IMAGES),
) -> ImageRecord | None:
    """The readable image with this id, preferring candidates, then query and training images."""
    stmt = select(ImageRecord).where(
        ImageRecord.image_id == image_id,
        ImageRecord.status == STATUS_OK,
        ImageRecord.collection.in_(collections),
    )
    found = {rec.collection: rec for rec in session.scalars(stmt)}
    return next((found[c] for c in collections if c in found), None)


def get_captions(session: Session, *, collection: str, text_ids: list[str]) -> dict[str, str]:
    stmt = select(TextRecord.text_id, TextRecord.caption).where(
        TextRecord.collection == collection, TextRecord.text_id.in_(text_ids)
    )
    return dict(session.execute(stmt).all())


def counts(session: Session) -> dict[str, int]:
    out: dict[str, int] = {}
    for collection, n in session.execute(
        select(ImageRecord.collection, func.count()).group_by(ImageRecord.collection)
    ):
        out[f"images.{collection}"] = n
    for collection, n in session.execute(
        select(TextRecord.collection, func.count()).group_by(TextRecord.collection)
    ):
        out[f"texts.{collection}"] = n
    out["pairs"] = session.scalar(select(func.count()).select_from(PairRecord)) or 0
    return out
