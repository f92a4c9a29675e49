"""Result files: one block of 5 ranked distinct candidate ids per query, in query-file order."""

from __future__ import annotations

import json

import numpy as np
import pytest

from common.errors import TuwenError
from indexer import index_files
from indexer.export import export_results
from indexer.faiss_factory import build_index
from indexer.results import RESULT1, RESULT2, TOP_K, top_k, validate_result


def _unit(rng: np.random.Generator, n: int, d: int = 16) -> np.ndarray:
    v = rng.standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _publish(settings, n_candidates: int = 30, n_queries: int = 7) -> None:
    rng = np.random.default_rng(0)
    tmp = index_files.new_generation_dir(settings.index_dir)
    for name, prefix in [("image_candidates", "Img"), ("text_candidates", "Txt")]:
        vectors = _unit(rng, n_candidates)
        index_files.save_vectors(tmp, name, [f"{prefix}{i}" for i in range(n_candidates)], vectors)
        index_files.save_faiss(tmp, name, build_index(vectors)[0])
    # Query ids deliberately out of sorted order: the output must keep file order.
    index_files.save_vectors(
        tmp, "text_queries", [f"W{9 - i}" for i in range(n_queries)], _unit(rng, n_queries)
    )
    index_files.save_vectors(
        tmp, "image_queries", [f"Q{i}.jpg" for i in range(n_queries)], _unit(rng, n_queries)
    )
    index_files.publish_generation(settings.index_dir, tmp, {"model_id": "test", "model_spec": "test"})


def test_top_k_is_exact_and_in_query_order(settings):
    _publish(settings)
    loaded = index_files.load_current(settings.index_dir)
    results = list(top_k(loaded, RESULT1))
    queries, cands = loaded.sets["text_queries"], loaded.sets["image_candidates"]
    assert [q for q, _ in results] == queries.ids
    for (_, ids), vector in zip(results, queries.vectors, strict=True):
        expected = np.argsort(-(cands.vectors @ vector))[:TOP_K]
        assert ids == [cands.ids[i] for i in expected]


def test_exported_files_pass_validation_and_are_utf8(settings, tmp_path):
    _publish(settings)
    paths = export_results(settings=settings, out=tmp_path / "out")
    assert [p.name for p in paths] == ["result1.csv", "result2.csv"]
    raw = paths[0].read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf") and raw.decode("utf-8").startswith(
        "text_id,similarity_ranking,result_image_id\n"
    )
    assert len(raw.decode().splitlines()) == 1 + 7 * TOP_K


def _rows(path):
    return path.read_text().splitlines()


def _with_result(row: str, donor: str) -> str:
    """``row`` with the result id of ``donor``: a repeated id inside one block."""
    return row.rsplit(",", 1)[0] + "," + donor.rsplit(",", 1)[1]


@pytest.mark.parametrize(
    "corrupt,message",
    [
        (lambda rows: rows[:-1], "rows for"),
        (lambda rows: [rows[0]] + rows[1:3] + [rows[3].replace(",3,", ",4,")] + rows[4:], "rankings"),
        (lambda rows: rows[:2] + [_with_result(rows[2], rows[1])] + rows[3:], "distinct"),
        (lambda rows: [rows[0]] + [r.replace("Img1", "Img999") for r in rows[1:]], "candidate"),
        (lambda rows: [rows[0]] + rows[6:11] + rows[1:6] + rows[11:], "expected 5 rows of query"),
        (lambda rows: ["id,rank,result"] + rows[1:], "header"),
    ],
)
def test_validation_catches_each_broken_invariant(settings, tmp_path, corrupt, message):
    _publish(settings)
    (path,) = [p for p in export_results(settings=settings, out=tmp_path) if p.name == "result1.csv"]
    loaded = index_files.load_current(settings.index_dir)
    path.write_text("\n".join(corrupt(_rows(path))) + "\n")
    with pytest.raises(TuwenError, match=message):
        validate_result(
            path,
            task=RESULT1,
            query_ids=loaded.sets["text_queries"].ids,
            candidate_ids=loaded.sets["image_candidates"].ids,
        )


def test_fewer_than_five_candidates_is_refused(settings, tmp_path):
    _publish(settings, n_candidates=4)
    with pytest.raises(TuwenError, match="at least 5"):
        export_results(settings=settings, out=tmp_path)


def test_no_index_yet_is_a_clear_error(settings, tmp_path):
    with pytest.raises(TuwenError, match="run `tuwen index` first"):
        export_results(settings=settings, out=tmp_path)


def test_manifest_is_written_with_the_generation(settings):
    _publish(settings)
    gen = index_files.current_generation(settings.index_dir)
    assert json.loads((gen / "manifest.json").read_text())["model_id"] == "test"
    assert RESULT2.queries in index_files.load_generation(gen).sets
