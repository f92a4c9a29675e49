"""Metadata store (SQLAlchemy): images, texts, training pairs and query sets by collection.

Each collection is replaced whole inside one transaction, so re-running ingest never duplicates
rows and a crash mid-way leaves the previous contents.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Integer, String, Text, create_engine, delete, event, func, insert, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from common.errors import TuwenError

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


def make_engine(url: str) -> Engine:
    """An engine with the schema created; SQLite gets WAL so the server can read during ingest."""
    try:
        parsed = make_url(url)
        engine = create_engine(parsed, pool_pre_ping=True)
    except (SQLAlchemyError, ValueError, ImportError) as exc:
        raise TuwenError(f"bad database URL {url!r}: {exc}") from exc
    if engine.dialect.name == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

    try:
        Base.metadata.create_all(engine)
    except SQLAlchemyError as exc:
        engine.dispose()
        shown = parsed.render_as_string(hide_password=True)
        raise TuwenError(f"cannot open the store at {shown}: {getattr(exc, 'orig', exc)}") from exc
    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    with session_factory(engine).begin() as session:
        yield session


def replace_images(session: Session, *, collection: str, rows: Iterable[dict]) -> int:
    session.execute(delete(ImageRecord).where(ImageRecord.collection == collection))
    return _insert(session, ImageRecord, [{**r, "collection": collection} for r in rows])


def replace_texts(session: Session, *, collection: str, rows: Iterable[dict]) -> int:
    session.execute(delete(TextRecord).where(TextRecord.collection == collection))
    return _insert(session, TextRecord, [{**r, "collection": collection} for r in rows])


def replace_pairs(session: Session, *, rows: Iterable[dict]) -> int:
    session.execute(delete(PairRecord))
    return _insert(session, PairRecord, list(rows))


def _insert(session: Session, model: type[Base], rows: list[dict], chunk: int = 5000) -> int:
    for start in range(0, len(rows), chunk):
        session.execute(insert(model), rows[start : start + chunk])
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
