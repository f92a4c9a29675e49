"""Work saved by content (issue 19): a vector is encoded once per model and image bytes or caption.

Encoder work is counted with a real ``tiny`` model: a counting runner records the rows the cache
hands it (only the misses ever reach a runner).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from common.settings import Settings
from indexer import corpus, store
from indexer.build import index_corpus
from indexer.corpus.add import add_corpus
from indexer.corpus.encode import encode_corpus
from indexer.encode.mapper import EncodeMapper
from indexer.encode.runner import run_local
from indexer.ingest import ingest
from indexer.vector_cache import digest_file, digest_text


class Counting:
    """A runner that counts the rows it is given per kind, then encodes them locally."""

    def __init__(self):
        self.rows = {"image": 0, "text": 0}

    def __call__(self, sets, mapper, writer, say):
        for s in sets:
            self.rows[s.kind] += len(s.rows)
        run_local(sets, mapper, writer, say)


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, color in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        Image.new("RGB", (32, 24), color).save(folder / f"p{i}.png")
    shutil.copy(folder / "p0.png", folder / "same-as-p0.png")  # the same bytes under another name
    return folder


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return path


ROWS = [
    {"id": "a", "image": "p0.png", "caption": "红色"},
    {"id": "b", "image": "p1.png", "caption": "绿色"},
    {"id": "c", "image": "p2.png", "caption": "蓝色"},
    {"id": "d", "image": "same-as-p0.png", "caption": "红色"},  # same image bytes, same caption
]


def _encode(settings: Settings, name: str, model: str = "tiny") -> Counting:
    counting = Counting()
    encode_corpus(settings=settings, name=name, model=model, workers=0, progress=False, runner=counting)
    return counting


def _add(settings: Settings, name: str, file: Path, images: Path) -> None:
    add_corpus(settings=settings, name=name, file=file, images=images, workers=1, progress=False)


def test_corpus_add_records_the_digests(settings, photos, tmp_path):
    _add(settings, "shop", _jsonl(tmp_path / "shop.jsonl", ROWS), photos)
    items = corpus.load_items(settings=settings, name="shop")
    assert [i.image_sha256 for i in items] == [digest_file(photos / r["image"]) for r in ROWS]
    assert [i.caption_sha256 for i in items] == [digest_text(r["caption"]) for r in ROWS]
    assert items[0].image_sha256 == items[3].image_sha256


def test_each_source_is_encoded_once_per_model(settings, photos, tmp_path, one_thread):
    _add(settings, "shop", _jsonl(tmp_path / "shop.jsonl", ROWS), photos)
    first = _encode(settings, "shop")
    assert first.rows == {"image": 3, "text": 3}  # the same bytes twice in one corpus: encoded once
    emb = corpus.load_embeddings(settings=settings, name="shop")
    assert np.allclose(emb.image_vectors[0], emb.image_vectors[3]) and emb.image_mask.all()

    mapper = EncodeMapper("tiny", precision="fp32", workers=0)  # the vectors are the model's own
    direct, _ = mapper.encode_sources("image", [str(photos / r["image"]) for r in ROWS])
    texts, _ = mapper.encode_sources("text", [r["caption"] for r in ROWS])
    # (the command runs on the settings' backend: the same vectors up to its rounding)
    assert (np.sum(emb.image_vectors * direct, axis=1) > 0.999).all()
    assert (np.sum(emb.text_vectors * texts, axis=1) > 0.999).all()

    assert _encode(settings, "shop").rows == {"image": 0, "text": 0}  # again: nothing to encode
    other = [{**r, "id": f"x{r['id']}"} for r in ROWS[:2]] + [{"id": "new", "caption": "黄色"}]
    _add(settings, "other", _jsonl(tmp_path / "other.jsonl", other), photos)
    assert _encode(settings, "other").rows == {"image": 0, "text": 1}  # shared with shop but the new caption
    assert _encode(settings, "shop", model="random:tiny").rows == {"image": 3, "text": 3}  # shares nothing
    with store.open_store(settings.store_url) as session:
        V = store.VectorRecord
        kept = {
            (key, kind): count
            for key, kind, count in session.execute(
                select(V.model_id, V.kind, func.count()).group_by(V.model_id, V.kind)
            ).all()
        }
    # images and texts of two models, each under its own model id (and the tower's precision)
    assert sorted(kept.values()) == [3, 3, 3, 4] and len({key.split("|")[0] for key, _ in kept}) == 2


def test_a_changed_image_file_is_a_change(settings, photos, tmp_path, one_thread):
    _add(settings, "shop", _jsonl(tmp_path / "shop.jsonl", ROWS[:3]), photos)
    _encode(settings, "shop")
    Image.new("RGB", (32, 24), (250, 250, 0)).save(photos / "p1.png")  # replaced in place, same path
    _add(settings, "shop", _jsonl(tmp_path / "shop.jsonl", ROWS[:3]), photos)
    assert corpus.list_corpora(settings=settings)[0].model_id is None  # stale: its bytes changed
    assert _encode(settings, "shop").rows == {"image": 1, "text": 0}


def test_index_after_reingesting_unchanged_folders_encodes_nothing(small_corpus, tmp_path, one_thread):
    root, _ = small_corpus
    settings = Settings(home=tmp_path / "home")
    counts = []
    for _ in range(2):
        ingest(root=root, settings=settings, workers=1, progress=False)
        counting = Counting()
        index_corpus(settings=settings, model="tiny", workers=0, progress=False, runner=counting)
        counts.append(counting.rows)
    assert counts[0]["image"] > 0 and counts[0]["text"] > 0
    # a missing query image has no digest: it is tried (and fails) each time, nothing else is
    assert counts[1] == {"image": 1, "text": 0}
