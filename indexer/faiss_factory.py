"""FAISS index construction: exact inner product for small corpora, approximate above that."""

from __future__ import annotations

import faiss
import numpy as np

EXACT_LIMIT = 100_000  # below this, exact search is already fast enough


def choose_factory(n: int, dim: int) -> str:
    """A FAISS factory string suited to ``n`` vectors of ``dim`` dimensions."""
    return "Flat" if n < EXACT_LIMIT else "HNSW32,Flat"


def build_index(vectors: np.ndarray, *, factory: str | None = None) -> tuple[faiss.Index, str]:
    """An inner-product index over L2-normalised ``vectors``, and the factory string used."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    factory = factory or choose_factory(n, dim)
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        index.train(vectors)
    index.add(vectors)
    return index, factory
