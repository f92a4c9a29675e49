"""Search any collection over HTTP (issue 18): the corpora, filtered text / item / image searches in
pages, an item and its image, the errors (404, 409 naming the command, 422 naming the field), the
competition sets as corpora, a server with corpora alone, and a corpus's hot swap."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from test_service_fixtures import add_shop, build_home, encoder_for, image_bytes, make_settings, read

from app.main import create_app
from indexer.collection import Columns, parse_where
from indexer.corpus import corpus_dir
from indexer.index_files import columns_dir, current_generation

QUERY = "红色连衣裙"


@pytest.fixture(scope="module")
def shop_settings(small_corpus, tmp_path_factory):
    """The competition sets indexed with tiny, a "shop" corpus encoded with tiny, "raw" only added."""
    home = tmp_path_factory.mktemp("corpora-home")
    settings = build_home(home / "home", small_corpus[0], precision="fp32", api_key="admin-key")
    add_shop(settings, home / "shop")
    add_shop(settings, home / "raw", name="raw", n=6, encode=False)
    return settings


@pytest.fixture(scope="module")
def client(shop_settings):
    with TestClient(create_app(shop_settings)) as c:
        yield c


@pytest.fixture(scope="module")
def tiny():
    return encoder_for("tiny")


def search(client, name="shop", **body):
    return client.post(f"/api/corpora/{name}/search", json=body)


def brute(settings, vector, where, *, target="images"):
    """(id, score) of every item passing ``where``, best first: the answer an exact search must give."""
    generation = current_generation(corpus_dir(settings, "shop"))
    columns = Columns.load(columns_dir(generation))
    ids = json.loads((generation / f"{target}.ids.json").read_text())
    vectors = np.load(generation / f"{target}.npy")
    mask = parse_where(where, fields=columns.fields, time_kind=columns.time_kind).mask(columns)
    passing = [j for j, i in enumerate(ids) if mask[columns.row_of(i)]]
    scores = vectors[passing] @ vector
    order = np.argsort(-scores, kind="stable")
    return [(ids[passing[j]], float(scores[j])) for j in order]


def test_the_corpora_are_listed_with_their_fields(client):
    r = client.get("/api/corpora")
    assert r.status_code == 200, r.text
    by_name = {c["name"]: c for c in r.json()}
    shop = by_name["shop"]
    assert shop["encoded"] is True and shop["rows"] == 40 and shop["model_id"] == "tiny@seed0"
    assert shop["fields"] == {"category": "str", "price": "float", "brand": "str"}
    assert shop["time_kind"] == "datetime" and shop["time_range"][0].startswith("2024-01-01")
    assert sorted(shop["values"]["category"]) == sorted(["连衣裙", "牛仔裤", "衬衫", "外套"])
    assert set(shop["targets"]) == {"image", "text"}
    assert by_name["raw"]["encoded"] is False and "tuwen corpus encode raw" in by_name["raw"]["stale"]
    assert by_name["image_candidates"]["builtin"] and by_name["image_candidates"]["targets"] == ["image"]
    assert by_name["text_candidates"]["targets"] == ["text"]


def test_a_filtered_text_search_is_exact_and_pages_are_consecutive(client, shop_settings, tiny):
    where = {
        "category": {"in": ["连衣裙", "衬衫"]},
        "price": {"gte": 100, "lt": 400},
        "time": {"gte": "2024-02-01"},
    }
    expected = brute(shop_settings, tiny.encode_texts([QUERY])[0], where)
    assert 6 < len(expected) < 40  # the filter matters
    first = search(client, q=QUERY, k=5, where=where)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["corpus"] == "shop" and body["target"] == "image" and body["total"] == len(expected)
    assert body["next_offset"] == 5
    second = search(client, q=QUERY, k=5, offset=5, where=where).json()
    got = body["results"] + second["results"]
    assert [h["id"] for h in got] == [i for i, _ in expected[:10]]
    assert np.allclose([h["score"] for h in got], [s for _, s in expected[:10]], atol=1e-4)
    hit = got[0]
    assert hit["attributes"]["category"] in ("连衣裙", "衬衫") and 100 <= hit["attributes"]["price"] < 400
    assert hit["time"] >= "2024-02-01" and hit["caption"]
    assert hit["image_url"] == f"/api/corpora/shop/items/{hit['id']}/image"
    last = search(client, q=QUERY, k=5, offset=len(expected) - 2, where=where).json()
    assert len(last["results"]) == 2 and last["next_offset"] is None


def test_captions_are_searched_with_target_text(client, shop_settings, tiny):
    expected = brute(shop_settings, tiny.encode_texts([QUERY])[0], {"brand": "a"}, target="texts")
    r = search(client, q=QUERY, k=4, target="text", where={"brand": "a"})
    assert r.status_code == 200, r.text
    assert [h["id"] for h in r.json()["results"]] == [i for i, _ in expected[:4]]


def test_more_like_this_and_an_item_with_its_image(client):
    r = search(client, item="s3", k=5)
    assert r.status_code == 200, r.text
    ids = [h["id"] for h in r.json()["results"]]
    assert len(ids) == 5 and "s3" not in ids
    item = client.get("/api/corpora/shop/items/s3")
    assert item.status_code == 200
    assert item.json()["attributes"]["category"] == "外套" and item.json()["caption"].endswith("款3")
    image = client.get(item.json()["image_url"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    assert client.get("/api/corpora/shop/items/nope").status_code == 404
    assert search(client, item="nope").status_code == 404


def test_an_uploaded_image_is_searched_against_the_corpus(client, shop_settings):
    data = read(shop_settings.home / ".." / "shop" / "photos" / "s7.jpg")
    r = client.post(
        "/api/corpora/shop/search/image",
        data={"k": "3", "where": json.dumps({"brand": "b"})},
        files={"file": ("q.jpg", data, "image/jpeg")},
    )
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["id"] == "s7"  # the same photo, and it passes the filter
    assert all(h["attributes"]["brand"] == "b" for h in r.json()["results"])
    bad = client.post(
        "/api/corpora/shop/search/image",
        data={"where": "{"},
        files={"file": ("q.png", image_bytes(), "image/png")},
    )
    assert bad.status_code == 422 and bad.json()["field"] == "where"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"q": QUERY, "where": {"colour": "红"}}, "colour"),
        ({"q": QUERY, "where": {"price": {"gte": "cheap"}}}, "price"),
        ({"q": QUERY, "where": {"price": {"between": [1, 2]}}}, "price"),
        ({"q": QUERY, "where": {"price": {"gte": {"lt": 3}}}}, "price"),
        ({"q": QUERY, "offset": 10_001}, "offset"),
        ({"q": QUERY, "k": 0}, "k"),
        ({"q": QUERY, "k": 101}, "k"),
        ({"q": QUERY, "target": "audio"}, "target"),
        ({}, "q"),
    ],
)
def test_bad_input_is_422_naming_the_field_and_listing_the_fields(client, body, field):
    r = search(client, **body)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field
    assert r.json()["fields"] == {"category": "str", "price": "float", "brand": "str", "time": "datetime"}
    assert "category" in r.json()["detail"]


def test_unknown_404_not_encoded_409_and_the_competition_limits_hold(client, shop_settings):
    r = search(client, name="nothing", q=QUERY)
    assert r.status_code == 404 and "shop" in r.json()["detail"]
    r = search(client, name="raw", q=QUERY)
    assert r.status_code == 409 and "tuwen corpus encode raw" in r.json()["detail"]
    long = search(client, q="长" * (shop_settings.max_query_chars + 1))
    assert long.status_code == 422 and "too long" in long.json()["detail"]
    too_big = b"\xff\xd8\xff" + b"0" * (shop_settings.max_upload_bytes + 1)
    r = client.post("/api/corpora/shop/search/image", files={"file": ("big.jpg", too_big, "image/jpeg")})
    assert r.status_code == 413


def test_the_competition_sets_are_corpora(client):
    r = search(client, name="image_candidates", q=QUERY, k=3)
    assert r.status_code == 200, r.text
    competition = client.get("/api/search/text", params={"q": QUERY, "k": 3}).json()
    assert [h["id"] for h in r.json()["results"]] == [h["image_id"] for h in competition["results"]]
    assert client.get(r.json()["results"][0]["image_url"]).status_code == 200
    texts = search(client, name="text_candidates", q=QUERY, k=3).json()
    assert texts["target"] == "text" and all(h["caption"] for h in texts["results"])


def test_the_search_key_covers_the_corpora(shop_settings):
    settings = shop_settings.model_copy(update={"require_key_for_search": True})
    with TestClient(create_app(settings)) as c:
        assert c.get("/api/corpora").status_code == 401
        assert search(c, q=QUERY).status_code == 401
        assert c.get("/api/corpora/shop/items/s1/image").status_code == 401
        ok = c.post(
            "/api/corpora/shop/search", json={"q": QUERY}, headers={"Authorization": "Bearer admin-key"}
        )
        assert ok.status_code == 200


def test_a_changed_corpus_is_409_until_encoded_again(tmp_path):
    settings = make_settings(tmp_path / "home", precision="fp32")
    add_shop(settings, tmp_path / "shop", n=12)  # corpora alone: no competition index
    with TestClient(create_app(settings)) as c:
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["generation"] is None
        assert "shop" in ready.json()["corpora"] and ready.json()["store"]["state"] == "ready"
        assert c.get("/api/search/text", params={"q": QUERY}).status_code == 503
        before = search(c, q=QUERY, k=3).json()["generation"]

        add_shop(settings, tmp_path / "shop", n=14, encode=False)  # the items changed
        state = c.app.state.service
        state.corpora.refresh_catalog(state.engine)  # what the store probe does every few seconds
        r = search(c, q=QUERY)
        assert r.status_code == 409 and "tuwen corpus encode shop" in r.json()["detail"]

        add_shop(settings, tmp_path / "shop", n=14)  # encoded again: a new generation, hot-swapped
        state.wait_loaded(timeout=60)
        state.corpora.refresh_catalog(state.engine)
        after = search(c, q=QUERY, k=3)
        assert after.status_code == 200 and after.json()["generation"] != before
        assert next(x for x in c.get("/api/corpora").json() if x["name"] == "shop")["rows"] == 14
