"""One API path end to end on each store backend: SQLite and PostgreSQL (fixture ``database_url``)."""

from __future__ import annotations

from conftest import copy_home
from fastapi.testclient import TestClient
from test_service_fixtures import build_home, read

from app.main import create_app
from indexer import store


def test_search_captions_images_and_stats_on_each_store(database_url, tmp_path, small_corpus, built_settings):
    copy_home(built_settings.converted_dir, tmp_path / "home" / "converted")  # tiny's, converted once
    settings = build_home(tmp_path / "home", small_corpus[0], database_url=database_url)
    assert settings.store_url == database_url
    engine = store.make_engine(database_url)
    with store.transaction(engine) as session:
        query = store.list_images(session, collection=store.IMAGE_QUERIES)[5]
        captions = {t.text_id: t.caption for t in store.list_texts(session, collection=store.TEXT_CANDIDATES)}
        expected_counts = store.counts(session)
    engine.dispose()

    with TestClient(create_app(settings)) as c:
        r = c.post("/api/search/image", files={"file": ("q.jpg", read(query.path), "image/jpeg")})
        assert r.status_code == 200
        hits = r.json()["results"]
        assert len(hits) == 5
        assert all(h["caption"] == captions[h["text_id"]] for h in hits)

        image = c.get("/api/search/text", params={"q": hits[0]["caption"], "k": 1}).json()["results"][0]
        fetched = c.get(image["url"])
        assert fetched.status_code == 200 and fetched.headers["content-type"].startswith("image/")
        assert c.get("/api/images/Image99999999-0000.jpg").status_code == 404

        assert c.get("/api/stats").json()["store"] == expected_counts
