"""A stored corpus as the studies take it: ``CorpusData`` from ``indexer.corpus``'s items and embeddings."""

from __future__ import annotations

import re
from datetime import date, datetime
from pathlib import Path

import numpy as np

from analysis.data import CorpusData
from common.reports import reports_dir
from common.settings import Settings
from indexer.corpus import load_embeddings, load_items


def load_corpus_data(*, settings: Settings, name: str) -> CorpusData:
    """Items and embeddings of corpus ``name``; ``TuwenError`` when it is unknown or not encoded."""
    items = load_items(settings=settings, name=name)
    embeddings = load_embeddings(settings=settings, name=name)
    return corpus_data(name=name, items=items, embeddings=embeddings)


def corpus_data(*, name: str, items: list, embeddings) -> CorpusData:
    """``items``: ``CorpusItem``s in position order; ``embeddings``: a ``CorpusEmbeddings``."""
    fields: dict[str, None] = {}
    for item in items:
        fields.update(dict.fromkeys(item.attributes))
    return CorpusData(
        name=name,
        ids=[item.item_id for item in items],
        captions=[item.caption for item in items],
        image_paths=[item.image_path for item in items],
        times=[_time(item.time) for item in items],
        attributes={f: [item.attributes.get(f) for item in items] for f in fields},
        image_vectors=_vectors(embeddings.image_vectors),
        image_mask=_mask(embeddings.image_mask, embeddings.image_vectors),
        text_vectors=_vectors(embeddings.text_vectors),
        text_mask=_mask(embeddings.text_mask, embeddings.text_vectors),
        model_id=embeddings.model_id,
        # The mask modality, where the corpus generation has a third set ("masks"); see CorpusData.
        mask_vectors=_vectors(getattr(embeddings, "mask_vectors", None)),
        mask_mask=_mask(getattr(embeddings, "mask_mask", None), getattr(embeddings, "mask_vectors", None)),
        mask_area=_areas(getattr(embeddings, "mask_area", None)),
    )


def _time(value) -> str | int | None:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value


def _vectors(vectors) -> np.ndarray | None:
    return None if vectors is None else np.asarray(vectors, dtype=np.float32)


def _areas(areas) -> np.ndarray | None:
    return None if areas is None else np.asarray(areas, dtype=float)


def _mask(mask, vectors) -> np.ndarray | None:
    return None if vectors is None or mask is None else np.asarray(mask, dtype=bool)


def report_dir(*, settings: Settings, study: str, name: str, out: str | Path | None) -> Path:
    """``--out`` when given, else ``$TUWEN_HOME/analysis/<study>-<name>/`` (``common.reports``: where the
    service lists it)."""
    if out is not None:
        return Path(out).expanduser()
    safe = re.sub(r"[^\w.-]", "_", name).lstrip(".") or "corpus"  # one folder, never a path
    return reports_dir(settings.home_dir) / f"{study}-{safe}"
