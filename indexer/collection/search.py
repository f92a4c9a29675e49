"""Segment search: exact filtered top-k over a base segment plus a delta, in pages.

(Skeleton: the signatures are final, the bodies land in the next commits.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np

from indexer.collection.columns import Columns
from indexer.collection.filters import Filter

Where = Filter | Callable[[Columns], np.ndarray] | None


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    segment: str  # "base" | "delta"
    position: int  # the item's row in that segment's columns
    row: dict[str, Any]  # Columns.row(position): id, caption, image_path, time, attributes


@dataclass(frozen=True)
class SearchPage:
    results: list[Hit]
    next_offset: int | None  # offset of the next page, None when this one is the last
    total: int  # how many items pass the filter (live ones, base and delta)
    plan: str  # how the base was searched: "index", "filtered-index", "brute", "...+fallback"


@dataclass
class Segment:
    """A base segment: its vectors (row i = ``vector_ids[i]``), FAISS index and item columns."""

    vectors: np.ndarray
    index: faiss.Index | None
    columns: Columns
    vector_ids: list[str] | None = None  # None: vector row i is columns row i


@dataclass
class Delta:
    """Items put since the base was built: searched exactly; they shadow their base versions."""

    ids: list[str]  # of the vector rows
    vectors: np.ndarray  # (m, d) float32, L2-normalised
    columns: Columns  # every delta item (also those without a vector for this target)
    hidden_base_ids: set[str] = field(default_factory=set)  # tombstones: deleted or replaced


class SegmentSearch:
    def __init__(self, base: Segment | None, delta: Delta | None = None):
        raise NotImplementedError

    def with_delta(self, delta: Delta | None) -> SegmentSearch:
        raise NotImplementedError

    def search(self, query: np.ndarray, *, k: int = 10, offset: int = 0, where: Where = None) -> SearchPage:
        raise NotImplementedError

    def search_item(self, item_id: str, *, k: int = 10, offset: int = 0, where: Where = None) -> SearchPage:
        raise NotImplementedError

    def item_row(self, item_id: str) -> dict[str, Any] | None:
        raise NotImplementedError
