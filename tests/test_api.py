"""The REST API against a real tiny index of the small corpus: every endpoint and parameter error."""

from __future__ import annotations

import csv
import io

import pytest
from fastapi.testclient import TestClient
from test_service_fixtures import assert_exact_top, encoder_for, expected_top, image_vector, read

from app.main import create_app
from indexer import store
from indexer.export import export_results
from indexer.index_files import load_current


@pytest.fixture(scope="module")
def encoder():
    return encoder_for("tiny")


@pytest.fixture(scope="module")
def records(built_settings):
    engine = store.make_engine(built_settings.store_url)
    with store.transaction(engine) as session:
        out = {
            "candidates": store.list_images(session, collection=store.IMAGE_CANDIDATES),
            "queries": store.list_images(session, collection=store.IMAGE_QUERIES),
            "texts": store.list_texts(session, collection=store.TEXT_CANDIDATES),
            "text_queries": store.list_texts(session, collection=store.TEXT_QUERIES),
        }
    engine.dispose()
    return out


def test_healthz(client):
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_names_the_live_generation(client, built_settings):
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.json()["generation"] == load_current(built_settings.index_dir).path.name
    assert r.json()["model_id"] == "tiny@seed0"


def test_text_search_returns_the_true_top_k_best_first(client, built_settings, encoder, records):
    caption = records["text_queries"][3].caption
    r = client.get("/api/search/text", params={"q": caption, "k": 7})
    assert r.status_code == 200
    body = r.json()
    assert body["query"] == caption
    ids = [hit["image_id"] for hit in body["results"]]
    scores = [hit["score"] for hit in body["results"]]
    assert scores == sorted(scores, reverse=True)
    vector = encoder.encode_texts([caption])[0]
    assert ids == expected_top(built_settings, vector, "image_candidates", 7)
    assert all(hit["url"] == f"/api/images/{hit['image_id']}" for hit in body["results"])


def test_text_search_default_k_is_5_and_repeats_come_from_the_cache(client):
    before = client.get("/api/stats").json()["text_cache"]
    first = client.get("/api/search/text", params={"q": "红色连衣裙 缓存测试"}).json()
    second = client.get("/api/search/text", params={"q": "红色连衣裙 缓存测试"}).json()
    after = client.get("/api/stats").json()["text_cache"]
    assert len(first["results"]) == 5
    assert first == second
    assert after["misses"] == before["misses"] + 1
    assert after["hits"] == before["hits"] + 1


def test_result_urls_fetch_the_image_bytes(client, records):
    hit = client.get("/api/search/text", params={"q": "白色衬衫", "k": 1}).json()["results"][0]
    r = client.get(hit["url"])
    assert r.status_code == 200
    path = next(rec.path for rec in records["candidates"] if rec.image_id == hit["image_id"])
    assert r.content == read(path)
    assert r.headers["content-type"] == "image/jpeg"


def test_image_content_type_follows_the_real_format_not_the_name(client, small_corpus):
    png_named_jpg = small_corpus[1]["quirks"]["candidate_png"]
    assert png_named_jpg.endswith(".jpg")
    r = client.get(f"/api/images/{png_named_jpg}")
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/png"
    assert r.content.startswith(b"\x89PNG")


def test_unknown_image_id_is_404(client):
    r = client.get("/api/images/Image99999999-0000.jpg")
    assert r.status_code == 404
    assert "unknown image id" in r.json()["detail"]


def test_image_ids_are_never_joined_into_a_path(client):
    for attempt in ["..%2F..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "..", "store.db"]:
        r = client.get(f"/api/images/{attempt}")
        assert r.status_code == 404, attempt
        assert b"root:" not in r.content


def test_image_to_text_returns_true_top_captions(client, built_settings, encoder, records):
    rec = records["queries"][4]
    data = read(rec.path)
    r = client.post("/api/search/image", params={"k": 6}, files={"file": ("q.jpg", data, "image/jpeg")})
    assert r.status_code == 200
    results = r.json()["results"]
    got = [h["text_id"] for h in results]
    assert_exact_top(built_settings, image_vector(encoder, data), "text_candidates", got)
    captions = {t.text_id: t.caption for t in records["texts"]}
    assert all(h["caption"] == captions[h["text_id"]] for h in results)
    assert [h["score"] for h in results] == sorted((h["score"] for h in results), reverse=True)


def test_image_to_image_finds_the_same_image_first(client, records):
    rec = records["candidates"][10]
    data = read(rec.path)
    r = client.post("/api/search/image-to-image", files={"file": ("c.jpg", data, "image/jpeg")})
    assert r.status_code == 200
    results = r.json()["results"]
    assert len(results) == 5
    assert results[0]["image_id"] == rec.image_id
    assert results[0]["score"] == pytest.approx(1.0, abs=1e-2)
    assert results[0]["url"] == f"/api/images/{rec.image_id}"


@pytest.mark.parametrize("name", ["result1.csv", "result2.csv"])
def test_export_csv_is_identical_to_tuwen_export(client, built_settings, tmp_path, name):
    export_results(settings=built_settings, out=tmp_path)
    r = client.get(f"/api/export/{name}")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    assert name in r.headers["content-disposition"]
    assert r.content == (tmp_path / name).read_bytes()
    rows = list(csv.reader(io.StringIO(r.text)))
    assert len(rows) == 1 + 5 * 12  # header + 12 queries x top 5


def test_stats_reports_counts_model_index_type_and_build_time(client, built_settings):
    body = client.get("/api/stats").json()
    manifest = load_current(built_settings.index_dir).manifest
    assert body["ready"] is True
    assert body["store"]["images.image_candidates"] == manifest.counts["image_candidates"] + 0
    assert body["store"]["texts.text_candidates"] == 192
    assert body["model"]["model_id"] == manifest.model_id
    assert body["model"]["arch"] == "tiny"
    assert body["index"]["index_types"] == {"image_candidates": "Flat", "text_candidates": "Flat"}
    assert body["index"]["counts"]["text_queries"] == 12
    assert body["index"]["built_at"][:4].isdigit()


def test_search_page_is_served_in_chinese(client):
    r = client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert 'lang="zh-CN"' in r.text and "以文搜图" in r.text and "以图搜文" in r.text
    assert client.get("/static/app.js").status_code == 200


def test_openapi_lists_every_endpoint(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in [
        "/api/search/text",
        "/api/search/image",
        "/api/search/image-to-image",
        "/api/images/{image_id}",
        "/api/export/result1.csv",
        "/api/export/result2.csv",
        "/healthz",
        "/readyz",
        "/api/stats",
        "/api/admin/reload",
    ]:
        assert path in paths, path


# ---- parameter validation: each case by name -------------------------------------------------


def _detail(r) -> str:
    return str(r.json()["detail"])


def test_empty_query_is_422(client):
    r = client.get("/api/search/text", params={"q": "   "})
    assert r.status_code == 422
    assert "empty" in _detail(r)


def test_missing_query_is_422(client):
    r = client.get("/api/search/text")
    assert r.status_code == 422
    assert "q" in _detail(r)


def test_a_query_that_is_not_utf8_is_422_not_a_search_for_garbage(client):
    assert client.get("/api/search/text?q=%E7%BA%A2%E8%89%B2").status_code == 200  # 红色 in UTF-8
    r = client.get("/api/search/text?q=%BA%EC%C9%AB")  # 红色 in GBK
    assert r.status_code == 422
    assert "not UTF-8" in _detail(r)


def test_too_long_query_is_422(client, built_settings):
    limit = built_settings.max_query_chars
    assert client.get("/api/search/text", params={"q": "猫" * limit, "k": 1}).status_code == 200
    r = client.get("/api/search/text", params={"q": "猫" * (limit + 1)})
    assert r.status_code == 422
    assert "too long" in _detail(r)


@pytest.mark.parametrize(
    ("k", "message"), [("0", "greater than or equal to 1"), ("101", "less than or equal to 100")]
)
def test_k_out_of_range_is_422(client, k, message):
    r = client.get("/api/search/text", params={"q": "猫", "k": k})
    assert r.status_code == 422
    assert message in _detail(r)


def test_k_abc_is_422(client):
    r = client.get("/api/search/text", params={"q": "猫", "k": "abc"})
    assert r.status_code == 422
    assert "valid integer" in _detail(r)


def test_k_bounds_are_inclusive(client):
    assert len(client.get("/api/search/text", params={"q": "猫", "k": 1}).json()["results"]) == 1
    assert len(client.get("/api/search/text", params={"q": "猫", "k": 100}).json()["results"]) == 100


@pytest.mark.parametrize("path", ["/api/search/image", "/api/search/image-to-image"])
def test_k_out_of_range_on_uploads_is_422(client, path, records):
    data = read(records["queries"][5].path)
    r = client.post(path, params={"k": 101}, files={"file": ("q.jpg", data, "image/jpeg")})
    assert r.status_code == 422


def test_unexpected_errors_are_json_500_without_a_traceback(built_settings, monkeypatch):
    from app.core.encoding import QueryEncoder

    def boom(self, text):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(QueryEncoder, "encode_text", boom)  # a bug in the service, not the model
    with TestClient(create_app(built_settings), raise_server_exceptions=False) as c:
        r = c.get("/api/search/text", params={"q": "不在缓存里的句子"})
    assert r.status_code == 500
    assert r.json() == {"detail": "internal server error (see the server log)"}
    assert "secret" not in r.text
