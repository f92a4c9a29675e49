"""The service's ``rerank=qb-norm`` (issue 21) against the offline reference: ``indexer.rerank``
applied to the exact score matrix of the same generation, with the bank statistics recomputed here
from the generation's vectors (``rerank.bank_stats``), never read from the service. Real ``tiny``
indexes of the small corpus and the shop corpus; the server encodes queries on PyTorch in fp32,
as the test does, so both sides use the same query vectors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import copy_home
from fastapi.testclient import TestClient
from test_service_fixtures import add_shop, build_home, encoder_for, image_bytes, image_vector, make_settings

from app.main import create_app
from indexer import rerank, store
from indexer.collection import Columns, parse_where
from indexer.corpus import corpus_dir
from indexer.index_files import columns_dir, current_generation, load_current
from indexer.query_bank import SUFFIX

KEY = {"Authorization": "Bearer admin-key"}
TOL = 1e-4  # on QB-Norm scores (beta 20 x cosine): both sides encode alike, near-ties may swap
FILTER = {"category": {"in": ["连衣裙", "衬衫"]}, "price": {"lt": 400}}  # passes s12, the hub


@pytest.fixture(scope="module")
def home(small_corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("rerank-home")
    settings = build_home(
        root / "home", small_corpus[0], precision="fp32", backend="torch", api_key="admin-key"
    )
    add_shop(settings, root / "shop")
    add_shop(settings, root / "puts", name="puts", n=12)
    return settings


@pytest.fixture(scope="module")
def client(home):
    with TestClient(create_app(home)) as c:
        yield c


@pytest.fixture(scope="module")
def tiny():
    return encoder_for("tiny", precision="fp32")


@pytest.fixture(scope="module")
def records(home):
    engine = store.make_engine(home.store_url)
    with store.transaction(engine) as session:
        out = {
            "text_queries": [t.caption for t in store.list_texts(session, collection=store.TEXT_QUERIES)],
            "image_queries": [
                r.path
                for r in store.list_images(session, collection=store.IMAGE_QUERIES)
                if r.status == store.STATUS_OK
            ],
        }
    engine.dispose()
    return out


def reference(scores: np.ndarray, stats: rerank.QueryBankStats) -> np.ndarray:
    """One query's QB-Norm scores by the offline code (the matrix form, one row)."""
    return rerank.qb_norm_scores(scores[None, :], stats)[0]


def assert_reference_order(got: list[str], ids: list[str], ref: np.ndarray) -> None:
    """``got`` is the reference's ranking (its first ``len(got)``), up to swaps of near-ties: each
    rank holds an id whose reference score is the reference's score at that rank."""
    by_id = dict(zip(ids, ref.tolist(), strict=True))
    best = np.sort(ref)[::-1][: len(got)]
    assert len(set(got)) == len(got) == len(best)
    for rank, (item, want) in enumerate(zip(got, best, strict=True)):
        assert abs(by_id[item] - want) <= TOL, (rank, item, by_id[item], want)


def plain_top(scores: np.ndarray, ids: list[str], k: int) -> list[str]:
    return [ids[j] for j in np.argsort(-scores, kind="stable")[:k]]


def test_a_new_generation_stores_the_statistics_of_its_bank(home):
    gen = load_current(home.index_dir)
    for candidates, bank in (("image_candidates", "bank_texts"), ("text_candidates", "bank_images")):
        assert (gen.path / f"{candidates}{SUFFIX}").is_file()
        stored = gen.banks[candidates]
        assert stored.bank_set == bank and len(gen.sets[bank].ids) > 10
        want = rerank.bank_stats(gen.sets[bank].vectors, gen.sets[candidates].vectors)
        assert np.allclose(stored.stats.log_norm, want.log_norm, atol=1e-4)
        assert (stored.stats.hubs == want.hubs).all()
    with store.open_store(home.store_url) as session:
        pairs = store.list_training_pairs(session)
    drawn = [pairs[i] for i in rerank.bank_sample(pairs, size=rerank.DEFAULT_BANK_SIZE)]
    assert gen.sets["bank_texts"].ids == [image_id for image_id, _, _ in drawn]  # export's draw
    corpus = load_current(corpus_dir(home, "shop"))
    assert sorted(corpus.banks) == ["images", "texts"]
    assert corpus.banks["images"].bank_set == "texts" and corpus.banks["texts"].bank_set == "images"
    assert (corpus.path / f"images{SUFFIX}").is_file()


def test_text_to_image_qb_norm_is_the_offline_reference(client, home, tiny, records):
    gen = load_current(home.index_dir)
    cands = gen.sets["image_candidates"]
    stats = rerank.bank_stats(gen.sets["bank_texts"].vectors, cands.vectors)
    changed = 0
    for query in records["text_queries"][:4]:
        r = client.get("/api/search/text", params={"q": query, "k": 8, "rerank": "qb-norm"})
        assert r.status_code == 200, r.text
        got = [h["image_id"] for h in r.json()["results"]]
        scores = np.asarray(cands.vectors) @ tiny.encode_texts([query])[0]
        assert_reference_order(got, cands.ids, reference(scores, stats))
        changed += got != plain_top(scores, cands.ids, 8)
        plain = client.get("/api/search/text", params={"q": query, "k": 8}).json()["results"]
        assert [h["image_id"] for h in plain] == plain_top(scores, cands.ids, 8)  # none: as before
    assert changed  # QB-Norm moved something: a server ignoring rerank fails above


def test_image_to_text_qb_norm_is_the_offline_reference(client, home, tiny, records):
    gen = load_current(home.index_dir)
    cands = gen.sets["text_candidates"]
    stats = rerank.bank_stats(gen.sets["bank_images"].vectors, cands.vectors)
    changed = 0
    for path in records["image_queries"][:3]:
        data = Path(path).read_bytes()
        r = client.post(
            "/api/search/image",
            params={"k": 6, "rerank": "qb-norm"},
            files={"file": ("q.jpg", data, "image/jpeg")},
        )
        assert r.status_code == 200, r.text
        got = [h["text_id"] for h in r.json()["results"]]
        scores = np.asarray(cands.vectors) @ image_vector(tiny, data)
        ref = reference(scores, stats)
        assert_reference_order(got, cands.ids, ref)
        by_id = dict(zip(cands.ids, ref.tolist(), strict=True))
        assert np.allclose(
            [h["rerank_score"] for h in r.json()["results"]], [by_id[i] for i in got], atol=TOL
        )
        changed += got != plain_top(scores, cands.ids, 6)
    assert changed


def _shop_matrix(settings, name: str, vector: np.ndarray, where: dict | None):
    """(ids of the passing images, their scores, their columns of the offline statistics)."""
    gen = current_generation(corpus_dir(settings, name))
    columns = Columns.load(columns_dir(gen))
    ids = json.loads((gen / "images.ids.json").read_text())
    images = np.load(gen / "images.npy")
    texts = np.load(gen / "texts.npy")
    text_ids = json.loads((gen / "texts.ids.json").read_text())
    bank = texts[rerank.bank_sample([(i, "", "") for i in text_ids], size=rerank.DEFAULT_BANK_SIZE)]
    stats = rerank.bank_stats(bank, images)
    mask = parse_where(where, fields=columns.fields, time_kind=columns.time_kind).mask(columns)
    passing = [j for j, i in enumerate(ids) if mask[columns.row_of(i)]]
    sub = rerank.QueryBankStats(stats.log_norm[passing], stats.hubs[passing], stats.beta, stats.k)
    return [ids[j] for j in passing], images[passing] @ vector, sub, bank, images


def _query_that_reranks(client, home, tiny) -> tuple[str, tuple]:
    """A query whose filtered top 10 QB-Norm reorders (else the test would pass with the re-ranking
    ignored). QB-Norm moves a ranking only where the query's best candidate is a hub (some bank
    query's top 1), and which items are hubs depends on the model and the precision: the captions of
    the corpus are tried, since each is a bank query whose own best match is a hub by definition."""
    ids = _shop_matrix(home, "shop", tiny.encode_texts(["连衣裙"])[0], FILTER)[0]
    captions = [client.get(f"/api/corpora/shop/items/{i}").json()["caption"] for i in ids]
    for query in ["红色连衣裙", *captions]:
        found = _shop_matrix(home, "shop", tiny.encode_texts([query])[0], FILTER)
        ids, scores, stats = found[:3]
        if plain_top(scores, ids, 10) != plain_top(reference(scores, stats), ids, 10):
            return query, found
    pytest.fail("QB-Norm reorders the filtered top 10 of no query: the test data has no hub")


def test_a_filtered_collection_search_pages_the_offline_reference(client, home, tiny):
    query, (ids, scores, stats, _, _) = _query_that_reranks(client, home, tiny)
    assert 10 < len(ids) < 40  # the filter matters
    body = {"q": query, "k": 5, "target": "image", "where": FILTER, "rerank": "qb-norm"}
    first = client.post("/api/corpora/shop/search", json=body)
    assert first.status_code == 200, first.text
    assert first.json()["total"] == len(ids) and first.json()["rerank"] == "qb-norm"
    second = client.post("/api/corpora/shop/search", json=body | {"offset": 5}).json()
    got = [h["id"] for h in first.json()["results"] + second["results"]]
    assert_reference_order(got, ids, reference(scores, stats))  # filter held: only passing ids match
    assert got != plain_top(scores, ids, 10)


def test_put_items_get_their_column_and_deleted_ones_stay_out(client, home, tiny):
    """A put item is ranked with its own column from the bank (its log-norm as if the bank had
    seen it, a hub if it tops a bank query); the base's columns stay the generation's."""
    picture = image_bytes(size=(40, 40))
    r = client.put(
        "/api/corpora/puts/items/new1",
        data={"caption": "红色衬衫 新款", "attributes": json.dumps({"category": "衬衫", "price": 120.5})},
        files={"image": ("x.png", picture, "image/png")},
        headers=KEY,
    )
    assert r.status_code == 200, r.text
    query = "红色衬衫"
    vector = tiny.encode_texts([query])[0]
    ids, scores, stats, bank, images = _shop_matrix(home, "puts", vector, None)
    new = image_vector(tiny, picture)
    with_new = rerank.bank_stats(bank, np.vstack([images, new[None, :]]))  # the offline column of new1
    stats = rerank.QueryBankStats(
        np.append(stats.log_norm, with_new.log_norm[-1]), np.append(stats.hubs, with_new.hubs[-1]), stats.beta
    )
    ids, scores = [*ids, "new1"], np.append(scores, new @ vector)
    body = {"q": query, "k": 20, "target": "image", "rerank": "qb-norm"}
    got = [h["id"] for h in client.post("/api/corpora/puts/search", json=body).json()["results"]]
    assert "new1" in got and len(got) == 13
    ref = reference(scores, stats)
    assert_reference_order(got, ids, ref)
    gone = got[0]
    assert client.delete(f"/api/corpora/puts/items/{gone}", headers=KEY).status_code == 200
    after = [h["id"] for h in client.post("/api/corpora/puts/search", json=body).json()["results"]]
    assert gone not in after and after == [i for i in got if i != gone]


def test_an_unknown_rerank_is_422_naming_the_field(client):
    r = client.post("/api/corpora/shop/search", json={"q": "连衣裙", "rerank": "magic"})
    assert r.status_code == 422 and r.json()["field"] == "rerank", r.text
    r = client.get("/api/search/text", params={"q": "连衣裙", "rerank": "magic"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "rerank"], r.text
    # its bank is of captions: a text query against the captions, or more like this, is refused
    for body in ({"q": "连衣裙", "target": "text"}, {"item": "s3"}):
        r = client.post("/api/corpora/shop/search", json=body | {"rerank": "qb-norm"})
        assert r.status_code == 422 and r.json()["field"] == "rerank", r.text
    upload = {"file": ("q.png", image_bytes(), "image/png")}
    r = client.post("/api/search/image-to-image", params={"rerank": "qb-norm"}, files=upload)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "rerank"], r.text


def test_a_generation_without_statistics_is_409_naming_the_rebuild(home, tmp_path):
    """A generation built before the service could re-rank (no ``*.qbnorm.npz``): 409 with the
    command, never 500, and plain searches unchanged."""
    old = make_settings(copy_home(home.home, tmp_path / "old"), precision="fp32", backend="torch")
    for folder in (current_generation(old.index_dir), current_generation(corpus_dir(old, "shop"))):
        for path in folder.glob(f"*{SUFFIX}"):
            path.unlink()
    shutil.rmtree(corpus_dir(old, "puts"))  # not needed here
    with TestClient(create_app(old)) as c:
        r = c.get("/api/search/text", params={"q": "连衣裙", "rerank": "qb-norm"})
        assert r.status_code == 409 and "tuwen index" in r.json()["detail"], r.text
        upload = {"file": ("q.png", image_bytes(), "image/png")}
        r = c.post("/api/search/image", params={"rerank": "qb-norm"}, files=upload)
        assert r.status_code == 409 and "tuwen index" in r.json()["detail"], r.text
        assert c.get("/api/search/text", params={"q": "连衣裙"}).status_code == 200
        r = c.post("/api/corpora/shop/search", json={"q": "连衣裙", "rerank": "qb-norm"})
        assert r.status_code == 409 and "tuwen corpus encode shop" in r.json()["detail"], r.text
        r = c.post("/api/corpora/image_candidates/search", json={"q": "连衣裙", "rerank": "qb-norm"})
        assert r.status_code == 409 and "tuwen index" in r.json()["detail"], r.text
        assert c.post("/api/corpora/shop/search", json={"q": "连衣裙"}).status_code == 200
