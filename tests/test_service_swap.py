"""Index generations while the service runs: start without an index, hot swaps (same and new
model), a broken generation, concurrent queries through a rebuild, and a refused model mismatch."""

from __future__ import annotations

import json
import threading
import time

import pytest
from fastapi.testclient import TestClient
from test_service_fixtures import build_home, encoder_for, expected_top, make_settings, other_tiny_checkpoint

from app.core.state import ServiceState
from app.main import create_app
from indexer.build import index_corpus
from indexer.index_files import CURRENT, current_generation
from indexer.ingest import ingest
from tuwen import TuwenError
from tuwen.cli import main as tuwen_main

QUERY = "黑色皮质双肩包"


def text_ids(client, q: str = QUERY, k: int = 8) -> tuple[str, list[str]]:
    r = client.get("/api/search/text", params={"q": q, "k": k})
    assert r.status_code == 200, r.text
    return r.json()["generation"], [h["image_id"] for h in r.json()["results"]]


def test_starts_without_an_index_and_becomes_ready_when_one_is_built(tmp_path, small_corpus):
    settings = make_settings(tmp_path / "home")
    with TestClient(create_app(settings)) as c:
        r = c.get("/readyz")
        assert r.status_code == 503
        assert "no index" in r.json()["detail"]
        assert c.get("/healthz").status_code == 200
        search = c.get("/api/search/text", params={"q": QUERY})
        assert search.status_code == 503
        assert "tuwen index" in search.json()["detail"]
        assert c.get("/api/export/result1.csv").status_code == 503
        assert c.get("/api/stats").json()["ready"] is False

        ingest(root=small_corpus[0], settings=settings, workers=1, progress=False)
        index_corpus(settings=settings, model="tiny", workers=0, progress=False)

        ready = c.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["generation"] == current_generation(settings.index_dir).name
        assert text_ids(c)[1]


@pytest.mark.slow
def test_hot_swap_to_a_new_generation_with_another_model(tmp_path, small_corpus):
    settings = build_home(tmp_path / "home", small_corpus[0])
    with TestClient(create_app(settings)) as c:
        old_gen, old_ids = text_ids(c)
        assert c.get("/api/stats").json()["model"]["model_id"] == "tiny@seed0"

        checkpoint = other_tiny_checkpoint(tmp_path / "other-tiny.pt")
        index_corpus(settings=settings, model=str(checkpoint), workers=0, progress=False)

        new_gen, new_ids = text_ids(c)  # the very next request sees the new generation
        assert new_gen != old_gen
        assert new_gen == current_generation(settings.index_dir).name
        stats = c.get("/api/stats").json()
        assert stats["model"]["model_id"].startswith("tiny:")
        assert stats["index"]["generation"] == new_gen
        # the query was encoded by the new model and searched in the new index
        vector = encoder_for(str(checkpoint)).encode_texts([QUERY])[0]
        assert new_ids == expected_top(settings, vector, "image_candidates", 8)
        assert new_ids != old_ids


def test_a_broken_generation_is_reported_and_the_old_one_keeps_serving(tmp_path, small_corpus):
    settings = build_home(tmp_path / "home", small_corpus[0], api_key="k")
    live = current_generation(settings.index_dir).name
    pointer = settings.index_dir / CURRENT
    with TestClient(create_app(settings)) as c:
        pointer.write_text("gen-does-not-exist")
        gen, ids = text_ids(c)
        assert gen == live and ids
        assert "gen-does-not-exist" in c.get("/api/stats").json()["reload_error"]
        forced = c.post("/api/admin/reload", headers={"Authorization": "Bearer k"})
        assert forced.status_code == 409
        assert "gen-does-not-exist" in forced.json()["detail"]

        pointer.write_text(live)
        assert text_ids(c)[0] == live
        assert c.get("/api/stats").json()["reload_error"] is None


@pytest.mark.slow
def test_concurrent_queries_through_a_rebuild_never_fail_or_mix(tmp_path, small_corpus):
    settings = build_home(tmp_path / "home", small_corpus[0])
    checkpoint = other_tiny_checkpoint(tmp_path / "other-tiny.pt")
    queries = [QUERY, "白色运动鞋", "蓝色牛仔裤"]
    seen: list[tuple[str, str, list[str]]] = []
    failures: list[str] = []
    stop = threading.Event()

    with TestClient(create_app(settings)) as c:
        old_gen = c.get("/readyz").json()["generation"]

        def hammer(q: str) -> None:
            while not stop.is_set():
                try:
                    r = c.get("/api/search/text", params={"q": q, "k": 8})
                    if r.status_code != 200:
                        failures.append(f"{r.status_code} {r.text}")
                        continue
                    body = r.json()
                    seen.append((q, body["generation"], [h["image_id"] for h in body["results"]]))
                except Exception as exc:  # noqa: BLE001 - any failure is the finding
                    failures.append(repr(exc))

        threads = [threading.Thread(target=hammer, args=(q,)) for q in queries]
        for t in threads:
            t.start()
        try:
            index_corpus(settings=settings, model=str(checkpoint), workers=0, progress=False)
            new_gen = current_generation(settings.index_dir).name
            deadline = time.monotonic() + 60
            while not any(g == new_gen for _, g, _ in seen[-6:]) and not failures:
                assert time.monotonic() < deadline, "the new generation was never served"
                time.sleep(0.05)
            time.sleep(0.3)  # some more queries on the new generation
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)

    assert not failures, failures[:3]
    gens = {g for _, g, _ in seen}
    assert gens == {old_gen, new_gen}
    # every answer is exactly what one generation alone gives: never old model + new index or so
    old_encoder, new_encoder = encoder_for("tiny"), encoder_for(str(checkpoint))
    expected = {}
    for q in queries:
        expected[(q, new_gen)] = _top(settings, new_gen, new_encoder.encode_texts([q])[0])
        expected[(q, old_gen)] = _top(settings, old_gen, old_encoder.encode_texts([q])[0])
    assert all(ids == expected[(q, g)] for q, g, ids in seen)
    assert all(expected[(q, old_gen)] != expected[(q, new_gen)] for q in queries)


def _top(settings, generation: str, vector) -> list[str]:
    import numpy as np

    from indexer.index_files import load_generation

    vs = load_generation(settings.index_dir / generation).sets["image_candidates"]
    return [vs.ids[i] for i in np.argsort(-(vs.vectors @ vector), kind="stable")[:8]]


def test_model_mismatch_is_refused_at_start(tmp_path, small_corpus, capsys):
    settings = build_home(tmp_path / "home", small_corpus[0])
    manifest_path = current_generation(settings.index_dir) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "model_id": "tiny@seed999"}))
    with pytest.raises(TuwenError, match="built with model tiny@seed999"):
        ServiceState.open(settings)
    assert tuwen_main(["serve", "--home", str(settings.home), "--port", "1"]) == 2
    assert "built with model tiny@seed999" in capsys.readouterr().err
