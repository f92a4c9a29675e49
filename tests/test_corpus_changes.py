"""Keeping a corpus current (issue 19): ``corpus add --upsert``, ``corpus remove``, the change log."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from common.errors import TuwenError
from common.settings import Settings
from indexer import corpus, store
from indexer.corpus.add import add_corpus, remove_items
from indexer.corpus.encode import encode_corpus
from indexer.encode.runner import run_local
from tuwen.cli import main


@pytest.fixture
def db_settings(database_url, tmp_path) -> Settings:
    return Settings(home=tmp_path / "home", database_url=database_url)


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, color in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]):
        Image.new("RGB", (32, 24), color).save(folder / f"p{i}.png")
    return folder


BASE = [
    {"id": "a", "image": "p0.png", "caption": "红色", "tag": "x", "price": 1.5},
    {"id": "b", "image": "p1.png", "caption": "绿色", "tag": "y", "price": 2},
    {"id": "c", "image": "p2.png", "caption": "蓝色", "tag": "z"},
]
UPSERT = [
    {"id": "b", "image": "p1.png", "caption": "深绿色", "tag": "y", "price": 2},  # changed caption
    {"id": "c", "image": "p2.png", "caption": "蓝色", "tag": "z"},  # unchanged
    {"id": "d", "image": "p3.png", "caption": "黄色", "size": 42},  # new, with a new field
]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return path


def _add(settings, name, file, images, upsert=False):
    return add_corpus(
        settings=settings, name=name, file=file, images=images, workers=1, progress=False, upsert=upsert
    )


def _log(settings, name) -> list[tuple[str, str]]:
    C = store.CorpusChangeRecord
    with store.open_store(settings.store_url) as session:
        rows = session.execute(select(C.item_id, C.op).where(C.corpus == name).order_by(C.seq)).all()
    return [tuple(r) for r in rows]


def test_upsert_adds_new_replaces_changed_keeps_the_rest_and_logs_each(db_settings, photos, tmp_path):
    _add(db_settings, "shop", _jsonl(tmp_path / "base.jsonl", BASE), photos)
    info = _add(db_settings, "shop", _jsonl(tmp_path / "up.jsonl", UPSERT), photos, upsert=True)
    assert info.rows == 4 and info.fields == {"tag": "str", "price": "float", "size": "int"}
    items = corpus.load_items(settings=db_settings, name="shop")
    assert [(i.item_id, i.caption) for i in items] == [
        ("a", "红色"),
        ("b", "深绿色"),
        ("c", "蓝色"),
        ("d", "黄色"),
    ]
    assert [i.position for i in items] == [0, 1, 2, 3]
    assert items[0].attributes == {"tag": "x", "price": 1.5, "size": None}  # kept as it was
    assert items[3].attributes == {"tag": None, "price": None, "size": 42}
    assert _log(db_settings, "shop") == [("a", "put"), ("b", "put"), ("c", "put"), ("b", "put"), ("d", "put")]

    _add(db_settings, "shop", _jsonl(tmp_path / "up.jsonl", UPSERT), photos, upsert=True)  # again: no change
    assert len(_log(db_settings, "shop")) == 5


def test_remove_names_unknown_ids_removes_the_others_and_logs_them(db_settings, photos, tmp_path):
    _add(db_settings, "shop", _jsonl(tmp_path / "base.jsonl", BASE), photos)
    lines: list[str] = []
    removed, unknown = remove_items(
        settings=db_settings, name="shop", ids=["b", "zz", "b"], echo=lines.append
    )
    assert (removed, unknown) == (["b"], ["zz"])
    assert any("zz" in line and "not in corpus shop" in line for line in lines)
    items = corpus.load_items(settings=db_settings, name="shop")
    assert [(i.item_id, i.position) for i in items] == [("a", 0), ("c", 1)]  # a gap in the store, none here
    assert corpus.corpus_info(settings=db_settings, name="shop").rows == 2
    assert _log(db_settings, "shop")[-1] == ("b", "delete")
    with pytest.raises(TuwenError, match="unknown corpus 'nope'"):
        remove_items(settings=db_settings, name="nope", ids=["a"])


def test_a_field_of_another_kind_is_refused_and_nothing_changes(db_settings, photos, tmp_path):
    _add(db_settings, "shop", _jsonl(tmp_path / "base.jsonl", BASE), photos)
    bad = _jsonl(tmp_path / "bad.jsonl", [{"id": "e", "caption": "新", "tag": 7}])
    with pytest.raises(TuwenError, match="field 'tag' is an integer here, but corpus shop holds text"):
        _add(db_settings, "shop", bad, photos, upsert=True)
    assert [i.item_id for i in corpus.load_items(settings=db_settings, name="shop")] == ["a", "b", "c"]
    assert len(_log(db_settings, "shop")) == 3
    csv = tmp_path / "ok.csv"  # a CSV's numbers are text as written: fine in a text field
    csv.write_text("id,caption,tag\ne,新,7\n", encoding="utf-8")
    _add(db_settings, "shop", csv, photos, upsert=True)
    assert corpus.load_items(settings=db_settings, name="shop")[-1].attributes["tag"] == "7"


def test_a_whole_replace_logs_what_changed_and_what_went(db_settings, photos, tmp_path):
    _add(db_settings, "shop", _jsonl(tmp_path / "base.jsonl", BASE), photos)
    _add(db_settings, "shop", _jsonl(tmp_path / "base.jsonl", BASE), photos)  # the same file: no change
    assert len(_log(db_settings, "shop")) == 3
    _add(db_settings, "shop", _jsonl(tmp_path / "two.jsonl", BASE[:1] + UPSERT[:1]), photos)
    assert _log(db_settings, "shop")[3:] == [("b", "put"), ("c", "delete")]


def test_cli_upsert_and_remove(settings, photos, tmp_path, capsys):
    home = ["--home", str(settings.home_dir)]
    base = str(_jsonl(tmp_path / "b.jsonl", BASE))
    assert main(["corpus", "add", "shop", base, "--images", str(photos), *home]) == 0
    up = _jsonl(tmp_path / "up.jsonl", UPSERT)
    assert main(["corpus", "add", "shop", str(up), "--upsert", "--images", str(photos), *home]) == 0
    assert "1 new, 1 changed, 1 unchanged" in capsys.readouterr().err
    ids = tmp_path / "ids.txt"
    ids.write_text("c\n\nnope\n", encoding="utf-8")
    assert main(["corpus", "remove", "shop", "a", "--ids-file", str(ids), *home]) == 0
    err = capsys.readouterr().err
    assert "not in corpus shop (1): nope" in err and "2 removed" in err
    assert [i.item_id for i in corpus.load_items(settings=settings, name="shop")] == ["b", "d"]


def test_encode_after_an_upsert_encodes_only_what_is_new_or_changed(settings, photos, tmp_path, one_thread):
    encoded = {"image": 0, "text": 0}

    def counting(sets, mapper, writer, say):
        for s in sets:
            encoded[s.kind] += len(s.rows)
        run_local(sets, mapper, writer, say)

    def encode() -> dict:
        encoded.update(image=0, text=0)
        encode_corpus(
            settings=settings, name="shop", model="tiny", workers=0, progress=False, runner=counting
        )
        return dict(encoded)

    _add(settings, "shop", _jsonl(tmp_path / "base.jsonl", BASE), photos)
    assert encode() == {"image": 3, "text": 3}
    _add(settings, "shop", _jsonl(tmp_path / "up.jsonl", UPSERT), photos, upsert=True)
    remove_items(settings=settings, name="shop", ids=["a"])
    assert encode() == {"image": 1, "text": 2}  # d's image; b's new caption and d's
    emb = corpus.load_embeddings(settings=settings, name="shop")  # b, c, d: aligned with the items
    assert emb.image_mask.tolist() == [True, True, True] and emb.text_vectors.shape[0] == 3
    assert not np.allclose(emb.image_vectors[0], emb.image_vectors[2])
    live = corpus.items._current_generation(settings, "shop")[1]
    assert live["seq"] == 6  # 3 puts, 2 puts of the upsert, 1 delete: all folded in
