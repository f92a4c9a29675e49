"""Training-free re-ranking of a query × candidate similarity matrix (pure numpy).

Used by ``tuwen eval`` (training), ``tuwen export`` (indexer) and, through ``bank_stats`` and
``qb_norm_query``, by the service. Every method returns *scores* of the same shape whose order
within each row is the new ranking; scores are comparable only within a row.

Methods (``METHODS``), ``beta`` being the inverse temperature (default ``DEFAULT_BETA`` = 20, the
value QB-Norm's authors use for CLIP-like cosine similarities; temperature = 1/beta = 0.05):

- ``none``: the similarities themselves.
- ``dual-softmax``: the inverted softmax (Smith et al., ICLR 2017; the "dual softmax" of CAMoE +
  DSL, Cheng et al. 2021): each similarity is divided by a softmax normaliser over the *query*
  axis, ``exp(beta s[q, j]) / sum_q' exp(beta s[q', j])``, so a "hub" candidate close to every
  query is damped for all of them. Transductive: it uses the other test queries.
- ``qb-norm``: Querybank Normalisation with the dynamic inverted softmax (Bogolin, Croitoru, Jin,
  Liu, Albanie, "Cross Modal Retrieval with Querybank Normalisation", CVPR 2022), exactly as the
  authors' ``dynamic_inverted_softmax.py::qb_norm`` (github.com/ioanacroi/qb-norm, commit
  76d4d90) computes it: with a bank ``B`` of queries that are *not* the test queries,
  ``norm[j] = sum_b exp(beta B[b, j])`` and ``hubs`` = the candidates in the top ``k`` (k = 1) of
  some bank query; a test query whose own top-1 is a hub gets ``exp(beta s[q, j]) / norm[j]``,
  any other keeps ``s[q, j]``. Not transductive: the bank statistics (``bank_stats``) are fixed
  before the test queries are seen and apply to one query at a time (``qb_norm_query``).
- ``one-to-one``: when queries and candidates pair one to one (a held-out split), an assignment:
  the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``, each candidate used
  ``ceil(n_queries / n_candidates)`` times) up to ``HUNGARIAN_MAX`` on the larger side, each
  query's assigned candidate ranked first and the rest in plain order; above it the entropic
  relaxation (Sinkhorn, Cuturi 2013) with uniform marginals, each row ranked by its transport plan
  ``beta s[q, j] + log c[j]``. Transductive.

For the service (``"rerank": "qb-norm"`` in a search body): the index build and ``corpus encode``
keep a bank with each generation and store ``bank_stats`` of it once per searchable set
(``indexer.query_bank``: ``<set>.qbnorm.npz``); the server loads them with the generation and, per
query, re-orders the first ``RERANK_DEPTH`` items of its plain ranking by ``qb_norm_query``
(``indexer.collection.search``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import TuwenError
from common.files import atomic_path

METHODS = ("none", "dual-softmax", "qb-norm", "one-to-one")
TRANSDUCTIVE = ("dual-softmax", "one-to-one")  # they use the other test queries; qb-norm does not
DEFAULT_BETA = 20.0
QB_NORM_K = 1  # the authors' default: hubs are the bank queries' top-1 candidates
HUNGARIAN_MAX = 2000  # above this many queries or candidates, Sinkhorn
SINKHORN_ITERS = 200
CHUNK = 4096  # rows of a similarity block computed at once
DEFAULT_BANK_SIZE = 5000  # bank queries drawn from the training pairs by eval and export


def parse_methods(text: str | None) -> list[str]:
    """``"none,qb-norm"`` → ``["none", "qb-norm"]``, checked; ``none`` first when present."""
    methods = [m.strip() for m in (text or "none").split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise TuwenError(
            f"unknown re-ranking {', '.join(unknown) or '(none given)'}: use {', '.join(METHODS)}"
        )
    ordered = list(dict.fromkeys(methods))
    return sorted(ordered, key=lambda m: m != "none")


def bank_sample(pairs: Sequence[tuple[str, str, str]], *, size: int, seed: int = 0) -> list[int]:
    """Positions in ``pairs`` ((image_id, caption, path), training pairs) of QB-Norm's query bank:
    the first caption of up to ``size`` distinct images, drawn with ``seed``, in pair order. Their
    captions are the text→image bank, their images the image→text bank."""
    first: dict[str, int] = {}
    for i, (image_id, _caption, _path) in enumerate(pairs):
        first.setdefault(image_id, i)
    images = sorted(first)
    random.Random(seed).shuffle(images)
    return sorted(first[i] for i in images[:size])


def _column_logsumexp(x: np.ndarray) -> np.ndarray:
    top = x.max(axis=0)
    return top + np.log(np.exp(x - top).sum(axis=0))


def dual_softmax(scores: np.ndarray, *, beta: float = DEFAULT_BETA) -> np.ndarray:
    """``log`` of the inverted softmax: ``beta s[q, j] - log sum_q' exp(beta s[q', j])`` (float32:
    a 5,000 × 50,000 matrix is 1 GB; the normaliser is summed a block of queries at a time)."""
    scores = np.asarray(scores, dtype=np.float32)
    blocks = (scores[start : start + CHUNK] for start in range(0, len(scores), CHUNK))
    log_norm = bank_stats_of_blocks(blocks, scores.shape[1], beta=beta).log_norm.astype(np.float32)
    out = scores * np.float32(beta)
    out -= log_norm
    return out


@dataclass(frozen=True)
class QueryBankStats:
    """What QB-Norm keeps of its bank, per candidate: ``log_norm[j] = log sum_b exp(beta B[b, j])``
    and ``hubs[j]`` (in some bank query's top ``k``). Computed once (``bank_stats``) and reused for
    every query; ``save`` / ``load`` keep it beside an index generation."""

    log_norm: np.ndarray  # (n_candidates,) float64
    hubs: np.ndarray  # (n_candidates,) bool
    beta: float = DEFAULT_BETA
    k: int = QB_NORM_K

    def save(self, path: str | Path) -> Path:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, log_norm=self.log_norm, hubs=self.hubs, beta=self.beta, k=self.k)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> QueryBankStats:
        with np.load(path) as data:
            return cls(data["log_norm"], data["hubs"], float(data["beta"]), int(data["k"]))


def bank_stats(
    bank: np.ndarray, candidates: np.ndarray, *, beta: float = DEFAULT_BETA, k: int = QB_NORM_K
) -> QueryBankStats:
    """QB-Norm's statistics of a bank of query vectors ``bank`` (n_bank, d) against ``candidates``
    (n_candidates, d), both L2-normalised; the bank × candidate similarities are computed a block
    of ``CHUNK`` bank rows at a time, so a 50,000 × 50,000 bank fits in memory."""
    candidates = np.ascontiguousarray(candidates, dtype=np.float32)
    bank = np.asarray(bank, dtype=np.float32)
    blocks = (bank[start : start + CHUNK] @ candidates.T for start in range(0, len(bank), CHUNK))
    return bank_stats_of_blocks(blocks, len(candidates), beta=beta, k=k)


def bank_stats_of_scores(
    scores: np.ndarray, *, beta: float = DEFAULT_BETA, k: int = QB_NORM_K
) -> QueryBankStats:
    """``bank_stats`` of an already computed bank × candidate similarity matrix (an ensemble's)."""
    scores = np.asarray(scores)
    blocks = (scores[start : start + CHUNK] for start in range(0, len(scores), CHUNK))
    return bank_stats_of_blocks(blocks, scores.shape[1], beta=beta, k=k)


def bank_stats_of_blocks(
    blocks, n_candidates: int, *, beta: float = DEFAULT_BETA, k: int = QB_NORM_K
) -> QueryBankStats:
    """``bank_stats`` of bank × candidate similarities given a block of bank rows at a time."""
    log_norm = np.full(n_candidates, -np.inf)
    hubs = np.zeros(n_candidates, dtype=bool)
    kk = min(k, n_candidates)
    seen = 0
    for sims in blocks:
        seen += len(sims)
        block = np.float32(beta) * np.asarray(sims, dtype=np.float32)  # float32: 0.8 GB a block at 50,000
        log_norm = np.logaddexp(log_norm, _column_logsumexp(block))
        hubs[np.unique(np.argpartition(-sims, kk - 1, axis=1)[:, :kk])] = True
    if not seen:
        raise TuwenError("QB-Norm needs a non-empty query bank")
    return QueryBankStats(log_norm, hubs, beta, k)


def dual_softmax_stats(blocks, n_candidates: int, *, beta: float = DEFAULT_BETA) -> QueryBankStats:
    """The dual softmax as QB-Norm statistics, for scores that come a block of queries at a time:
    the bank is the test queries themselves and every row is normalised (every candidate a hub)."""
    column = bank_stats_of_blocks(blocks, n_candidates, beta=beta)
    return QueryBankStats(column.log_norm, np.ones_like(column.hubs), beta, column.k)


def qb_norm_scores(scores: np.ndarray, stats: QueryBankStats) -> np.ndarray:
    """QB-Norm of a (n_queries, n_candidates) matrix: rows whose top-1 is a hub are normalised
    (in log form, ``beta s - log_norm``, the same order as ``exp(beta s) / norm``), others kept."""
    out = np.array(scores, dtype=np.float32)  # a copy
    normalise = np.flatnonzero(stats.hubs[out.argmax(axis=1)])
    log_norm = stats.log_norm.astype(np.float32)
    for start in range(0, len(normalise), CHUNK):  # in place, a block of rows at a time
        rows = normalise[start : start + CHUNK]
        out[rows] = np.float32(stats.beta) * out[rows] - log_norm
    return out


def qb_norm_query(
    scores: np.ndarray, stats: QueryBankStats, candidates: np.ndarray | None = None
) -> np.ndarray:
    """QB-Norm of one query's scores: over every candidate (``scores`` of length n_candidates), or
    over a shortlist (``candidates``: their indices, e.g. the rows a FAISS search returned, best
    first; the shortlist's best stands for the query's top-1)."""
    scores = np.asarray(scores, dtype=np.float32)
    rows = np.arange(len(scores)) if candidates is None else np.asarray(candidates)
    if len(rows) == 0 or not stats.hubs[rows[int(scores.argmax())]]:
        return scores
    return np.float32(stats.beta) * scores - stats.log_norm[rows].astype(np.float32)


def _hungarian(scores: np.ndarray) -> np.ndarray:
    # imported here: scipy.optimize takes seconds to import, only this method needs it, and the
    # CLI's parser (which imports this module for METHODS) and the service must not pay for it
    from scipy.optimize import linear_sum_assignment

    n_q, n_c = scores.shape
    copies = math.ceil(n_q / n_c)
    tiled = np.tile(scores, (1, copies))  # each candidate may take ``copies`` queries
    rows, cols = linear_sum_assignment(tiled, maximize=True)
    out = np.asarray(scores, dtype=np.float64).copy()
    bonus = out.max() - out.min() + 1.0
    out[rows, cols % n_c] += bonus  # the assigned candidate first, the rest in plain order
    return out


def sinkhorn_potentials(
    scores: np.ndarray, *, beta: float = DEFAULT_BETA, iters: int = SINKHORN_ITERS, tol: float = 1e-6
) -> np.ndarray:
    """``log c``: the candidates' scalings of the entropic transport plan ``diag(r) K diag(c)``,
    ``K = exp(beta (s - max s))``, whose rows sum to 1 and columns to n_queries / n_candidates."""
    kernel = np.exp(beta * (np.asarray(scores, dtype=np.float32) - np.float32(np.max(scores))))
    n_q, n_c = kernel.shape
    col_target = n_q / n_c
    c = np.ones(n_c, dtype=np.float64)
    for _ in range(iters):
        r = 1.0 / np.maximum(kernel @ c.astype(np.float32), 1e-30)
        col = kernel.T @ r.astype(np.float32)
        c_new = col_target / np.maximum(col, 1e-30)
        done = np.max(np.abs(np.log(c_new) - np.log(c))) < tol
        c = c_new
        if done:
            break
    return np.log(c)


def one_to_one(scores: np.ndarray, *, beta: float = DEFAULT_BETA) -> np.ndarray:
    """Hungarian assignment up to ``HUNGARIAN_MAX`` rows or columns, Sinkhorn above."""
    scores = np.asarray(scores)
    if max(scores.shape) <= HUNGARIAN_MAX:
        return _hungarian(scores)
    log_c = sinkhorn_potentials(scores, beta=beta).astype(np.float32)
    out = np.asarray(scores, dtype=np.float32) * np.float32(beta)
    out += log_c
    return out


def rerank(
    scores: np.ndarray,
    method: str,
    *,
    stats: QueryBankStats | None = None,
    beta: float = DEFAULT_BETA,
) -> np.ndarray:
    """``scores`` (n_queries, n_candidates) re-ranked by ``method``; qb-norm needs ``stats``."""
    if method == "none":
        return scores
    if method == "dual-softmax":
        return dual_softmax(scores, beta=beta)
    if method == "qb-norm":
        if stats is None:
            raise TuwenError("qb-norm needs the statistics of a query bank (bank_stats)")
        return qb_norm_scores(scores, stats)
    if method == "one-to-one":
        return one_to_one(scores, beta=beta)
    raise TuwenError(f"unknown re-ranking {method!r}: use {', '.join(METHODS)}")


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores of each row, best first (ties: lower index first)."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.lexsort((part, -np.take_along_axis(scores, part, axis=1)), axis=1)
    return np.take_along_axis(part, order, axis=1)
