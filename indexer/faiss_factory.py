"""FAISS index construction: exact inner product for small corpora, tuned IVF above that.

The choice follows autofaiss's reasoning, measured on this project's 2-core CPU by
``bench/bench_search.py`` (numbers in ``bench/RESULTS.md``):

- below ``EXACT_LIMIT`` vectors, ``Flat`` (exact) search answers a single query in about a
  millisecond. At 50,000 it already takes 10-50 ms on two busy cores, a large part of an
  interactive query's budget, while IVF answers in 0.3 ms at recall@10 0.999 (clustered data);
- above it, an inverted file with about ``4·sqrt(n)`` lists and an HNSW coarse quantizer. HNSW
  over all vectors would search faster still, but building it over a million 512-d vectors takes
  tens of minutes on two cores, while IVF trains on a sample in a minute or two;
- list storage is exact ``Flat`` up to ``FLAT_STORAGE_LIMIT`` vectors, then ``SQfp16`` (half the
  float vectors' memory, recall as good as exact), then ``SQ8`` and ``PQ`` as the memory budget
  shrinks. ``SQ8`` alone caps recall@10 near 0.96 on a million clustered vectors: its rounding
  error is as large as the gaps between the 10th and 11th neighbours;
- the search-time knob (``nprobe`` for IVF, ``efSearch`` for HNSW) is tuned at build time on a
  sample of the corpus to reach ``TARGET_RECALL`` recall@10 against exact search, and is stored in
  the index file itself, so every reader (``tuwen serve``) searches with it;
- when the automatic choice cannot reach ``MIN_RECALL`` on the corpus (data with no structure,
  like uniformly random vectors), it falls back to ``Flat``: exact and slower beats fast and wrong.
  An explicit ``--index-factory`` is kept whatever its recall.

Exact export (``indexer.export``) never uses these indexes: it searches the saved vectors.
"""

from __future__ import annotations

import logging
import math
import os

import faiss
import numpy as np

from common.errors import TuwenError

log = logging.getLogger(__name__)
EXACT_LIMIT = 20_000  # below this, exact search is already fast enough
TARGET_RECALL = 0.97  # tuned on corpus points; held-out queries come out a little lower
MIN_RECALL = 0.95  # the automatic choice falls back to exact search below this
TUNE_QUERIES = 256
TUNE_K = 10
TRAIN_PER_LIST = 50  # k-means sample: faiss wants >= 39 points per centroid
FLAT_STORAGE_LIMIT = 300_000  # up to here IVF keeps exact float vectors in its lists
PLATEAU = 0.002  # doubling the search effort gains less recall than this: stop...
PLATEAU_FLOOR = 0.8  # ...once recall is this high (uniform data creeps up from ~0 by less)


def available_memory() -> int:
    """Bytes of physical memory (the budget for an index is a fraction of it)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def ivf_lists(n: int) -> int:
    """A power of two near ``4·sqrt(n)``, with at least ``TRAIN_PER_LIST`` points per list."""
    lists = 2 ** round(math.log2(max(4 * math.sqrt(n), 1)))
    return int(max(16, min(lists, 65536, 2 ** int(math.log2(max(n // TRAIN_PER_LIST, 16))))))


def choose_factory(n: int, dim: int, *, max_memory: int | None = None) -> str:
    """A FAISS factory string suited to ``n`` vectors of ``dim`` dimensions.

    ``max_memory`` bounds the index size in bytes (default: a quarter of physical memory).
    """
    if n < EXACT_LIMIT:
        return "Flat"
    budget = max_memory if max_memory is not None else available_memory() // 4
    lists = ivf_lists(n)
    if n <= FLAT_STORAGE_LIMIT and n * dim * 4 <= budget:
        storage = "Flat"
    elif n * dim * 2 <= budget:
        storage = "SQfp16"
    elif n * dim <= budget:
        storage = "SQ8"
    else:  # 8 bytes per 32 dims: 1/16 of float vectors, for corpora far beyond this machine's RAM
        storage = f"PQ{max(dim // 32, 1)}"
    return f"IVF{lists}_HNSW32,{storage}"


def check_factory(factory: str, *, dim: int, vectors: int) -> None:
    """Refuse, before anything is encoded, a factory string FAISS cannot build for ``dim``-d
    vectors, or an inverted file with more lists than the smallest set to index has ``vectors``
    (k-means needs a point per list): found only at the end, it cost the whole encoding."""
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1].rsplit(": ", 1)[-1]
        raise TuwenError(
            f"--index-factory {factory!r}: FAISS cannot build it for {dim}-d vectors ({reason}); "
            "for example Flat, HNSW32 or IVF1024_HNSW32,Flat"
        ) from None
    ivf = _ivf(index)
    if ivf is not None and vectors < ivf.nlist:
        raise TuwenError(
            f"--index-factory {factory!r}: {ivf.nlist:,} lists need at least as many vectors to "
            f"train, and the smallest set to index has {vectors:,}"
        )


def build_index(vectors: np.ndarray, *, factory: str | None = None) -> tuple[faiss.Index, str]:
    """An inner-product index over L2-normalised ``vectors``, and the factory string used.

    Approximate indexes come back with their search parameter tuned (see ``search_params``).
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    automatic = factory is None
    factory = factory or choose_factory(n, dim)
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        index.train(_training_sample(vectors, index))
    index.add(vectors)
    recall = tune_search(index, vectors)
    if automatic and recall is not None and recall < MIN_RECALL and n * dim * 4 <= available_memory() // 2:
        log.warning("%s reaches recall@10 %.3f only on this corpus: using exact search", factory, recall)
        index = faiss.IndexFlatIP(dim)
        index.add(vectors)
        factory = "Flat"
    return index, factory


def _training_sample(vectors: np.ndarray, index: faiss.Index, seed: int = 0) -> np.ndarray:
    """k-means on every vector costs minutes at a million; a sample of 50 per list trains as well."""
    ivf = _ivf(index)
    if ivf is None:
        return vectors
    want = max(TRAIN_PER_LIST * ivf.nlist, 10_000)
    if len(vectors) <= want:
        return vectors
    rows = np.random.default_rng(seed).choice(len(vectors), want, replace=False)
    return vectors[np.sort(rows)]


def _ivf(index: faiss.Index):
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def _hnsw(index: faiss.Index):
    index = faiss.downcast_index(index)
    return index if isinstance(index, faiss.IndexHNSW) else None


def search_params(index: faiss.Index) -> dict:
    """The search-time parameters stored in ``index`` (empty for exact indexes)."""
    ivf, hnsw = _ivf(index), _hnsw(index)
    if ivf is not None:
        params = {"nlist": int(ivf.nlist), "nprobe": int(ivf.nprobe)}
        quantizer = _hnsw(ivf.quantizer)
        if quantizer is not None:
            params["quantizer_efSearch"] = int(quantizer.hnsw.efSearch)
        return params
    if hnsw is not None:
        return {"efSearch": int(hnsw.hnsw.efSearch)}
    return {}


def _set_knob(index: faiss.Index, value: int) -> None:
    ivf, hnsw = _ivf(index), _hnsw(index)
    if ivf is not None:
        ivf.nprobe = value
        quantizer = _hnsw(ivf.quantizer)
        if quantizer is not None:  # the coarse search must find the nprobe best lists reliably
            quantizer.hnsw.efSearch = max(2 * value, 64)
    elif hnsw is not None:
        hnsw.hnsw.efSearch = value


def tune_search(
    index: faiss.Index,
    vectors: np.ndarray,
    *,
    target: float = TARGET_RECALL,
    n_queries: int = TUNE_QUERIES,
    k: int = TUNE_K,
    seed: int = 0,
) -> float | None:
    """Smallest ``nprobe`` / ``efSearch`` reaching ``target`` recall@k; returns the recall reached.

    Queries are corpus points, each with itself left out of both result lists. Doubling stops
    early when recall stops growing (quantised storage caps it), and at 1/8 of the lists or
    efSearch 1024 when the target is out of reach (uniformly random data).
    """
    ivf, hnsw = _ivf(index), _hnsw(index)
    if ivf is None and hnsw is None:
        return None
    n = len(vectors)
    rows = np.random.default_rng(seed).choice(n, min(n_queries, n), replace=False)
    queries = vectors[rows]
    _, exact = faiss.knn(queries, vectors, k + 1, metric=faiss.METRIC_INNER_PRODUCT)
    truth = [set(r[r != q][:k]) for r, q in zip(exact, rows, strict=True)]
    if ivf is not None:
        values = [2**i for i in range(int(math.log2(ivf.nlist)) + 1) if 2**i <= max(ivf.nlist // 8, 1)]
    else:
        values = [16, 32, 64, 128, 256, 512, 1024]
    recall, previous = 0.0, None
    for value in values:
        _set_knob(index, value)
        _, found = index.search(queries, k + 1)
        hits = [len(t & set(f[f != q][:k])) for t, f, q in zip(truth, found, rows, strict=True)]
        reached = sum(hits) / max(sum(len(t) for t in truth), 1)
        if previous is not None and reached - recall < PLATEAU and recall >= PLATEAU_FLOOR:
            # the storage's quantisation, not the search, limits recall: probing more only costs time
            _set_knob(index, previous)
            break
        recall, previous = reached, value
        if recall >= target:
            break
    return recall
