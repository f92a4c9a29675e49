"""Writes through the API (issue 19): PUT / DELETE of corpus items, searchable at once, in one
transaction, checked; followed by a corpus encode. In process here; with real processes (kill -9,
concurrent puts, an encode during puts, two replicas on PostgreSQL) in test_corpus_writes_processes."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from test_service_fixtures import add_shop, image_bytes, make_settings

from app.main import create_app
from indexer import store
from indexer.corpus import load_items
from indexer.corpus.encode import encode_corpus

KEY = {"Authorization": "Bearer admin-key"}


@pytest.fixture
def shop(tmp_path):
    settings = make_settings(tmp_path / "home", api_key="admin-key", precision="fp32")
    add_shop(settings, tmp_path / "shop", n=12)
    return settings


def _put(client, item_id, *, name="shop", image=None, headers=KEY, **form):
    files = {"image": ("x.png", image, "image/png")} if image is not None else None
    data = {k: (json.dumps(v, ensure_ascii=False) if k == "attributes" else v) for k, v in form.items()}
    return client.put(f"/api/corpora/{name}/items/{item_id}", data=data, files=files, headers=headers)


def _ids(client, q, *, target="text", k=5, where=None):
    body = {"q": q, "target": target, "k": k} | ({"where": where} if where else {})
    r = client.post("/api/corpora/shop/search", json=body)
    assert r.status_code == 200, r.text
    return [hit["id"] for hit in r.json()["results"]]


def test_put_is_searchable_at_once_replace_and_delete_too(shop):
    with TestClient(create_app(shop)) as client:
        r = _put(
            client, "new-1", image=image_bytes(), caption="荧光绿色的登山包",
            time="2024-05-01", attributes={"category": "包", "price": 99.5, "stock": 3},
        )  # fmt: skip
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "new" and r.json()["searchable"]
        assert _ids(client, "荧光绿色的登山包")[0] == "new-1"  # its caption, at once
        assert "new-1" in _ids(client, "登山包", target="image", k=20)  # its image vector too
        assert _ids(client, "荧光绿色的登山包", where={"category": "包"}) == ["new-1"]  # filters apply
        item = client.get("/api/corpora/shop/items/new-1").json()
        assert item["attributes"]["stock"] == 3 and item["caption"] == "荧光绿色的登山包"

        assert _put(client, "s1", caption="一把紫色的雨伞").json()["status"] == "changed"  # a base item
        hits = _ids(client, "一把紫色的雨伞", k=20)
        assert hits[0] == "s1" and hits.count("s1") == 1  # one version: the delta shadows the base
        assert "s1" not in _ids(client, "一把紫色的雨伞", target="image", k=20)  # no image any more

        assert client.delete("/api/corpora/shop/items/s2", headers=KEY).status_code == 200
        assert "s2" not in _ids(client, "款2", k=20) and "s2" not in _ids(client, "款2", target="image", k=20)
        assert client.get("/api/corpora/shop/items/s2").status_code == 404
        assert client.delete("/api/corpora/shop/items/s2", headers=KEY).status_code == 404
        assert client.get("/api/corpora").status_code == 200

    items = {i.item_id: i for i in load_items(settings=shop, name="shop")}
    assert "s2" not in items and items["s1"].caption == "一把紫色的雨伞" and items["s1"].image_path is None
    path = items["new-1"].image_path
    assert path.endswith(f"corpora/shop/files/{items['new-1'].image_sha256}")
    with store.open_store(shop.store_url) as session:
        log = session.execute(select(store.CorpusChangeRecord.item_id, store.CorpusChangeRecord.op)).all()
        vectors = session.scalar(
            select(store.VectorRecord.sha256).where(store.VectorRecord.sha256 == items["new-1"].image_sha256)
        )
    assert [tuple(r) for r in log][-3:] == [("new-1", "put"), ("s1", "put"), ("s2", "delete")]
    assert vectors is not None  # the vector went into the store with the item

    encode_corpus(settings=shop, name="shop", model="tiny", precision="fp32", workers=0, progress=False)
    with TestClient(create_app(shop)) as client:  # the new base folds them in
        assert _ids(client, "荧光绿色的登山包")[0] == "new-1"
        assert "s2" not in _ids(client, "款2", k=20)
        served = client.app.state.service.corpora.live()["shop"]
        assert all(s.delta is None or not s.delta.columns.ids for s in served.searches.values())


def test_a_json_put_is_an_item_without_an_image(shop):
    url = "/api/corpora/shop/items/j1"
    attributes = {"category": "伞", "stock": 2}
    body = {"caption": "一把墨绿色的折叠伞", "time": "2024-06-01", "attributes": attributes}
    with TestClient(create_app(shop)) as client:
        r = client.put(url, json=body, headers=KEY)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "new" and r.json()["searchable"]
        assert _ids(client, "一把墨绿色的折叠伞")[0] == "j1"
        assert _ids(client, "一把墨绿色的折叠伞", where={"category": "伞"}) == ["j1"]
        item = client.get(url).json()
        assert (item["caption"], item["attributes"]["stock"]) == (body["caption"], 2)
        assert item["time"].startswith("2024-06-01")
        for bad, field in [
            ({"caption": 5}, "caption"),
            ({"caption": "x", "image": "/etc/passwd"}, "image"),
            ({"caption": "x", "colour": "red"}, "colour"),
            ({"caption": "x", "attributes": [1]}, "attributes"),
            ({"caption": "x", "time": True}, "time"),
            (["caption"], "body"),
        ]:
            r = client.put("/api/corpora/shop/items/j2", json=bad, headers=KEY)
            assert r.status_code == 422 and r.json()["detail"].startswith(f"{field}:"), (bad, r.text)
        as_json = KEY | {"content-type": "application/json"}
        r = client.put("/api/corpora/shop/items/j2", content=b"{", headers=as_json)
        assert r.status_code == 422 and r.json()["detail"].startswith("body: not valid JSON")
        twice = '{"caption": "一", "caption": "二"}'.encode()
        r = client.put("/api/corpora/shop/items/j2", content=twice, headers=as_json)
        assert r.status_code == 422 and r.json()["detail"].startswith("body: key 'caption' appears twice")
    assert "j2" not in {i.item_id for i in load_items(settings=shop, name="shop")}


def test_bad_puts_are_refused_and_store_nothing(shop, tmp_path):
    with TestClient(create_app(shop)) as client:
        assert _put(client, "x", caption="无钥匙", headers={}).status_code == 401
        r = _put(client, "x", caption="价格写成文字", attributes={"category": 7})
        assert r.status_code == 422 and "category" in r.json()["detail"]  # an int where the corpus holds text
        r = _put(client, "x", image=b"\x89PNG not an image", caption="坏图")
        assert r.status_code == 422 and "image" in r.json()["detail"]
        assert _put(client, "a" * 256, caption="太长").status_code == 422
        assert _put(client, "a\\b", caption="反斜杠").status_code == 422
        assert _put(client, "x").status_code == 422  # neither image nor caption
        assert _put(client, "x", caption="时间", time="next tuesday").status_code == 422
        assert _put(client, "x", caption="x", name="nope").status_code == 404
        assert (
            _put(client, "new", caption="新字段", attributes={"colour": "red"}).status_code == 200
        )  # new field
    assert "x" not in {i.item_id for i in load_items(settings=shop, name="shop")}
    assert not (shop.home_dir / "corpora" / "shop" / "files").exists()  # the bad image was never written
    off = make_settings(shop.home_dir, precision="fp32")  # no admin key: the writes are off
    with TestClient(create_app(off)) as client:
        r = _put(client, "x", caption="关闭")
        assert r.status_code == 403 and "TUWEN_API_KEY" in r.json()["detail"]
