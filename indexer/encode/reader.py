"""Reader: what to encode, read from the store once on the driver, as sets of plain rows.

An ``EncodeRow`` is ``(position, item_id, source)``: ``source`` is an image path or a caption,
``position`` the row's place in its store collection. Rows are plain and picklable, so a
distributed runner can ship them to workers as they are.

An ``EncodeSet`` also carries what to do with a row whose image cannot be read at encode time
(``settle``, the one place that policy lives): a candidate is left out of the index, a query is
given the normalised mean of the readable queries so its result block stays complete.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from common.errors import TuwenError
from common.settings import Settings
from indexer import store
from indexer.query_bank import BANK_SETS, training_bank

Kind = Literal["image", "text"]
OnError = Literal["drop", "fill_mean"]
Say = Callable[[str], None]


@dataclass(frozen=True)
class EncodeRow:
    position: int
    item_id: str
    source: str  # an image path (kind "image") or a caption (kind "text")


@dataclass(frozen=True)
class EncodeSet:
    name: str
    kind: Kind
    rows: Sequence[EncodeRow]
    searchable: bool  # gets a FAISS index (candidates) or only its vectors (queries)
    on_error: OnError = "drop"

    @property
    def ids(self) -> list[str]:
        return [r.item_id for r in self.rows]

    @property
    def sources(self) -> list[str]:
        return [r.source for r in self.rows]


def settle(
    s: EncodeSet, vectors: np.ndarray, errors: Sequence[str], say: Say
) -> tuple[list[str], np.ndarray]:
    """The ids and vectors to store for ``s`` after encoding, by its ``on_error`` policy."""
    if len(errors) != len(s.rows) or len(vectors) != len(s.rows):
        raise ValueError(f"{s.name}: {len(vectors)} vectors and {len(errors)} errors for {len(s.rows)} rows")
    failed = np.array([bool(e) for e in errors], dtype=bool)
    if s.on_error == "drop":
        for row, err in zip(s.rows, errors, strict=True):
            if err:
                say(f"unreadable at encode time, left out: {row.item_id}: {err}")
        keep = np.flatnonzero(~failed)
        return [s.rows[i].item_id for i in keep], vectors[keep]
    for row, err in zip(s.rows, errors, strict=True):
        if err:
            say(f"query image {row.item_id} ({row.source}): {err}; its results use the fallback (mean query)")
    return s.ids, fill_failed(vectors, failed)


def fill_failed(vectors: np.ndarray, failed: np.ndarray) -> np.ndarray:
    """Failed rows get the normalised mean of the readable ones.

    A query filled so gets the candidates closest to a typical query: five distinct valid ids,
    so the result file stays complete. With no readable row at all the rows stay zero and ties
    fall back to candidate order.
    """
    if failed.any() and (~failed).any():
        mean = vectors[~failed].mean(axis=0)
        vectors[failed] = mean / max(float(np.linalg.norm(mean)), 1e-12)
    return vectors


def competition_sets(settings: Settings, say: Say) -> list[EncodeSet]:
    """The four sets of the competition, in encoding order, from one read of the store.

    Candidate images that ingest found missing or unreadable are left out (with a message);
    a set with no rows is not returned.
    """
    with store.open_store(settings.store_url) as session:
        cand_images = store.list_images(session, collection=store.IMAGE_CANDIDATES)
        query_images = store.list_images(session, collection=store.IMAGE_QUERIES)
        cand_texts = store.list_texts(session, collection=store.TEXT_CANDIDATES)
        query_texts = store.list_texts(session, collection=store.TEXT_QUERIES)
    if not (cand_images or cand_texts):
        raise TuwenError(
            f"no candidates in the store at {settings.store_url}: run `tuwen ingest --root DIR` first"
        )
    usable = [r for r in cand_images if r.status == store.STATUS_OK]
    if len(usable) < len(cand_images):
        missing = len(cand_images) - len(usable)
        say(f"{missing} candidate image(s) missing or unreadable: left out of the index")
    sets = [
        EncodeSet(store.IMAGE_CANDIDATES, "image", _image_rows(usable), searchable=True),
        EncodeSet(store.TEXT_CANDIDATES, "text", _text_rows(cand_texts), searchable=True),
        EncodeSet(store.TEXT_QUERIES, "text", _text_rows(query_texts), searchable=False),
        EncodeSet(
            store.IMAGE_QUERIES, "image", _image_rows(query_images), searchable=False, on_error="fill_mean"
        ),
    ]
    return [s for s in sets if s.rows]


def bank_sets(settings: Settings, *, size: int) -> list[EncodeSet]:
    """QB-Norm's query bank of the competition (``indexer.query_bank.training_bank``: at most
    ``size`` training pairs, one caption per image) as two sets, ``bank_texts`` (their captions)
    and ``bank_images`` (their images; one that fails to decode is left out), ids the image ids;
    none without training pairs or with ``size`` 0."""
    bank = training_bank(settings, size=size)
    if not bank:
        return []
    texts = [EncodeRow(i, image_id, caption) for i, (image_id, caption, _) in enumerate(bank)]
    images = [EncodeRow(i, image_id, path) for i, (image_id, _, path) in enumerate(bank)]
    return [
        EncodeSet(BANK_SETS[store.TEXT_QUERIES], "text", texts, searchable=False),
        EncodeSet(BANK_SETS[store.IMAGE_QUERIES], "image", images, searchable=False),
    ]


def _image_rows(records: list[store.ImageRecord]) -> list[EncodeRow]:
    # a query image ingest could not find has no path: encoding its id fails, and it is filled
    return [EncodeRow(r.position, r.image_id, r.path or r.image_id) for r in records]


def _text_rows(records: list[store.TextRecord]) -> list[EncodeRow]:
    return [EncodeRow(r.position, r.text_id, r.caption) for r in records]
