"""QB-Norm for the service (issue 21), on seeded synthetic vectors: the segment search's re-ranking
depth and pages, a put item's statistics column, the stored bank (``indexer.query_bank``) and
``tuwen export`` reusing it."""

from __future__ import annotations

import numpy as np
import pytest

from indexer import index_files, query_bank, rerank
from indexer.collection import Columns
from indexer.collection import search as segment_search
from indexer.collection.search import Delta, Segment, SegmentSearch
from indexer.encode.options import EncodeOptions
from indexer.encode.writer import GenerationWriter
from indexer.export import export_results

D = 8


def _unit(rng: np.random.Generator, n: int, d: int = D) -> np.ndarray:
    v = rng.standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _columns(ids: list[str]) -> Columns:
    from types import SimpleNamespace

    items = [SimpleNamespace(item_id=i, caption=None, image_path=None, time=None, attributes={}) for i in ids]
    return Columns.from_items(items, fields={}, time_kind=None)


@pytest.fixture
def hubbed():
    """Candidates with a planted hub (close to every bank query and every test query), a bank."""
    rng = np.random.default_rng(5)
    common = _unit(rng, 1)[0]
    bank = _unit(rng, 200) + 1.5 * common
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    candidates = _unit(rng, 30)
    candidates[7] = common
    query = _unit(rng, 1)[0] + 1.5 * common
    return bank, candidates, query / np.linalg.norm(query)


def _page_ids(search: SegmentSearch, query, *, k: int, n: int) -> list[str]:
    out = []
    for offset in range(0, n, k):
        out += [h.id for h in search.search(query, k=k, offset=offset, rerank="qb-norm").results]
    return out


def test_the_whole_set_reranked_is_the_matrix_reference(hubbed):
    bank, candidates, query = hubbed
    stats = rerank.bank_stats(bank, candidates)
    assert stats.hubs[7]  # the planted hub
    ids = [f"c{i:02d}" for i in range(len(candidates))]
    search = SegmentSearch(Segment(candidates, None, _columns(ids), qb=stats))
    scores = candidates @ query
    want = [ids[j] for j in rerank.top_k(rerank.qb_norm_scores(scores[None, :], stats), 30)[0]]
    assert _page_ids(search, query, k=4, n=30) == want  # pages are slices of one ranking
    assert want[0] != "c07" and [h.id for h in search.search(query, k=1).results] == ["c07"]


def test_only_the_first_depth_items_are_reranked_then_the_plain_order(hubbed, monkeypatch):
    monkeypatch.setattr(segment_search, "RERANK_DEPTH", 6)
    bank, candidates, query = hubbed
    stats = rerank.bank_stats(bank, candidates)
    ids = [f"c{i:02d}" for i in range(len(candidates))]
    search = SegmentSearch(Segment(candidates, None, _columns(ids), qb=stats))
    scores = candidates @ query
    plain = list(np.argsort(-scores, kind="stable"))
    head = np.asarray(plain[:6])
    reordered = head[np.argsort(-rerank.qb_norm_query(scores[head], stats, head), kind="stable")]
    want = [ids[j] for j in [*reordered, *plain[6:]]]
    got = search.search(query, k=30, rerank="qb-norm").results
    assert [h.id for h in got] == want
    assert all(h.rerank_score is not None for h in got[:6]) and all(h.rerank_score is None for h in got[6:])
    assert _page_ids(search, query, k=5, n=30) == want


def test_rerank_needs_statistics_for_every_segment(hubbed):
    bank, candidates, query = hubbed
    ids = [f"c{i:02d}" for i in range(len(candidates))]
    plain = SegmentSearch(Segment(candidates, None, _columns(ids)))
    assert not plain.can_rerank
    with pytest.raises(ValueError, match="QB-Norm"):
        plain.search(query, rerank="qb-norm")
    with pytest.raises(ValueError, match="rerank must be"):
        plain.search(query, rerank="dual-softmax")  # needs every query: not a service method
    based = SegmentSearch(Segment(candidates, None, _columns(ids), qb=rerank.bank_stats(bank, candidates)))
    delta = Delta(["new"], candidates[:1], _columns(["new"]))
    assert based.can_rerank and not based.with_delta(delta).can_rerank


def test_a_put_items_column_is_the_banks_column_for_it(hubbed):
    bank, candidates, _ = hubbed
    base, new = candidates[:25], candidates[25:].copy()
    new[0] = candidates[7]  # a copy of the hub: it tops the bank queries the hub tops
    found = query_bank.SetBank.compute("bank", np.arange(len(bank)), bank, base, drawn=5000)
    columns = found.columns(bank, new)
    together = rerank.bank_stats(bank, np.vstack([base, new]))  # as if the bank had seen them
    assert np.allclose(columns.log_norm, together.log_norm[25:], atol=1e-4)
    assert columns.hubs[0]  # ties the hub's score: the hub's bank queries would pick it
    assert (columns.hubs[1:] == together.hubs[26:]).all() and not columns.hubs[1:].any()


def test_a_generation_keeps_its_bank_and_export_reuses_it(settings, tmp_path, hubbed):
    bank, candidates, query = hubbed
    rng = np.random.default_rng(9)
    sets = {
        "image_candidates": candidates,
        "text_candidates": _unit(rng, 20),
        "text_queries": np.vstack([query, _unit(rng, 4)]),
        "image_queries": _unit(rng, 5),
        "bank_texts": bank,
        "bank_images": _unit(rng, 50),
    }
    with GenerationWriter(settings.index_dir) as writer:
        for name, vectors in sets.items():
            writer.write_set(
                name, [f"{name}{i}" for i in range(len(vectors))], vectors, searchable="cand" in name
            )
        for cands, name in query_bank.BANK_OF_CANDIDATES.items():
            query_bank.write_set_bank(writer, cands, name, rows=None, drawn=rerank.DEFAULT_BANK_SIZE)
        path = writer.publish(model_spec="test", model_id="m")
    loaded = index_files.load_generation(path)
    stored = loaded.banks["image_candidates"]
    want = rerank.bank_stats(bank, candidates)
    assert np.allclose(stored.stats.log_norm, want.log_norm) and (stored.stats.hubs == want.hubs).all()
    assert stored.bank_set == "bank_texts" and np.allclose(loaded.bank_vectors("image_candidates"), bank)
    export_results(settings=settings, out=tmp_path / "stored", rerank_method="qb-norm")
    for file in path.glob(f"*{query_bank.SUFFIX}"):
        file.unlink()  # computed again from the bank sets: the same files
    export_results(settings=settings, out=tmp_path / "computed", rerank_method="qb-norm")
    for name in ("result1.csv", "result2.csv"):
        assert (tmp_path / "stored" / name).read_bytes() == (tmp_path / "computed" / name).read_bytes()


def test_the_encode_commands_draw_the_bank_of_eval_and_export():
    from tuwen.cli import build_parser

    assert EncodeOptions(model="tiny").bank_size == rerank.DEFAULT_BANK_SIZE
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    index = {a.dest: a for a in sub["index"]._actions}
    assert index["bank_size"].default == rerank.DEFAULT_BANK_SIZE
