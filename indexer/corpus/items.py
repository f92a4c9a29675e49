"""Corpora: any captioned-image collection in the store, and the competition collections as corpora.

``tuwen corpus add NAME FILE`` (``indexer.corpus.add``) reads a CSV / JSONL / JSON file
(``indexer.corpus.read``) into the store; ``tuwen corpus encode`` (``indexer.corpus.encode``)
stores its embeddings as a generation under ``$TUWEN_HOME/corpora/<name>/``.

This module is the API the analysis layer reads through: ``list_corpora``, ``load_items`` (user
corpora and the five competition collections, ``train`` = 附件1 pairs, ``image_candidates``,
``text_candidates``, ``text_queries``, ``image_queries``, served from their own tables, never a
copy) and ``load_embeddings``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import numpy as np
from sqlalchemy import case, func, select

from common.errors import TuwenError
from common.settings import Settings
from indexer import index_files, store
from indexer.corpus.read import KIND_INT
from indexer.manifest import MANIFEST_FILE

BUILTIN = {
    store.TRAIN_IMAGES: "附件1 training pairs",
    store.IMAGE_CANDIDATES: "附件2 candidate images",
    store.TEXT_QUERIES: "附件2 text queries",
    store.IMAGE_QUERIES: "附件3 image queries",
    store.TEXT_CANDIDATES: "附件3 candidate texts",
}
_BUILTIN_TEXTS = (store.TEXT_QUERIES, store.TEXT_CANDIDATES)
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
Attribute = int | float | str | None


@dataclass(frozen=True)
class CorpusItem:
    position: int  # 0-based row order
    item_id: str
    caption: str | None
    image_path: str | None  # absolute
    image_status: str | None  # "ok" | "missing" | "unreadable"; None when the row has no image
    time: datetime | int | None
    attributes: dict[str, Attribute] = field(default_factory=dict)
    image_sha256: str | None = None  # of the image file's bytes when it was added
    caption_sha256: str | None = None  # of the caption's UTF-8 text
    mask_path: str | None = None  # absolute: the item's mask image (the optional ``mask`` field)
    mask_sha256: str | None = None  # of the mask file's bytes
    mask_area: float | None = None  # the share of the frame it covers; None: no mask or undecodable


@dataclass(frozen=True)
class CorpusInfo:
    name: str
    source: str  # the file, or the competition collection it is
    rows: int
    images: int  # rows naming an image
    images_ok: int  # of which readable
    captions: int
    time_kind: str | None  # "datetime" | "int" | None
    fields: dict[str, str]  # attribute field -> "int" | "float" | "str"
    model_id: str | None  # the model of its current embeddings, None when not encoded (or stale)
    builtin: bool = False


@dataclass
class CorpusEmbeddings:
    """Row i is the item at position i; L2-normalised; zero rows where the mask is False."""

    model_id: str
    image_vectors: np.ndarray | None  # (n, d) float32, None when no item has a usable image
    text_vectors: np.ndarray | None
    image_mask: np.ndarray  # (n,) bool
    text_mask: np.ndarray
    # the mask modality (set MASK_SET: each item's image with its background blanked); None when the
    # corpus has no masks; mask_area (n,) float: the share of the frame its mask covers, NaN unknown
    mask_vectors: np.ndarray | None = None
    mask_mask: np.ndarray | None = None
    mask_area: np.ndarray | None = None


def check_name(name: str) -> str:
    if name in BUILTIN:
        raise TuwenError(f"corpus name {name!r} is a competition collection; choose another name")
    if not _NAME_RE.fullmatch(name):
        raise TuwenError(
            f"corpus name {name!r}: use letters, digits, '_', '-' or '.', starting with a letter or digit "
            "(at most 64)"
        )
    return name


def corpus_dir(settings: Settings, name: str) -> Path:
    """Where the corpus's embedding generations live: ``$TUWEN_HOME/corpora/<name>/``."""
    return settings.home_dir / "corpora" / name


# --- Reading corpora back -------------------------------------------------------------------------


def list_corpora(*, settings: Settings) -> list[CorpusInfo]:
    """The added corpora (by name), then the competition collections that hold rows."""
    engine = store.make_engine(settings.store_url)
    try:
        with store.transaction(engine) as session:
            infos = _user_infos(session) + _builtin_infos(session)
            return [replace(i, model_id=_encoded_model(settings, session, i.name)) for i in infos]
    finally:
        engine.dispose()


def corpus_info(*, settings: Settings, name: str) -> CorpusInfo:
    """What ``list_corpora`` says of one corpus."""
    engine = store.make_engine(settings.store_url)
    try:
        with store.transaction(engine) as session:
            _check_known(session, name)
            infos = _user_infos(session, only=name) if name not in BUILTIN else _builtin_infos(session)
            info = next((i for i in infos if i.name == name), None)
            if info is None:
                raise TuwenError(_empty_builtin(name))
            return replace(info, model_id=_encoded_model(settings, session, name))
    finally:
        engine.dispose()


def load_items(*, settings: Settings, name: str) -> list[CorpusItem]:
    """Every item of corpus ``name`` in row order (also the competition collections)."""
    engine = store.make_engine(settings.store_url)
    try:
        with store.transaction(engine) as session:
            return _load_items(session, name)
    finally:
        engine.dispose()


def _check_known(session: store.Session, name: str) -> None:
    if name not in BUILTIN and session.get(store.CorpusRecord, name) is None:
        known = list(session.scalars(select(store.CorpusRecord.name).order_by(store.CorpusRecord.name)))
        raise TuwenError(
            f"unknown corpus {name!r}; known: {', '.join(known + list(BUILTIN))} "
            "(add one with `tuwen corpus add NAME FILE`)"
        )


def _empty_builtin(name: str) -> str:
    return f"corpus {name} ({BUILTIN[name]}) is empty: run `tuwen ingest --root DIR` first"


def _load_items(session: store.Session, name: str) -> list[CorpusItem]:
    _check_known(session, name)
    if name in BUILTIN:
        items = _builtin_items(session, name)
        if not items:
            raise TuwenError(_empty_builtin(name))
        return items
    fields = list(
        session.scalars(
            select(store.CorpusFieldRecord.field)
            .where(store.CorpusFieldRecord.corpus == name)
            .order_by(store.CorpusFieldRecord.position)
        )
    )
    A = store.CorpusAttributeRecord
    values: dict[int, dict[str, Attribute]] = {}
    for f, position, i, x, s in session.execute(
        select(A.field, A.position, A.int_value, A.float_value, A.str_value).where(A.corpus == name)
    ):
        values.setdefault(position, {})[f] = i if i is not None else x if x is not None else s
    Item = store.CorpusItemRecord
    columns = (Item.position, Item.item_id, Item.caption, Item.image_path, Item.image_status)
    digests = (Item.image_sha256, Item.caption_sha256, Item.mask_path, Item.mask_sha256, Item.mask_area)
    rows = session.execute(  # plain rows, not ORM objects: a third of the time at 50,000 items
        select(*columns, Item.time_at, Item.time_int, *digests)
        .where(Item.corpus == name)
        .order_by(Item.position)
    )
    # the stored position orders the rows (removals leave gaps); an item's position is its row number
    return [
        CorpusItem(
            i, item_id, caption, image_path, image_status,
            time_at if time_at is not None else time_int,
            {f: values.get(position, {}).get(f) for f in fields},
            image_sha256, caption_sha256, mask_path, mask_sha256, mask_area,
        )
        for i, (position, item_id, caption, image_path, image_status, time_at, time_int, image_sha256,
                caption_sha256, mask_path, mask_sha256, mask_area) in enumerate(rows)
    ]  # fmt: skip


def _builtin_items(session: store.Session, name: str) -> list[CorpusItem]:
    """The competition collections as corpora, read from their own tables."""
    if name in _BUILTIN_TEXTS:
        return [
            CorpusItem(i, t.text_id, t.caption or None, None, None, None, {})
            for i, t in enumerate(store.list_texts(session, collection=name))
        ]
    if name != store.TRAIN_IMAGES:
        return [
            CorpusItem(i, r.image_id, None, r.path or None, r.status, None, {})
            for i, r in enumerate(store.list_images(session, collection=name))
        ]
    images = {r.image_id: r for r in store.list_images(session, collection=store.TRAIN_IMAGES)}
    seen: dict[str, int] = {}
    items = []
    pairs = session.scalars(select(store.PairRecord).order_by(store.PairRecord.position))
    for i, pair in enumerate(pairs):  # an image with several captions: one item per pair
        seen[pair.image_id] = seen.get(pair.image_id, 0) + 1
        item_id = pair.image_id if seen[pair.image_id] == 1 else f"{pair.image_id}#{seen[pair.image_id]}"
        image = images.get(pair.image_id)
        path, status = (image.path or None, image.status) if image else (None, store.STATUS_MISSING)
        items.append(CorpusItem(i, item_id, pair.caption, path, status, None, {"line": pair.position}))
    return items


def _user_infos(session: store.Session, only: str | None = None) -> list[CorpusInfo]:
    Item, Field = store.CorpusItemRecord, store.CorpusFieldRecord
    fields: dict[str, dict[str, str]] = {}
    by_corpus = select(Field.corpus, Field.field, Field.kind).order_by(Field.corpus, Field.position)
    for corpus, f, kind in session.execute(by_corpus):
        fields.setdefault(corpus, {})[f] = kind
    ok = func.sum(case((Item.image_status == store.STATUS_OK, 1), else_=0))
    counts = {
        corpus: (images, int(images_ok or 0), captions)
        for corpus, images, images_ok, captions in session.execute(
            select(Item.corpus, func.count(Item.image_path), ok, func.count(Item.caption)).group_by(
                Item.corpus
            )
        )
    }
    return [
        CorpusInfo(
            name=c.name,
            source=c.source,
            rows=c.rows,
            images=counts.get(c.name, (0, 0, 0))[0],
            images_ok=counts.get(c.name, (0, 0, 0))[1],
            captions=counts.get(c.name, (0, 0, 0))[2],
            time_kind=c.time_kind,
            fields=fields.get(c.name, {}),
            model_id=None,
        )
        for c in session.scalars(select(store.CorpusRecord).order_by(store.CorpusRecord.name))
        if only is None or c.name == only
    ]


def _builtin_infos(session: store.Session) -> list[CorpusInfo]:
    """The competition collections that hold rows, counted in SQL (50,000 rows each in the real data)."""
    Image, Text, Pair = store.ImageRecord, store.TextRecord, store.PairRecord
    ok = func.sum(case((Image.status == store.STATUS_OK, 1), else_=0))
    per_image_collection = select(Image.collection, func.count(), ok).group_by(Image.collection)
    captioned = func.sum(case((Text.caption != "", 1), else_=0))
    per_text_collection = select(Text.collection, func.count(), captioned).group_by(Text.collection)
    # (rows, images, images ok, captions) by collection
    counts = {c: (n, n, int(k or 0), 0) for c, n, k in session.execute(per_image_collection)}
    counts |= {c: (n, 0, 0, int(k or 0)) for c, n, k in session.execute(per_text_collection)}
    pairs = session.scalar(select(func.count()).select_from(Pair)) or 0
    readable = (
        select(func.count())
        .select_from(Pair)
        .join(Image, (Image.image_id == Pair.image_id) & (Image.collection == store.TRAIN_IMAGES))
    )
    pairs_ok = session.scalar(readable.where(Image.status == store.STATUS_OK)) or 0
    counts[store.TRAIN_IMAGES] = (pairs, pairs, pairs_ok, pairs)
    return [
        CorpusInfo(
            name=name,
            source=what,
            rows=counts[name][0],
            images=counts[name][1],
            images_ok=counts[name][2],
            captions=counts[name][3],
            time_kind=None,
            fields={"line": KIND_INT} if name == store.TRAIN_IMAGES else {},
            model_id=None,
            builtin=True,
        )
        for name, what in BUILTIN.items()
        if counts.get(name, (0,))[0]
    ]


def fingerprint(items: list[CorpusItem]) -> str:
    """What the embeddings depend on (ids, captions, image paths and status), to tell stale ones."""
    digest = hashlib.sha256()
    for item in items:
        fields = (item.item_id, item.caption or "", item.image_path or "", item.image_status or "")
        if item.image_sha256:  # an image file replaced in place is a change (digests since issue 19)
            fields += (item.image_sha256,)
        if item.mask_path:  # a mask added, changed or gone is a change (the mask modality, 0004)
            fields += ("mask", item.mask_path, item.mask_sha256 or "")
        digest.update(("\x1f".join(fields) + "\x1e").encode("utf-8"))
    return digest.hexdigest()


# --- Embeddings (``tuwen corpus encode``): a generation under corpora/<name>/ ----------------------
#
# The generation holds the sets IMAGE_SET and TEXT_SET (vectors of the items with a usable image /
# a caption, ids = item ids), and MASK_SET when the corpus has masks (the masked images of the items
# with a usable image and a decodable mask); its manifest's ``source`` names the corpus and the
# fingerprint of the items it was encoded from, so embeddings of a corpus that changed since are never
# served.

IMAGE_SET, TEXT_SET, MASK_SET = "images", "texts", "masks"


def load_embeddings(*, settings: Settings, name: str) -> CorpusEmbeddings:
    """The corpus's current embeddings, row i = the item at position i (see ``CorpusEmbeddings``)."""
    items = load_items(settings=settings, name=name)
    current = _current_generation(settings, name)
    if current is None:
        raise TuwenError(f"corpus {name} is not encoded: run `tuwen corpus encode {name} --model SPEC`")
    generation, source = current
    if source.get("fingerprint") != fingerprint(items):
        raise TuwenError(
            f"corpus {name} changed since it was encoded with {generation.manifest.model_spec}: "
            f"run `tuwen corpus encode {name} --model SPEC` again"
        )
    positions = {item.item_id: item.position for item in items}
    image_vectors, image_mask = _aligned(generation, IMAGE_SET, positions)
    text_vectors, text_mask = _aligned(generation, TEXT_SET, positions)
    embeddings = CorpusEmbeddings(
        model_id=generation.model_id,
        image_vectors=image_vectors,
        text_vectors=text_vectors,
        image_mask=image_mask,
        text_mask=text_mask,
    )
    if any(item.mask_path for item in items):
        embeddings.mask_vectors, embeddings.mask_mask = _aligned(generation, MASK_SET, positions)
        embeddings.mask_area = np.array(
            [np.nan if item.mask_area is None else item.mask_area for item in items], dtype=np.float64
        )
    return embeddings


def _aligned(
    generation: index_files.LoadedIndex, set_name: str, positions: dict[str, int]
) -> tuple[np.ndarray | None, np.ndarray]:
    """A stored set spread over all items: zero rows (mask False) where an item has no vector."""
    mask = np.zeros(len(positions), dtype=bool)
    stored = generation.sets.get(set_name)
    if stored is None:
        return None, mask
    rows = np.array([positions[i] for i in stored.ids], dtype=np.int64)
    out = np.zeros((len(positions), stored.vectors.shape[1]), dtype=np.float32)
    out[rows] = stored.vectors
    mask[rows] = True
    return (out if mask.any() else None), mask


def _current_generation(settings: Settings, name: str) -> tuple[index_files.LoadedIndex, dict] | None:
    """(the corpus's live generation, what it was encoded from), or None when it was never encoded."""
    root = corpus_dir(settings, name)
    live = index_files.current_generation_name(root)
    if live is None or not (root / live / MANIFEST_FILE).is_file():
        return None
    generation = index_files.load_generation(root / live)
    return generation, generation.manifest.source or {}  # none recorded: stale, encoded again


def _encoded_model(settings: Settings, session: store.Session, name: str) -> str | None:
    """The model id of the corpus's current embeddings if they match its items, else None."""
    current = _current_generation(settings, name)
    if current is None:
        return None
    generation, source = current
    fresh = source.get("fingerprint") == fingerprint(_load_items(session, name))
    return generation.model_id if fresh else None
