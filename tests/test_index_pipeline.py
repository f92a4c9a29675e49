"""The index build in stages: reader rows, the generation writer and its manifest, and the
composed ``index_corpus`` against encoding the store's sets directly with ``Encoder``."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from common.errors import TuwenError
from indexer import index_files, store
from indexer.build import index_corpus
from indexer.encode.mapper import EncodeMapper
from indexer.encode.reader import EncodeRow, EncodeSet, competition_sets, settle
from indexer.encode.runner import run_local
from indexer.encode.writer import GenerationWriter
from indexer.manifest import MANIFEST_FILE, MANIFEST_VERSION, Manifest
from models.encoder import Encoder
from models.factory import create_model_and_transforms

MODEL = {"model_spec": "test", "model_id": "test@1", "arch": "none", "embed_dim": 8}


def _unit(n: int, d: int = 8, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _store_records(settings):
    engine = store.make_engine(settings.store_url)
    try:
        with store.transaction(engine) as s:
            return {
                store.IMAGE_CANDIDATES: store.list_images(s, collection=store.IMAGE_CANDIDATES),
                store.TEXT_CANDIDATES: store.list_texts(s, collection=store.TEXT_CANDIDATES),
                store.TEXT_QUERIES: store.list_texts(s, collection=store.TEXT_QUERIES),
                store.IMAGE_QUERIES: store.list_images(s, collection=store.IMAGE_QUERIES),
            }
    finally:
        engine.dispose()


# ---- reader


def test_reader_rows_are_in_store_order_with_positions(ingested):
    said: list[str] = []
    sets = competition_sets(ingested, said.append)
    records = _store_records(ingested)
    assert [s.name for s in sets] == list(records)
    assert [(s.kind, s.searchable) for s in sets] == [
        ("image", True),
        ("text", True),
        ("text", False),
        ("image", False),
    ]
    by_name = {s.name: s for s in sets}
    for name, recs in records.items():
        rows = by_name[name].rows
        positions = [r.position for r in rows]
        assert positions == sorted(positions) and len(set(positions)) == len(positions)
        if name == store.IMAGE_CANDIDATES:
            recs = [r for r in recs if r.status == store.STATUS_OK]
        assert [(r.position, r.item_id) for r in rows] == [
            (r.position, getattr(r, "image_id", None) or r.text_id) for r in recs
        ]
    assert [r.source for r in by_name[store.TEXT_QUERIES].rows] == [
        r.caption for r in records[store.TEXT_QUERIES]
    ]
    assert by_name[store.IMAGE_QUERIES].on_error == "fill_mean"
    assert by_name[store.IMAGE_CANDIDATES].on_error == "drop"
    assert said == []  # every demo candidate is readable


def test_reader_leaves_out_candidates_ingest_could_not_read(settings):
    engine = store.make_engine(settings.store_url)
    statuses = [store.STATUS_OK, store.STATUS_MISSING, store.STATUS_OK, store.STATUS_UNREADABLE]
    rows = [
        {"image_id": f"c{i}.jpg", "position": i, "path": f"/x/c{i}.jpg", "status": st}
        for i, st in enumerate(statuses)
    ]
    with store.transaction(engine) as s:
        store.replace_images(s, collection=store.IMAGE_CANDIDATES, rows=rows)
    engine.dispose()
    said: list[str] = []
    (only,) = competition_sets(settings, said.append)
    assert only.name == store.IMAGE_CANDIDATES
    assert [(r.position, r.item_id, r.source) for r in only.rows] == [
        (0, "c0.jpg", "/x/c0.jpg"),
        (2, "c2.jpg", "/x/c2.jpg"),
    ]
    assert said == ["2 candidate image(s) missing or unreadable: left out of the index"]


def test_reader_refuses_an_empty_store(settings):
    with pytest.raises(TuwenError, match="run `tuwen ingest"):
        competition_sets(settings, print)


def test_settle_drops_failed_candidates_and_fills_failed_queries():
    rows = [EncodeRow(i, f"id{i}", f"p{i}") for i in range(4)]
    vectors, errors = _unit(4), ["", "bad", "", ""]
    said: list[str] = []
    ids, kept = settle(EncodeSet("c", "image", rows, searchable=True), vectors.copy(), errors, said.append)
    assert ids == ["id0", "id2", "id3"] and np.array_equal(kept, vectors[[0, 2, 3]])
    query = EncodeSet("q", "image", rows, searchable=False, on_error="fill_mean")
    ids, filled = settle(query, vectors.copy(), errors, said.append)
    mean = vectors[[0, 2, 3]].mean(axis=0)
    assert ids == [r.item_id for r in rows]
    assert np.allclose(filled[1], mean / np.linalg.norm(mean)) and np.array_equal(filled[0], vectors[0])
    assert "left out: id1: bad" in said[0] and "fallback" in said[1]


# ---- writer and manifest


def test_writer_round_trips_its_manifest_under_any_root(tmp_path):
    root = tmp_path / "corpora" / "shop"  # not index/, and not the competition's set names
    with GenerationWriter(root) as writer:
        writer.write_set("items", [f"i{k}" for k in range(20)], _unit(20), searchable=True)
        writer.write_set("probes", ["a", "b"], _unit(2, seed=1), searchable=False)
        final = writer.publish(**MODEL)
    loaded = index_files.load_current(root)
    assert loaded.path == final and index_files.current_generation(root) == final
    m = loaded.manifest
    assert isinstance(m, Manifest) and m.version == MANIFEST_VERSION
    assert m.sets == ["items", "probes"] and m.counts == {"items": 20, "probes": 2}
    assert m.index_factories == {"items": "Flat"} and m.model_id == "test@1" and m.created_at > 0
    assert loaded.sets["items"].index is not None and loaded.sets["probes"].index is None
    assert np.allclose(loaded.sets["probes"].vectors, _unit(2, seed=1))
    on_disk = (final / MANIFEST_FILE).read_text(encoding="utf-8")
    assert on_disk.count("\n") > 5 and json.loads(on_disk)["version"] == MANIFEST_VERSION  # readable
    assert Manifest.read(final) == m
    assert not list(final.glob("*.errors.json"))


def test_writer_failure_leaves_the_live_generation_and_no_leftover(tmp_path):
    root = tmp_path / "index"
    with GenerationWriter(root) as writer:
        writer.write_set("items", ["a", "b"], _unit(2), searchable=True)
        live = writer.publish(**MODEL)
    with pytest.raises(RuntimeError, match="boom"), GenerationWriter(root) as writer:
        writer.write_set("items", ["c"], _unit(1), searchable=True)
        raise RuntimeError("boom")
    assert index_files.current_generation(root) == live and not list(root.glob(".tmp-*"))
    with GenerationWriter(root) as writer, pytest.raises(ValueError, match="bad set name"):
        writer.write_set("../x", ["c"], _unit(1), searchable=False)


def test_generation_names_sort_in_publishing_order_within_one_second():
    names = [index_files.generation_name(t) for t in (1_000_000.5, 1_000_000.75, 1_000_001.0)]
    assert names == sorted(names) and len(set(names)) == 3


def test_pruning_keeps_the_live_and_the_replaced_generation_when_the_clock_stands_still(
    tmp_path, monkeypatch
):
    """Builds faster than the clock's tick (one frozen instant here) must never lose the
    generation a server was serving a moment ago: it found a generation deleted under its reader."""
    monkeypatch.setattr(index_files.time, "time", lambda: 1_000_000.0)
    root, published = tmp_path / "index", []
    for n in range(6):
        with GenerationWriter(root) as writer:
            writer.write_set("items", [f"i{n}"], _unit(1, seed=n), searchable=False)
            published.append(writer.publish(**MODEL))
        assert index_files.current_generation(root) == published[-1]
        assert all(g.is_dir() and (g / MANIFEST_FILE).is_file() for g in published[-2:]), n
        assert len(list(root.glob("gen-*"))) <= index_files.KEEP_GENERATIONS + 2  # + live, replaced


def test_manifest_without_version_loads_as_version_1(tmp_path):
    root = tmp_path / "index"
    with GenerationWriter(root) as writer:
        writer.write_set(store.IMAGE_CANDIDATES, ["a", "b"], _unit(2), searchable=True)
        writer.write_set(store.TEXT_QUERIES, ["q"], _unit(1), searchable=False)
        final = writer.publish(**MODEL)
    old = {
        k: v
        for k, v in json.loads((final / MANIFEST_FILE).read_text()).items()
        if k not in ("version", "sets")
    }
    (final / MANIFEST_FILE).write_text(json.dumps(old))
    loaded = index_files.load_current(root)
    assert loaded.manifest.version == 1 and loaded.manifest.counts == {
        "image_candidates": 2,
        "text_queries": 1,
    }
    assert set(loaded.sets) == {store.IMAGE_CANDIDATES, store.TEXT_QUERIES}  # found on disk
    assert loaded.sets[store.IMAGE_CANDIDATES].index is not None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({**MODEL, "version": 99}, "manifest version 99"),
        ({"model_spec": "x"}, "model_id"),
        ({**MODEL, "counts": {"a": "many"}}, "counts.a"),
        ("not json {", "cannot read"),
        ([1, 2], "not a JSON object"),
    ],
)
def test_a_bad_manifest_is_refused_clearly(tmp_path, content, message):
    (tmp_path / MANIFEST_FILE).write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(TuwenError, match=message) as err:
        index_files.load_generation(tmp_path)
    assert str(tmp_path) in str(err.value)


# ---- composed path against the plain one


def _plain(settings, batch_size: int) -> dict[str, tuple[list[str], np.ndarray]]:
    """What each set should hold: the store's rows encoded directly with ``Encoder`` (PyTorch, fp32,
    as the pipeline under test is pinned: backends and precisions are compared in test_backends)."""
    encoder = Encoder(create_model_and_transforms("tiny", device="cpu"), precision="fp32", backend="torch")
    recs = _store_records(settings)
    out = {}
    for name in (store.TEXT_CANDIDATES, store.TEXT_QUERIES):
        out[name] = ([r.text_id for r in recs[name]], encoder.encode_texts([r.caption for r in recs[name]]))
    ok = [r for r in recs[store.IMAGE_CANDIDATES] if r.status == store.STATUS_OK]
    vectors, errors = encoder.encode_image_files([r.path for r in ok], batch_size=batch_size, workers=0)
    keep = [i for i, e in enumerate(errors) if not e]
    out[store.IMAGE_CANDIDATES] = ([ok[i].image_id for i in keep], vectors[keep])
    queries = recs[store.IMAGE_QUERIES]
    vectors, errors = encoder.encode_image_files(
        [r.path or r.image_id for r in queries], batch_size=batch_size, workers=0
    )
    failed = np.array([bool(e) for e in errors])
    assert failed.any() and (~failed).any()  # the demo corpus has a missing query image
    mean = vectors[~failed].mean(axis=0)
    vectors[failed] = mean / np.linalg.norm(mean)
    out[store.IMAGE_QUERIES] = ([r.image_id for r in queries], vectors)
    return out


def test_index_corpus_matches_encoding_the_sets_directly(ingested, one_thread):
    ran: list[str] = []

    def counting_runner(sets, mapper, writer, say):
        ran.extend(s.name for s in sets)
        run_local(sets, mapper, writer, say)

    final = index_corpus(
        settings=ingested,
        model="tiny",
        precision="fp32",
        backend="torch",
        batch_size=16,
        workers=0,
        progress=False,
        runner=counting_runner,
    )
    loaded = index_files.load_generation(final)
    expected = _plain(ingested, batch_size=16)
    assert (
        ran
        == list(loaded.manifest.sets)
        == [
            store.IMAGE_CANDIDATES,
            store.TEXT_CANDIDATES,
            store.TEXT_QUERIES,
            store.IMAGE_QUERIES,
            "bank_texts",  # QB-Norm's query bank (indexer.query_bank), through the same runner
            "bank_images",
        ]
    )
    for name, (ids, vectors) in expected.items():
        assert loaded.sets[name].ids == ids, name
        assert np.allclose(loaded.sets[name].vectors, vectors, atol=1e-5), name
        assert loaded.manifest.counts[name] == len(ids)
    assert set(loaded.manifest.index_factories) == {store.IMAGE_CANDIDATES, store.TEXT_CANDIDATES}
    assert loaded.manifest.model_spec == "tiny" and loaded.manifest.embed_dim == vectors.shape[1]


def test_mapper_is_rebuilt_from_its_plain_arguments(one_thread):
    mapper = EncodeMapper("tiny", device="cpu", batch_size=8, workers=0)
    again = EncodeMapper(**pickle.loads(pickle.dumps(mapper.kwargs)))  # as a Ray worker would
    rows = [EncodeRow(0, "t0", "红色连衣裙"), EncodeRow(1, "t1", "白色运动鞋")]
    s = EncodeSet("texts", "text", rows, searchable=False)
    (a, errors), (b, _) = mapper.encode(s), again.encode(s)
    assert errors == ["", ""] and a.dtype == np.float32 and a.shape[0] == 2 and np.allclose(a, b)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        ("Garbage", r"FAISS cannot build it for 128-d vectors \(could not parse index string Garbage\)"),
        ("IVF16,PQ7", r"FAISS cannot build it for 128-d vectors \(.*multiple of the number of subquantizers"),
        ("IVF4096,Flat", r"4,096 lists need at least as many vectors to train, and the smallest set"),
    ],
)
def test_an_index_factory_faiss_cannot_build_is_refused_before_any_encoding(ingested, factory, message):
    ran: list[str] = []
    index_dir = ingested.index_dir
    before = sorted(p.name for p in index_dir.iterdir()) if index_dir.exists() else []
    with pytest.raises(TuwenError, match=rf"--index-factory '{factory}': {message}"):
        index_corpus(
            settings=ingested,
            model="tiny",
            index_factory=factory,
            workers=0,
            progress=False,
            runner=lambda sets, *_: ran.extend(s.name for s in sets),
        )
    assert ran == []  # refused before the runner encoded anything
    assert (sorted(p.name for p in index_dir.iterdir()) if index_dir.exists() else []) == before
