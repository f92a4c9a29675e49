"""The metadata store on SQLite and on the real PostgreSQL."""

from __future__ import annotations

from indexer import store


def _image(image_id: str, position: int, status: str = store.STATUS_OK) -> dict:
    return {
        "image_id": image_id,
        "position": position,
        "path": f"/data/{image_id}",
        "status": status,
        "detail": "",
        "format": "JPEG",
        "width": 8,
        "height": 8,
    }


def test_replacing_a_collection_twice_keeps_one_copy(database_url):
    engine = store.make_engine(database_url)
    rows = [_image("b.jpg", 0), _image("a.jpg", 1)]
    for _ in range(2):
        with store.transaction(engine) as s:
            store.replace_images(s, collection=store.IMAGE_CANDIDATES, rows=rows)
    with store.transaction(engine) as s:
        listed = store.list_images(s, collection=store.IMAGE_CANDIDATES)
        assert [r.image_id for r in listed] == ["b.jpg", "a.jpg"]  # file order, not id order
        assert store.counts(s)["images.image_candidates"] == 2
    engine.dispose()


def test_training_pairs_join_by_image_id_and_skip_missing(database_url):
    engine = store.make_engine(database_url)
    with store.transaction(engine) as s:
        store.replace_images(
            s,
            collection=store.TRAIN_IMAGES,
            rows=[_image("x.jpg", 0), _image("gone.jpg", 1, store.STATUS_MISSING)],
        )
        store.replace_pairs(
            s,
            rows=[
                {"position": 3, "image_id": "gone.jpg", "caption": "丢失"},
                {"position": 2, "image_id": "x.jpg", "caption": "红色帽子"},
                {"position": 5, "image_id": "x.jpg", "caption": "一顶红帽"},
            ],
        )
    with store.transaction(engine) as s:
        assert store.list_training_pairs(s) == [
            ("x.jpg", "红色帽子", "/data/x.jpg"),
            ("x.jpg", "一顶红帽", "/data/x.jpg"),
        ]
    engine.dispose()


def test_failed_transaction_leaves_previous_contents(database_url):
    engine = store.make_engine(database_url)
    with store.transaction(engine) as s:
        store.replace_texts(
            s, collection=store.TEXT_QUERIES, rows=[{"text_id": "W1", "position": 0, "caption": "旧"}]
        )
    try:
        with store.transaction(engine) as s:
            store.replace_texts(
                s, collection=store.TEXT_QUERIES, rows=[{"text_id": "W2", "position": 0, "caption": "新"}]
            )
            raise RuntimeError("crash mid-ingest")
    except RuntimeError:
        pass
    with store.transaction(engine) as s:
        assert [t.text_id for t in store.list_texts(s, collection=store.TEXT_QUERIES)] == ["W1"]
    engine.dispose()


def test_get_image_prefers_candidates_and_ignores_unreadable(database_url):
    engine = store.make_engine(database_url)
    with store.transaction(engine) as s:
        store.replace_images(s, collection=store.TRAIN_IMAGES, rows=[_image("same.jpg", 0)])
        store.replace_images(
            s,
            collection=store.IMAGE_CANDIDATES,
            rows=[_image("same.jpg", 0), _image("bad.jpg", 1, store.STATUS_UNREADABLE)],
        )
    with store.transaction(engine) as s:
        assert store.get_image(s, image_id="same.jpg").collection == store.IMAGE_CANDIDATES
        assert store.get_image(s, image_id="bad.jpg") is None
        assert store.get_image(s, image_id="../etc/passwd") is None
    engine.dispose()
