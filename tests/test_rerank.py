"""``indexer.rerank``: each method against a slow, obviously correct reference on seeded synthetic
similarities, and a planted hub that must lose its extra top-1s."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from common.errors import TuwenError
from indexer import rerank
from indexer.rerank import QueryBankStats, bank_stats, qb_norm_query, qb_norm_scores, top_k

BETA = rerank.DEFAULT_BETA


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _paired(n: int, d: int = 16, noise: float = 0.8, seed: int = 0):
    """Queries and candidates that pair one to one (query i ↔ candidate i), with noise."""
    rng = np.random.default_rng(seed)
    candidates = _unit(rng.normal(size=(n, d)))
    queries = _unit(candidates + noise * rng.normal(size=(n, d)) / math.sqrt(d))
    return queries, candidates


def _order(scores: np.ndarray) -> list[list[int]]:
    return [sorted(range(len(row)), key=lambda j: (-row[j], j)) for row in scores.tolist()]


# --- slow references -------------------------------------------------------------------------


def ref_dual_softmax(s: list[list[float]], beta: float) -> list[list[float]]:
    n_q, n_c = len(s), len(s[0])
    col = [sum(math.exp(beta * s[q][j]) for q in range(n_q)) for j in range(n_c)]
    return [[math.exp(beta * s[q][j]) / col[j] for j in range(n_c)] for q in range(n_q)]


def ref_qb_norm(test: list[list[float]], bank: list[list[float]], beta: float) -> list[list[float]]:
    """The authors' qb_norm with k = 1, written out with loops."""
    n_c = len(test[0])
    hubs = {max(range(n_c), key=lambda j: row[j]) for row in bank}
    norm = [sum(math.exp(beta * row[j]) for row in bank) for j in range(n_c)]
    out = []
    for row in test:
        if max(range(n_c), key=lambda j: row[j]) in hubs:
            out.append([math.exp(beta * row[j]) / norm[j] for j in range(n_c)])
        else:
            out.append(list(row))
    return out


def ref_best_assignment(s: list[list[float]]) -> tuple[int, ...]:
    """Every permutation tried."""
    n = len(s)
    return max(itertools.permutations(range(n)), key=lambda p: sum(s[i][p[i]] for i in range(n)))


def ref_sinkhorn_plan(s: list[list[float]], beta: float, iters: int = 2000) -> list[list[float]]:
    """Alternately scale the rows of exp(beta s) to sum 1 and the columns to n_q / n_c."""
    n_q, n_c = len(s), len(s[0])
    plan = [[math.exp(beta * s[q][j]) for j in range(n_c)] for q in range(n_q)]
    for _ in range(iters):
        for q in range(n_q):
            total = sum(plan[q])
            plan[q] = [v / total for v in plan[q]]
        for j in range(n_c):
            total = sum(plan[q][j] for q in range(n_q))
            for q in range(n_q):
                plan[q][j] *= (n_q / n_c) / total
    return plan


# --- each method against its reference ---------------------------------------------------------


def test_dual_softmax_matches_the_inverted_softmax():
    queries, candidates = _paired(12, seed=1)
    s = queries @ candidates.T
    got = np.exp(rerank.dual_softmax(s, beta=BETA))
    np.testing.assert_allclose(got, ref_dual_softmax(s.tolist(), BETA), rtol=1e-5)  # float32


def test_qb_norm_matches_the_authors_formula():
    rng = np.random.default_rng(2)
    candidates = _unit(rng.normal(size=(15, 8)))
    test, bank = _unit(rng.normal(size=(10, 8))) @ candidates.T, _unit(rng.normal(size=(40, 8)))
    stats = bank_stats(bank, candidates, beta=BETA)
    want = ref_qb_norm(test.tolist(), (bank @ candidates.T).tolist(), BETA)
    assert 0 < stats.hubs.sum() < 15
    assert _order(qb_norm_scores(test, stats)) == _order(np.array(want))
    # the log form equals the ratio on the normalised rows, the raw similarity on the others
    for q, row in enumerate(qb_norm_scores(test, stats)):
        normalised = stats.hubs[test[q].argmax()]
        np.testing.assert_allclose(
            np.exp(row) if normalised else row, want[q], rtol=1e-5
        )  # float32 bank sims


def test_qb_norm_bank_statistics_do_not_depend_on_the_chunking(monkeypatch):
    rng = np.random.default_rng(3)
    candidates, bank = _unit(rng.normal(size=(30, 8))), _unit(rng.normal(size=(50, 8)))
    whole = bank_stats(bank, candidates)
    monkeypatch.setattr(rerank, "CHUNK", 7)
    chunked = bank_stats(bank, candidates)
    np.testing.assert_allclose(whole.log_norm, chunked.log_norm, rtol=1e-6)
    assert (whole.hubs == chunked.hubs).all()


def test_qb_norm_one_query_at_a_time_and_on_a_shortlist(tmp_path):
    rng = np.random.default_rng(4)
    candidates = _unit(rng.normal(size=(20, 8)))
    stats = bank_stats(_unit(rng.normal(size=(60, 8))), candidates)
    stats = QueryBankStats.load(stats.save(tmp_path / "bank.npz"))  # as the service would keep it
    test = _unit(rng.normal(size=(9, 8))) @ candidates.T
    whole = qb_norm_scores(test, stats)
    for q in range(len(test)):
        np.testing.assert_allclose(qb_norm_query(test[q], stats), whole[q])
        shortlist = np.argsort(-test[q])[:8]  # what a FAISS search returns, best first
        np.testing.assert_allclose(qb_norm_query(test[q, shortlist], stats, shortlist), whole[q, shortlist])


def test_hungarian_finds_the_best_assignment():
    rng = np.random.default_rng(5)
    for _ in range(5):
        s = rng.normal(size=(6, 6))
        best = ref_best_assignment(s.tolist())
        assert top_k(rerank.one_to_one(s), 1)[:, 0].tolist() == list(best)


def test_hungarian_gives_each_candidate_its_share_when_queries_outnumber_candidates():
    s = np.random.default_rng(6).normal(size=(9, 3))
    first = top_k(rerank.one_to_one(s), 1)[:, 0]
    assert np.bincount(first, minlength=3).tolist() == [3, 3, 3]


def test_sinkhorn_matches_the_alternating_scaling(monkeypatch):
    monkeypatch.setattr(rerank, "HUNGARIAN_MAX", 2)  # Sinkhorn on a small matrix
    queries, candidates = _paired(8, seed=7)
    s = queries @ candidates.T
    plan = np.array(ref_sinkhorn_plan(s.tolist(), 5.0))
    got = rerank.one_to_one(s, beta=5.0)
    assert _order(got) == _order(plan)
    # rows of the plan are ``beta s + log c`` up to a per-row constant
    np.testing.assert_allclose(got - got[:, :1], np.log(plan) - np.log(plan[:, :1]), atol=1e-4)


# --- the planted hub -----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["dual-softmax", "qb-norm", "one-to-one"])
def test_a_planted_hub_loses_its_extra_top1s(method):
    """Every query leans toward one shared direction ``u`` and candidate 0 is moved toward it:
    candidate 0 becomes the plain top-1 of many queries that belong to other candidates."""
    n, d, rng = 60, 16, np.random.default_rng(8)
    candidates = _unit(rng.normal(size=(n, d)))
    u = _unit(rng.normal(size=(1, d)))[0]
    candidates[0] = _unit((candidates[0] + 1.5 * u)[None])[0]  # the hub

    def queries_of(seed):  # query i is a noisy view of candidate i, leaning toward u
        noise = np.random.default_rng(seed).normal(size=(n, d)) / math.sqrt(d)
        return _unit(candidates + 0.8 * noise + 0.8 * u)

    plain = queries_of(9) @ candidates.T
    stats = bank_stats(queries_of(10), candidates)  # other queries of the same kind: the bank
    first = top_k(rerank.rerank(plain, method, stats=stats), 1)[:, 0]
    hub_before, hub_after = int((plain.argmax(axis=1) == 0).sum()), int((first == 0).sum())
    r1_before = float((plain.argmax(axis=1) == np.arange(n)).mean())
    r1_after = float((first == np.arange(n)).mean())
    assert hub_before >= 10  # the hub takes many top-1s ...
    assert hub_after <= 2  # ... and loses them
    assert r1_after > r1_before + 0.1


def test_methods_are_parsed_with_none_first():
    assert rerank.parse_methods("qb-norm,none,dual-softmax") == ["none", "qb-norm", "dual-softmax"]
    assert rerank.parse_methods(None) == ["none"]
    with pytest.raises(TuwenError, match="unknown re-ranking"):
        rerank.parse_methods("none,magic")
    with pytest.raises(TuwenError, match="query bank"):
        rerank.rerank(np.zeros((2, 2)), "qb-norm")


def test_the_commands_offer_exactly_the_methods_and_the_bank_size():
    """The CLIs spell the names and the default (they must not import numpy to build the parser)."""
    from tuwen.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    export = {a.dest: a for a in sub["export"]._actions}
    evaluate = {a.dest: a for a in sub["eval"]._actions}
    assert tuple(export["rerank"].choices) == rerank.METHODS and export["rerank"].default == "none"
    assert ",".join(rerank.METHODS) in evaluate["rerank"].help
    assert export["bank_size"].default == evaluate["bank_size"].default == rerank.DEFAULT_BANK_SIZE
