"""``tuwen export --rerank`` and ``--ensemble``: the files pass every invariant of
``indexer.results`` and hold the top 5 of the re-ranked (averaged) similarities."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from common.errors import TuwenError
from indexer import index_files, rerank
from indexer.export import export_results, ranked, write_ranked, write_result
from indexer.faiss_factory import build_index
from indexer.results import TASKS

N_CAND, N_QUERIES, N_BANK = 40, 9, 25


def _unit(rng: np.random.Generator, n: int, d: int = 16) -> np.ndarray:
    v = rng.standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _publish(settings, seed: int, *, text_ids=None) -> dict[str, np.ndarray]:
    """A generation with the four competition sets and the two banks; returns its vectors."""
    rng = np.random.default_rng(seed)
    tmp = index_files.new_generation_dir(settings.index_dir)
    ids = {
        "image_candidates": [f"Img{i}.jpg" for i in range(N_CAND)],
        "text_candidates": text_ids or [f"Txt{i}" for i in range(N_CAND)],
        "text_queries": [f"W{9 - i}" for i in range(N_QUERIES)],
        "image_queries": [f"Q{i}.jpg" for i in range(N_QUERIES)],
        "bank_texts": [f"B{i}" for i in range(N_BANK)],
        "bank_images": [f"BI{i}" for i in range(N_BANK)],
    }
    vectors = {}
    for name, names in ids.items():
        vectors[name] = _unit(rng, len(names))
        index_files.save_vectors(tmp, name, names, vectors[name])
        if name.endswith("candidates"):
            index_files.save_faiss(tmp, name, build_index(vectors[name])[0])
    manifest = {"model_id": f"m{seed}", "model_spec": "test", "sets": list(ids)}
    vectors["path"] = index_files.publish_generation(settings.index_dir, tmp, manifest)
    return vectors


def _read(path) -> dict[str, list[str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    out: dict[str, list[str]] = {}
    for query_id, _rank, cid in rows:
        out.setdefault(query_id, []).append(cid)
    return out


def _want(scores: np.ndarray, query_ids, prefix: str, suffix: str = "") -> dict[str, list[str]]:
    top = rerank.top_k(scores, 5)
    return {q: [f"{prefix}{j}{suffix}" for j in row] for q, row in zip(query_ids, top, strict=True)}


@pytest.mark.parametrize("method", rerank.METHODS)
def test_reranked_files_hold_the_reranked_top5(settings, tmp_path, method, monkeypatch):
    monkeypatch.setattr(rerank, "CHUNK", 4)  # several blocks of queries (dual-softmax's two passes)
    v = _publish(settings, 0)
    out = tmp_path / method
    written = export_results(settings=settings, out=out, rerank_method=method)
    assert [p.name for p in written] == ["result1.csv", "result2.csv"]  # validated before renaming
    plain = v["text_queries"] @ v["image_candidates"].T
    stats = rerank.bank_stats(v["bank_texts"], v["image_candidates"]) if method == "qb-norm" else None
    query_ids = [f"W{9 - i}" for i in range(N_QUERIES)]
    want = _want(rerank.rerank(plain, method, stats=stats), query_ids, "Img", ".jpg")
    assert _read(out / "result1.csv") == want


def test_the_reranking_writer_writes_the_plain_files_byte_for_byte(settings, tmp_path):
    """Method ``none`` through the re-ranking path gives the bytes of the plain export."""
    _publish(settings, 0)
    loaded = index_files.load_current(settings.index_dir)
    for task in TASKS.values():
        plain = write_result(loaded, task, tmp_path / "plain")
        again = write_ranked(ranked([loaded], task, "none", None), task, loaded, tmp_path / "ranked")
        assert plain.read_bytes() == again.read_bytes()


def test_an_ensemble_averages_the_generations_similarities(settings, tmp_path):
    a, b = _publish(settings, 1), _publish(settings, 2)
    export_results(
        settings=settings, out=tmp_path, ensemble=[a["path"].name, b["path"].name], rerank_method="none"
    )
    mean = (a["image_queries"] @ a["text_candidates"].T + b["image_queries"] @ b["text_candidates"].T) / 2
    assert _read(tmp_path / "result2.csv") == _want(mean, [f"Q{i}.jpg" for i in range(N_QUERIES)], "Txt")


def test_an_ensemble_refuses_generations_whose_sets_differ(settings, tmp_path):
    a = _publish(settings, 1)
    b = _publish(settings, 2, text_ids=[f"Other{i}" for i in range(N_CAND)])
    with pytest.raises(TuwenError, match="text_candidates"):
        export_results(settings=settings, out=tmp_path, ensemble=[a["path"].name, b["path"].name])
    with pytest.raises(TuwenError, match="no generation"):
        export_results(settings=settings, out=tmp_path, ensemble=["gen-missing"])
    with pytest.raises(TuwenError, match="unknown re-ranking"):
        export_results(settings=settings, out=tmp_path, rerank_method="magic")


@pytest.mark.parametrize("bank_size", [0, -5])
def test_qb_norm_with_no_bank_size_names_the_flag(settings, tmp_path, bank_size):
    _publish(settings, 1)
    with pytest.raises(TuwenError, match=f"--bank-size must be at least 1 for qb-norm .*, not {bank_size}"):
        export_results(settings=settings, out=tmp_path, rerank_method="qb-norm", bank_size=bank_size)
    assert not list(tmp_path.glob("*.csv"))
