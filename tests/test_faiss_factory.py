"""FAISS factory: approximate indexes against exact ``IndexFlatIP`` on deterministic data (faiss
contrib style), tuned search parameters that survive a save, and the automatic choices."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from indexer.faiss_factory import (
    EXACT_LIMIT,
    build_index,
    choose_factory,
    ivf_lists,
    search_params,
    tune_search,
)

DIM = 64
K = 10


def _clustered(n: int, nq: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A normalised mixture of Gaussians (as embeddings are), and held-out queries from it."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((50, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def draw(m: int) -> np.ndarray:
        x = centres[rng.integers(0, len(centres), m)] + rng.standard_normal((m, DIM)).astype(np.float32) * 0.1
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    return draw(n), draw(nq)


def _recall(index: faiss.Index, corpus: np.ndarray, queries: np.ndarray) -> float:
    exact = faiss.IndexFlatIP(DIM)
    exact.add(corpus)
    _, truth = exact.search(queries, K)
    _, found = index.search(queries, K)
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)]))


@pytest.fixture(scope="module")
def data():
    return _clustered(20_000, 300)


def test_flat_is_exact(data):
    corpus, queries = data
    corpus = corpus[: EXACT_LIMIT - 1]
    index, used = build_index(corpus)
    assert used == "Flat" and search_params(index) == {}
    assert _recall(index, corpus, queries) == 1.0


@pytest.mark.parametrize("factory", ["IVF128_HNSW32,SQ8", "IVF128,Flat", "HNSW32,Flat"])
def test_approximate_index_reaches_recall_against_exact(data, factory):
    corpus, queries = data
    index, used = build_index(corpus, factory=factory)
    assert used == factory and index.ntotal == len(corpus)
    assert search_params(index), "an approximate index must carry a tuned search parameter"
    assert _recall(index, corpus, queries) >= 0.9


def test_tuned_parameters_are_saved_in_the_index_file(data):
    corpus, queries = data
    index, _ = build_index(corpus, factory="IVF128_HNSW32,SQ8")
    params = search_params(index)
    assert 1 < params["nprobe"] < params["nlist"]  # tuned, not left at faiss's default of 1
    restored = faiss.deserialize_index(faiss.serialize_index(index))
    assert search_params(restored) == params
    assert _recall(restored, corpus, queries) == _recall(index, corpus, queries)


def test_higher_recall_target_never_probes_fewer_lists(data):
    corpus, _ = data
    index, _ = build_index(corpus, factory="IVF128,SQ8")
    tune_search(index, corpus, target=0.5)
    low = search_params(index)["nprobe"]
    reached = tune_search(index, corpus, target=0.99)
    assert search_params(index)["nprobe"] >= low and reached is not None and reached >= 0.9


def test_choose_factory_by_size_and_memory():
    assert choose_factory(5_000, 512) == "Flat"
    assert choose_factory(50_000, 512, max_memory=8 << 30) == "IVF512_HNSW32,Flat"
    assert choose_factory(EXACT_LIMIT - 1, 512) == "Flat"
    assert choose_factory(200_000, 512, max_memory=8 << 30) == "IVF2048_HNSW32,Flat"
    assert choose_factory(1_000_000, 512, max_memory=8 << 30) == "IVF4096_HNSW32,SQfp16"
    assert choose_factory(1_000_000, 512, max_memory=768 << 20) == "IVF4096_HNSW32,SQ8"
    # a budget below one byte per dimension falls back to product quantization
    assert choose_factory(1_000_000, 512, max_memory=256 << 20) == "IVF4096_HNSW32,PQ16"
    # every choice is a string faiss can build
    for n in (EXACT_LIMIT, 100_000, 1_000_000, 50_000_000):
        faiss.index_factory(512, choose_factory(n, 512, max_memory=1 << 30), faiss.METRIC_INNER_PRODUCT)


def test_ivf_lists_grow_with_sqrt_n_and_keep_enough_training_points():
    assert ivf_lists(1_000_000) == 4096
    assert ivf_lists(100_000) == 1024
    assert ivf_lists(2_000) * 39 <= 2_000 * 1.3  # never far more lists than k-means can train
    assert ivf_lists(10**10) == 65536


def test_automatic_choice_is_approximate_on_clustered_data_and_exact_where_ann_fails():
    rng = np.random.default_rng(3)
    clustered, queries = _clustered(25_000, 200, seed=3)
    index, used = build_index(clustered)
    assert used.startswith("IVF") and _recall(index, clustered, queries) >= 0.95
    # uniformly random directions: no IVF setting within budget reaches the recall, so exact search
    uniform = rng.standard_normal((25_000, 512)).astype(np.float32)
    uniform /= np.linalg.norm(uniform, axis=1, keepdims=True)
    index, used = build_index(uniform)
    assert used == "Flat" and isinstance(index, faiss.IndexFlatIP) and index.ntotal == len(uniform)
    # an explicit factory is the user's choice: kept, with its best-effort tuning
    index, used = build_index(uniform, factory="IVF64,Flat")
    assert used == "IVF64,Flat" and search_params(index)["nprobe"] == 8
