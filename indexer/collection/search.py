"""Segment search: exact filtered top-k over a base segment plus a delta, in pages.

A search ranks every live item that passes the filter by inner product with the query (vectors
are L2-normalised: cosine) and returns the slice ``[offset, offset + k)`` of that ranking.

**One ranking.** Candidates from every path are rescored from the stored vectors in float64 and
sorted by (score descending, id ascending): pages are consecutive slices of one ranking, the same
item gets the same score whichever path found it, and equal scores (duplicate vectors) are
ordered by id. With an exact index (``Flat``, or none) the answer is exactly the ``k`` best
passing items; with an approximate one the index picks the candidates and the rescoring orders
them.

**The planner** (per base segment and query; ``Planner``):

- no filter and no tombstone (or a filter that every item passes): the index's own search, with
  its tuned ``nprobe`` / ``efSearch``;
- an exact index, no more passing vectors than the page needs, or a filter so selective that
  scoring the passing rows costs less than the filtered index search would: *brute force* over a
  gather of the passing rows (numpy, chunked). Its cost grows with the passing rows ``c``; the
  filtered index's with the codes it scans, estimated as ``nprobe' * ntotal / nlist`` (IVF) or
  ``efSearch' * HNSW_VISITS`` (HNSW). Brute force wins when ``c * BRUTE_COST <= scanned``;
  ``BRUTE_COST`` (one gathered row against one scanned code) is measured by
  ``bench/bench_filtered_search.py`` at 1M x 512;
- otherwise a *filtered index search*: ``IDSelectorBitmap`` over the passing rows, with a search
  effort grown as the filter gets selective (IVF: ``nprobe / s``, so that the lists probed hold
  as many passing vectors as an unfiltered search compares; at 1M, ``nprobe / sqrt(s)`` kept
  recall@10 at 0.905 for s = 1%, ``nprobe / s`` at 0.98; HNSW:
  ``efSearch >= HNSW_FACTOR * wanted / s``, ``s`` = passing fraction), asking a margin more than
  the page needs. If fewer than the page needs come back while more pass, brute force answers
  (plan ``"...+fallback"``).

**Re-ranking** (``rerank="qb-norm"``, issue 21): the plain ranking above, filter, tombstones and
delta included, is computed ``RERANK_DEPTH`` deep (or as deep as the page reaches, if further);
its first ``RERANK_DEPTH`` items are re-ordered by QB-Norm (``indexer.rerank.qb_norm_query``, the
statistics column of each item: ``Segment.qb`` for the base, ``Delta.qb`` for put items), ties by
id; past them the plain order continues. Pages are slices of that one ranking. ``Hit.score``
stays the cosine similarity; ``Hit.rerank_score`` is the QB-Norm score (None past the depth).
With no more passing items than the depth, this is QB-Norm over the whole (filtered) set.

**Segments.** The base's index labels are its vector rows (``faiss_factory.build_index`` adds
without ids). Base items whose id is in ``Delta.hidden_base_ids`` or among the delta's items are
left out (tombstones: deleted, or replaced by their delta version). The delta is searched exactly.
Both rankings are merged by the same key.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import faiss
import numpy as np

from indexer.collection.columns import Columns
from indexer.collection.filters import Filter
from indexer.rerank import QueryBankStats, qb_norm_query

Where = Filter | Callable[[Columns], np.ndarray] | None
BASE, DELTA = "base", "delta"
RERANKS = ("none", "qb-norm")  # the methods a single query can use (the others need every query)
RERANK_DEPTH = 1000  # re-ranked items of the plain ranking, from its top
# One gathered+scored row costs about BRUTE_COST codes scanned by a filtered index (bench/RESULTS.md:
# at 1M x 512 on busy cores, 9,937 passing rows took 34 ms brute force and 30 ms through IVF4096 at
# nprobe 800; 1,028 rows 13 ms vs 16 ms at only nprobe 253 (recall 0.67); 99,851 rows 311 ms vs
# 19 ms). With 4, brute force takes over below ~22,000 passing rows of 1M (2.2%).
BRUTE_COST = 4.0
HNSW_VISITS = 32  # distance computations per efSearch unit, about the graph's degree
IVF_EXPONENT = 1.0  # nprobe / s: as many passing codes scanned as an unfiltered search scans
HNSW_FACTOR = 2
MAX_EF = 16_384
CHUNK_ROWS = 2048  # brute force gathers and scores this many rows at a time: 4 MiB at 512-d stays
# in cache between the gather and the products (10k rows at 1M: 20 ms in chunks of 1-2k, 27 ms in 64k)
# Scores use np.einsum, not ``@``: a matrix-vector product goes to OpenBLAS, whose threads turn a
# 0.1 ms product into 60 ms when the cores are busy (measured here at load 20: 1,000 x 512 rows);
# einsum's own SIMD loop runs on the calling thread, as one query's search should.


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    segment: str  # "base" | "delta"
    position: int  # the item's row in that segment's columns
    row: dict[str, Any]  # Columns.row(position): id, caption, image_path, time, attributes
    rerank_score: float | None = None  # the re-ranked score (rerank="qb-norm", within its depth)


@dataclass(frozen=True)
class SearchPage:
    results: list[Hit]
    next_offset: int | None  # offset of the next page, None when this one is the last
    total: int  # how many live items pass the filter (base and delta)
    plan: str  # how the base was searched: "index", "filtered-index", "brute", "...+fallback"


@dataclass(frozen=True)
class Planner:
    brute_cost: float = BRUTE_COST
    force: str | None = None  # "brute" | "index": one path whatever the costs (tests, bench)
    ivf_exponent: float = IVF_EXPONENT
    hnsw_factor: float = HNSW_FACTOR
    margin: int = 10  # candidates asked beyond the page, rescored exactly

    def choose(self, segment: Segment, count: int, need: int, *, filtered: bool) -> str:
        """ "brute", "index" (no filter) or "filtered-index" for ``count`` passing vectors."""
        index_plan = "filtered-index" if filtered else "index"
        if segment.exact or count <= need:
            return "brute"
        if self.force is not None:
            return "brute" if self.force == "brute" else index_plan
        if not filtered:
            return "index"
        scanned = scan_estimate(segment.index, count / len(segment.vectors), need + self.margin, self)
        return "brute" if count * self.brute_cost <= scanned else index_plan


@dataclass
class Segment:
    """A base segment: its vectors (row i = ``vector_ids[i]``), FAISS index and item columns.

    ``vectors`` may be memory-mapped (``np.load(..., mmap_mode="r")``). ``index`` labels must be
    vector rows; None means exact search over the vectors.
    """

    vectors: np.ndarray
    index: faiss.Index | None
    columns: Columns
    vector_ids: list[str] | None = None  # None: vector row i is columns row i
    qb: QueryBankStats | None = None  # QB-Norm's statistics, a column per vector row

    def __post_init__(self) -> None:
        count = len(self.columns) if self.vector_ids is None else len(self.vector_ids)
        if len(self.vectors) != count or (self.index is not None and self.index.ntotal != len(self.vectors)):
            raise ValueError(
                f"segment: {len(self.vectors)} vectors, {count} ids, "
                f"{self.index.ntotal if self.index is not None else '-'} indexed"
            )
        if self.qb is not None and len(self.qb.log_norm) != len(self.vectors):
            columns = len(self.qb.log_norm)
            raise ValueError(f"segment: {columns} QB-Norm columns for {len(self.vectors)} vectors")

    @cached_property
    def column_rows(self) -> np.ndarray | None:
        """Columns row of each vector row (None when they are the same)."""
        if self.vector_ids is None:
            return None
        rows = [self.columns.row_of(i) for i in self.vector_ids]
        if any(r is None for r in rows):
            raise ValueError("segment: a vector id is not among the columns' ids")
        return np.asarray(rows, dtype=np.int64)

    @cached_property
    def _vector_row_of(self) -> dict[str, int]:
        return {item_id: i for i, item_id in enumerate(self.vector_ids or ())}

    def vector_row(self, item_id: str) -> int | None:
        if self.vector_ids is None:
            return self.columns.row_of(item_id)
        return self._vector_row_of.get(item_id)

    def id_at(self, vector_row: int) -> str:
        return self.columns.ids[self.column_row(vector_row)]

    def column_row(self, vector_row: int) -> int:
        rows = self.column_rows
        return int(vector_row if rows is None else rows[vector_row])

    def passing(self, where: Where) -> np.ndarray | None:
        """The filter's mask over vector rows (None: no filter)."""
        if where is None or (isinstance(where, Filter) and not where):
            return None
        mask = np.asarray(where(self.columns), dtype=bool)
        rows = self.column_rows
        return mask if rows is None else mask[rows]

    @cached_property
    def exact(self) -> bool:
        return self.index is None or isinstance(faiss.downcast_index(self.index), faiss.IndexFlat)


@dataclass
class Delta:
    """Items put since the base was built: searched exactly; they shadow their base versions."""

    ids: list[str]  # of the vector rows
    vectors: np.ndarray  # (m, d) float32, L2-normalised
    columns: Columns  # every delta item (also those without a vector for this target)
    hidden_base_ids: set[str] = field(default_factory=set)  # tombstones: deleted or replaced
    qb: QueryBankStats | None = None  # QB-Norm's columns of the vector rows (query_bank.SetBank.columns)

    def segment(self) -> Segment:
        vectors = np.asarray(self.vectors, dtype=np.float32)
        return Segment(vectors, None, self.columns, list(self.ids), qb=self.qb)


@dataclass
class _Found:
    """A segment's candidates: vector rows with exact scores, and how many items passed."""

    rows: np.ndarray
    scores: np.ndarray  # float64
    total: int
    plan: str


class SegmentSearch:
    """Searches one base segment and its delta; immutable (``with_delta`` for a new delta)."""

    def __init__(self, base: Segment | None, delta: Delta | None = None, *, planner: Planner | None = None):
        self.base = base
        self.delta = delta
        self.planner = planner or Planner()
        self._delta_segment = delta.segment() if delta is not None and len(delta.ids) else None
        self._hidden = set(delta.hidden_base_ids) | set(delta.columns.ids) if delta is not None else set()
        self._base_live = self._live_mask()

    def with_delta(self, delta: Delta | None) -> SegmentSearch:
        """The same base (its cached id maps reused) with another delta."""
        return SegmentSearch(self.base, delta, planner=self.planner)

    def _live_mask(self) -> np.ndarray | None:
        """Base vector rows not hidden by the delta (None when nothing is hidden)."""
        if self.base is None or not self._hidden:
            return None
        rows = [r for r in map(self.base.vector_row, self._hidden) if r is not None]
        if not rows:
            return None
        live = np.ones(len(self.base.vectors), dtype=bool)
        live[rows] = False
        return live

    # --- items ----------------------------------------------------------------------------------

    def item_row(self, item_id: str) -> dict[str, Any] | None:
        """The live version of one item (the delta's if it has one), None if unknown or deleted."""
        if self.delta is not None and (row := self.delta.columns.row_of(item_id)) is not None:
            return self.delta.columns.row(row)
        if item_id in self._hidden or self.base is None:
            return None
        row = self.base.columns.row_of(item_id)
        return None if row is None else self.base.columns.row(row)

    def _item_vector(self, item_id: str) -> tuple[str, int, np.ndarray]:
        """(segment, vector row, vector) of a live item; KeyError if it has none here."""
        delta = self._delta_segment
        if self.delta is not None and self.delta.columns.row_of(item_id) is not None:
            row = delta.vector_row(item_id) if delta is not None else None
            if row is not None:
                return DELTA, row, np.asarray(delta.vectors[row], dtype=np.float32)
        elif self.base is not None and item_id not in self._hidden:
            row = self.base.vector_row(item_id)
            if row is not None:
                return BASE, row, np.asarray(self.base.vectors[row], dtype=np.float32)
        raise KeyError(item_id)

    # --- searching ------------------------------------------------------------------------------

    def search(
        self, query: np.ndarray, *, k: int = 10, offset: int = 0, where: Where = None, rerank: str = "none"
    ) -> SearchPage:
        """Items ``offset .. offset + k - 1`` of the ranking of live passing items by ``query``
        (re-ranked by ``rerank``, one of ``RERANKS``: see the module's docstring)."""
        return self._search(_as_query(query), k, offset, where, None, rerank)

    @property
    def can_rerank(self) -> bool:
        """Whether QB-Norm's statistics cover every vector searched (the base and the delta)."""
        segments = [s for s in (self.base, self._delta_segment) if s is not None]
        return bool(segments) and all(s.qb is not None for s in segments)

    def search_item(self, item_id: str, *, k: int = 10, offset: int = 0, where: Where = None) -> SearchPage:
        """More like ``item_id``: its own vector (delta version first) as the query, itself left out.

        Raises KeyError when the item is unknown, deleted, or has no vector for this target.
        """
        segment, row, vector = self._item_vector(item_id)
        return self._search(_as_query(vector), k, offset, where, (segment, row))

    def _search(
        self,
        q: np.ndarray,
        k: int,
        offset: int,
        where: Where,
        exclude: tuple[str, int] | None,
        rerank: str = "none",
    ) -> SearchPage:
        if k < 1 or offset < 0:
            raise ValueError(f"k must be >= 1 and offset >= 0 (k={k}, offset={offset})")
        if rerank not in RERANKS:
            raise ValueError(f"rerank must be one of {', '.join(RERANKS)}, not {rerank!r}")
        if rerank != "none" and not self.can_rerank:
            raise ValueError("rerank qb-norm: the segments have no QB-Norm statistics")
        page_end = offset + k
        want = max(page_end, RERANK_DEPTH) if rerank != "none" else page_end
        found = {}
        if self.base is not None:
            mask = _and(self.base.passing(where), self._base_live)
            skip = exclude[1] if exclude and exclude[0] == BASE else None
            found[BASE] = self._segment_top(self.base, q, want, mask, skip)
        if self._delta_segment is not None:
            mask = self._delta_segment.passing(where)
            skip = exclude[1] if exclude and exclude[0] == DELTA else None
            found[DELTA] = _brute(self._delta_segment, q, want, mask, skip)
        ranked = sorted(
            (-float(score), self._segment(name).id_at(row), name, int(row))
            for name, f in found.items()
            for row, score in zip(f.rows, f.scores, strict=True)
        )
        total = sum(f.total for f in found.values())
        reranked: dict[tuple[str, int], float] = {}
        if rerank != "none":
            ranked, reranked = self._qb_norm(ranked)
        hits = [
            self._hit(name, row, -neg, reranked.get((name, row)))
            for neg, _, name, row in ranked[offset:page_end]
        ]
        plan = found[BASE].plan if BASE in found else "delta"
        return SearchPage(hits, page_end if page_end < total else None, total, plan)

    def _qb_norm(self, ranked: list[tuple]) -> tuple[list[tuple], dict[tuple[str, int], float]]:
        """The plain ranking's first ``RERANK_DEPTH`` entries re-ordered by QB-Norm (ties by id),
        the rest after them; and each re-ranked entry's QB-Norm score."""
        head, tail = ranked[:RERANK_DEPTH], ranked[RERANK_DEPTH:]
        if not head:
            return ranked, {}
        stats = [self._segment(name).qb for _, _, name, _ in head]
        rows = [row for _, _, _, row in head]
        shortlist = QueryBankStats(
            np.array([s.log_norm[r] for s, r in zip(stats, rows, strict=True)], dtype=np.float64),
            np.array([bool(s.hubs[r]) for s, r in zip(stats, rows, strict=True)], dtype=bool),
            stats[0].beta,
            stats[0].k,
        )
        plain = np.array([-neg for neg, *_ in head], dtype=np.float64)
        if not shortlist.hubs[0]:  # the top-1 is no hub: QB-Norm keeps the similarities (and order)
            return ranked, {(name, row): float(s) for (_, _, name, row), s in zip(head, plain, strict=True)}
        scores = qb_norm_query(plain, shortlist)  # head[0] is the shortlist's best: its hub flag decides
        order = sorted(range(len(head)), key=lambda i: (-float(scores[i]), head[i][1]))
        new = {(head[i][2], head[i][3]): float(scores[i]) for i in order}
        return [head[i] for i in order] + tail, new

    def _segment(self, name: str) -> Segment:
        return self.base if name == BASE else self._delta_segment

    def _hit(self, name: str, vector_row: int, score: float, rerank_score: float | None = None) -> Hit:
        segment = self._segment(name)
        position = segment.column_row(vector_row)
        row = segment.columns.row(position)
        return Hit(row["id"], score, name, position, row, rerank_score)

    def _segment_top(
        self, segment: Segment, q: np.ndarray, want: int, mask: np.ndarray | None, skip: int | None
    ) -> _Found:
        """The planner: brute force, the index alone, or the index with a selector (+ fallback)."""
        count = len(segment.vectors) if mask is None else int(np.count_nonzero(mask))
        if mask is not None and count == len(mask):
            mask = None  # everything passes: the index's own search, no selector
        need = want + (skip is not None)  # one more when the query item itself will be dropped
        plan = self.planner.choose(segment, count, need, filtered=mask is not None)
        if plan == "brute":
            return _brute(segment, q, want, mask, skip)
        found = _index_top(segment, q, need, mask, count, self.planner, plan)
        if found is None or len(found.rows) < min(need, count):  # a selective filter starved the index
            fallback = _brute(segment, q, want, mask, skip)
            return _Found(fallback.rows, fallback.scores, fallback.total, f"{plan}+fallback")
        return _drop(found, skip, mask)


# --- the two paths ----------------------------------------------------------------------------

TIE_TOLERANCE = 1e-4  # float32 scores select candidates; float64 ones rank them (unit vectors)


def _as_query(query: np.ndarray) -> np.ndarray:
    q = np.asarray(query, dtype=np.float32)
    if q.ndim == 2 and q.shape[0] == 1:
        q = q[0]
    if q.ndim != 1:
        raise ValueError(f"one query vector expected, got shape {q.shape}")
    return np.ascontiguousarray(q)


def _and(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    if a is None or b is None:
        return a if b is None else b
    return a & b


def _scores32(vectors: np.ndarray, rows: np.ndarray | None, q: np.ndarray) -> np.ndarray:
    """Inner products of ``q`` with the rows (all rows when None), gathered chunk by chunk."""
    n = len(vectors) if rows is None else len(rows)
    out = np.empty(n, dtype=np.float32)
    for start in range(0, n, CHUNK_ROWS):
        stop = min(n, start + CHUNK_ROWS)
        block = vectors[start:stop] if rows is None else vectors[rows[start:stop]]
        out[start:stop] = np.einsum("ij,j->i", np.asarray(block, dtype=np.float32), q)
    return out


def exact_scores(vectors: np.ndarray, rows: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Float64 inner products: the scores every path reports and ranks by."""
    if not len(rows):
        return np.empty(0, dtype=np.float64)
    return np.einsum("ij,j->i", np.asarray(vectors[rows], dtype=np.float64), q.astype(np.float64))


def _top_with_ties(scores: np.ndarray, need: int) -> np.ndarray:
    """Positions of the ``need`` best scores and of every score within TIE_TOLERANCE of them."""
    if len(scores) <= need:
        return np.arange(len(scores))
    kth = np.partition(scores, len(scores) - need)[len(scores) - need]
    return np.flatnonzero(scores >= kth - TIE_TOLERANCE)


def _brute(segment: Segment, q: np.ndarray, want: int, mask: np.ndarray | None, skip: int | None) -> _Found:
    """Exact: score every passing vector, keep the best ``want`` (and ties), rescore in float64."""
    rows = None if mask is None else np.flatnonzero(mask)
    count = len(segment.vectors) if rows is None else len(rows)
    scores = _scores32(segment.vectors, rows, q)
    pick = _top_with_ties(scores, want + (skip is not None))
    candidates = pick if rows is None else rows[pick]
    found = _Found(candidates, exact_scores(segment.vectors, candidates, q), count, "brute")
    return _drop(found, skip, mask)


def _drop(found: _Found, skip: int | None, mask: np.ndarray | None) -> _Found:
    """Leave out the query item itself (more like this), and from the count if it passed."""
    if skip is None:
        return found
    keep = found.rows != skip
    passed = mask is None or bool(mask[skip])
    return _Found(found.rows[keep], found.scores[keep], found.total - passed, found.plan)


def _ivf_of(index: faiss.Index):
    index = faiss.downcast_index(index)
    return index if isinstance(index, faiss.IndexIVF) else None


def _hnsw_of(index: faiss.Index):
    index = faiss.downcast_index(index)
    return index if isinstance(index, faiss.IndexHNSW) else None


def effort(index: faiss.Index, selectivity: float, fetch: int, planner: Planner) -> int | None:
    """nprobe (IVF) or efSearch (HNSW) for a filter passing ``selectivity`` of the vectors."""
    selectivity = min(max(selectivity, 1e-9), 1.0)
    if (ivf := _ivf_of(index)) is not None:
        return int(min(ivf.nlist, math.ceil(ivf.nprobe * selectivity**-planner.ivf_exponent)))
    if (hnsw := _hnsw_of(index)) is not None:
        wanted = math.ceil(planner.hnsw_factor * fetch / selectivity)
        return int(min(MAX_EF, max(hnsw.hnsw.efSearch, wanted)))
    return None


def scan_estimate(index: faiss.Index, selectivity: float, fetch: int, planner: Planner) -> float:
    """Codes a filtered search of ``index`` would compare the query with (all, for other types)."""
    value = effort(index, selectivity, fetch, planner)
    if (ivf := _ivf_of(index)) is not None:
        return value * index.ntotal / ivf.nlist
    if _hnsw_of(index) is not None:
        return value * HNSW_VISITS
    return float(index.ntotal)


def search_parameters(index: faiss.Index, mask: np.ndarray, count: int, fetch: int, planner: Planner):
    """``SearchParameters`` restricting ``index`` to ``mask``, with the effort grown to match.

    Returns (params, bitmap): the bitmap must outlive the search (the selector points into it).
    """
    bits = np.packbits(mask, bitorder="little")
    sel = faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits))
    value = effort(index, count / len(mask), fetch, planner)
    if _ivf_of(index) is not None:
        params = faiss.SearchParametersIVF(sel=sel, nprobe=value)
        quantizer = _hnsw_of(_ivf_of(index).quantizer)
        if quantizer is not None:  # the coarse search must find the nprobe best lists
            ef = max(2 * value, 64, quantizer.hnsw.efSearch)
            params.quantizer_params = faiss.SearchParametersHNSW(efSearch=ef)
    elif _hnsw_of(index) is not None:
        params = faiss.SearchParametersHNSW(sel=sel, efSearch=value)
    else:
        params = faiss.SearchParameters(sel=sel)
    return params, bits


def _index_top(
    segment: Segment,
    q: np.ndarray,
    need: int,
    mask: np.ndarray | None,
    count: int,
    planner: Planner,
    plan: str,
) -> _Found | None:
    """The index's candidates (with a selector when filtered), rescored; None if it cannot filter."""
    fetch = min(need + planner.margin, count)
    params, bits = (
        (None, None) if mask is None else search_parameters(segment.index, mask, count, fetch, planner)
    )
    try:
        _, labels = segment.index.search(q[None, :], fetch, params=params)
    except RuntimeError:  # an index type that takes no selector
        return None
    assert bits is None or len(bits)  # the selector pointed into it until here
    rows = labels[0][labels[0] >= 0].astype(np.int64)
    if mask is not None:
        rows = rows[mask[rows]]
    return _Found(rows, exact_scores(segment.vectors, rows, q), count, plan)
