"""Corpora beyond the competition folders: ``tuwen corpus add | list | encode`` and the corpus API."""

from __future__ import annotations

import json
import random
import re
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import inspect, select, text

from common.errors import TuwenError
from common.settings import Settings
from indexer import corpus, store
from indexer.corpus import add as corpus_add
from tuwen.cli import main

ROWS = [  # id, image, caption, time, likes (int), score (float), tag (str), hot (bool)
    ("p1", "a.jpg", "红色连衣裙，夏日海边", "2024-05-17", "12", "0.5", "夏季", "true"),
    ("p2", "sub/b.png", "蓝色牛仔裤, 街拍", "2024-06-01T08:30:00", "3", "1", "秋", "false"),
    ("p3", "", "只有文字的帖子", "2024-07-01", "", "2.5", "", "true"),
    ("p4", "gone.jpg", "", "2024-07-02", "7", "", "x", "false"),
    ("p5", "broken.jpg", "图片坏了", "", "1", "3", "冬", "false"),
]
HEADER = "id,image,caption,time,likes,score,tag,hot"


@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    Image.new("RGB", (24, 24), (200, 30, 30)).save(folder / "a.jpg")
    Image.new("RGBA", (20, 30), (30, 30, 200, 128)).save(folder / "sub" / "b.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    return folder


def _csv(path: Path, rows, *, encoding: str, header: str = HEADER) -> Path:
    lines = [header] + [",".join(f'"{v}"' if "," in v else v for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding=encoding)
    return path


def _add(settings: Settings, name: str, file: Path, images: Path | None = None, echo=None):
    return corpus_add.add_corpus(
        settings=settings, name=name, file=file, images=images, workers=1, progress=False, echo=echo
    )


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def db_settings(database_url, tmp_path) -> Settings:
    """A home whose store is on SQLite or on PostgreSQL (a schema of its own)."""
    return Settings(home=tmp_path / "home", database_url=database_url)


def test_gbk_csv_with_images_captions_time_and_typed_attributes(db_settings, images, tmp_path):
    lines: list[str] = []
    info = _add(
        db_settings, "posts", _csv(tmp_path / "posts.csv", ROWS, encoding="gbk"), images, lines.append
    )
    assert (info.rows, info.images, info.images_ok, info.captions) == (5, 4, 2, 4)
    assert info.time_kind == "datetime"
    assert info.fields == {"likes": "int", "score": "float", "tag": "str", "hot": "int"}
    items = corpus.load_items(settings=db_settings, name="posts")
    assert [i.item_id for i in items] == ["p1", "p2", "p3", "p4", "p5"]
    assert [i.position for i in items] == [0, 1, 2, 3, 4]
    assert items[0].caption == "红色连衣裙，夏日海边" and items[1].caption == "蓝色牛仔裤, 街拍"
    assert items[0].image_path == str(images / "a.jpg") and items[1].image_path == str(
        images / "sub" / "b.png"
    )
    assert [i.image_status for i in items] == ["ok", "ok", None, "missing", "unreadable"]
    assert items[3].caption is None and items[4].caption == "图片坏了"  # a bad image keeps its caption
    assert items[1].time == datetime(2024, 6, 1, 8, 30) and items[4].time is None
    assert items[0].attributes == {"likes": 12, "score": 0.5, "tag": "夏季", "hot": 1}
    assert items[2].attributes == {"likes": None, "score": 2.5, "tag": None, "hot": 1}
    assert any("gone.jpg" in line and "posts.csv:5" in line for line in lines)  # named with its row
    assert any("broken.jpg" in line and "posts.csv:6" in line for line in lines)
    assert any("gb18030" in line for line in lines)


def test_typed_attributes_are_queryable_in_sql(db_settings, images, tmp_path):
    _add(db_settings, "posts", _csv(tmp_path / "posts.csv", ROWS, encoding="utf-8"), images)
    engine = store.make_engine(db_settings.store_url)
    A = store.CorpusAttributeRecord
    with store.transaction(engine) as s:
        popular = s.scalars(
            select(A.position)
            .where(A.corpus == "posts", A.field == "likes", A.int_value >= 7)
            .order_by(A.position)
        ).all()
        scored = (
            s.execute(
                text(
                    "SELECT position FROM corpus_attributes WHERE corpus = 'posts' AND field = 'score' "
                    "AND float_value > 0.9 ORDER BY position"
                )
            )
            .scalars()
            .all()
        )
        hot = s.scalars(
            select(A.position).where(A.corpus == "posts", A.field == "hot", A.int_value == 1)
        ).all()
        indexes = {
            ix["name"]: ix["column_names"] for ix in inspect(s.connection()).get_indexes("corpus_attributes")
        }
    engine.dispose()
    assert popular == [0, 3]
    assert scored == [1, 2, 4]
    assert sorted(hot) == [0, 2]
    assert indexes["ix_corpus_attributes_int"] == ["corpus", "field", "int_value"]


def test_utf8_bom_csv_without_ids_numbers_the_rows(settings, images, tmp_path):
    rows = [("a.jpg", "第一行"), ("", "第二行"), ("sub/b.png", "")]
    file = _csv(tmp_path / "bom.csv", rows, encoding="utf-8-sig", header="image,caption")
    info = _add(settings, "bom", file, images)
    assert info.fields == {} and info.time_kind is None
    items = corpus.load_items(settings=settings, name="bom")
    assert [i.item_id for i in items] == ["1", "2", "3"]
    assert [i.caption for i in items] == ["第一行", "第二行", None]


def test_jsonl_with_day_numbers_bools_and_missing_keys(settings, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    Image.new("RGB", (16, 16), (0, 200, 0)).save(folder / "g.jpg")
    records = [
        {"id": 7, "image": "g.jpg", "caption": "绿色外套", "time": 1, "likes": 5, "sale": True, "price": 9},
        {"id": "8", "caption": "没有图片", "time": "2", "likes": 6, "sale": False, "price": 9.5},
        {"id": 9, "image": "g.jpg", "time": 30, "brand": "某牌\u2028第二行"},
    ]
    file = folder / "posts.jsonl"
    lines = [json.dumps(r, ensure_ascii=False) for r in records]  # U+2028 stays raw inside a string
    file.write_text("\r\n".join(lines) + "\n\n", encoding="utf-8")
    info = _add(settings, "daily", file)  # image paths relative to the file's folder
    assert info.time_kind == "int"
    assert info.fields == {"likes": "int", "sale": "int", "price": "float", "brand": "str"}
    items = corpus.load_items(settings=settings, name="daily")
    assert [(i.item_id, i.time) for i in items] == [("7", 1), ("8", 2), ("9", 30)]
    assert items[0].attributes == {"likes": 5, "sale": 1, "price": 9.0, "brand": None}
    assert items[1].attributes["sale"] == 0 and items[2].attributes["brand"] == "某牌\u2028第二行"
    assert [i.image_status for i in items] == ["ok", None, "ok"]


def test_json_array_image_only_and_text_only_corpora(settings, images, tmp_path):
    only_images = tmp_path / "images.json"
    only_images.write_text(json.dumps([{"image": "a.jpg"}, {"image": "sub/b.png"}]), encoding="utf-8")
    info = _add(settings, "pics", only_images, images)
    assert (info.rows, info.images_ok, info.captions) == (2, 2, 0)
    only_texts = tmp_path / "texts.json"
    only_texts.write_text(
        json.dumps([{"id": "t1", "caption": "一句话", "lang": "zh"}, {"id": "t2", "caption": "a sentence"}]),
        encoding="utf-8",
    )
    info = _add(settings, "words", only_texts)
    assert (info.rows, info.images, info.captions) == (2, 0, 2)
    items = corpus.load_items(settings=settings, name="words")
    assert [(i.caption, i.image_path, i.image_status, i.attributes) for i in items] == [
        ("一句话", None, None, {"lang": "zh"}),
        ("a sentence", None, None, {"lang": None}),
    ]
    assert [i.name for i in corpus.list_corpora(settings=settings)] == ["pics", "words"]


def test_re_adding_replaces_the_corpus_whole(db_settings, images, tmp_path, monkeypatch):
    _add(db_settings, "posts", _csv(tmp_path / "v1.csv", ROWS, encoding="utf-8"), images)
    second = _csv(tmp_path / "v2.csv", [("q1", "a.jpg", "新的"), ("q2", "", "另一个")], encoding="utf-8",
                  header="id,image,caption")  # fmt: skip
    info = _add(db_settings, "posts", second, images)
    assert info.rows == 2 and info.fields == {} and info.time_kind is None
    assert [i.item_id for i in corpus.load_items(settings=db_settings, name="posts")] == ["q1", "q2"]
    engine = store.make_engine(db_settings.store_url)
    with store.transaction(engine) as s:
        assert s.scalar(text("SELECT count(*) FROM corpus_attributes WHERE corpus = 'posts'")) == 0

    real_insert = store.insert_rows

    def crash_at_items(session, model, rows, chunk=5000):
        if model is store.CorpusItemRecord:
            raise RuntimeError("killed mid-way")
        return real_insert(session, model, rows, chunk)

    monkeypatch.setattr(store, "insert_rows", crash_at_items)
    with pytest.raises(RuntimeError):
        _add(db_settings, "posts", _csv(tmp_path / "v3.csv", ROWS, encoding="utf-8"), images)
    monkeypatch.undo()
    assert [i.item_id for i in corpus.load_items(settings=db_settings, name="posts")] == ["q1", "q2"]
    engine.dispose()


def test_names(settings, tmp_path):
    file = tmp_path / "t.jsonl"
    file.write_text('{"caption": "x"}\n', encoding="utf-8")
    for bad in ("train", "../up", "", "a b"):
        with pytest.raises(TuwenError, match="corpus name"):
            _add(settings, bad, file)
    _add(settings, "ok-name.v2", file)
    with pytest.raises(TuwenError, match=r"unknown corpus 'nope'; known: ok-name.v2, train, "):
        corpus.load_items(settings=settings, name="nope")
    with pytest.raises(TuwenError, match="tuwen ingest"):
        corpus.load_items(settings=settings, name="train")  # known, but nothing ingested


def _write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


BAD_FILES = {
    "broken-json-line": (
        "b.jsonl",
        '{"caption": "一"}\n{"caption": "二",\n{"caption": "三"}\n',
        r"b\.jsonl:2: not valid JSON",
    ),
    "repeated-key": (
        "k.jsonl",
        '{"caption": "一"}\n{"caption": "二", "caption": "三"}\n',
        r"k\.jsonl:2: key 'caption' appears twice in one object \(values '二' and '三'\)",
    ),
    "repeated-key-in-array": (
        "k.json",
        '[{"id": "a", "caption": "一", "id": "b"}]',
        r"k\.json: key 'id' appears twice in one object",
    ),
    "garbage-encoding": (
        "g.csv",
        random.Random(0).randbytes(400),
        r"g\.csv: cannot tell the text encoding",
    ),
    "mixed-time-kinds": (
        "t.csv",
        "caption,time\n一,2024-05-01\n二,2024-06-01\n三,17\n",
        r"t\.csv:4: time '17' is an integer, but .*t\.csv:2 has a date/datetime",
    ),
    "bad-time": ("t.csv", "caption,time\n一,yesterday\n", r"t\.csv:2: time 'yesterday' is neither"),
    "duplicate-id": ("d.csv", "id,caption\nx,一\ny,二\nx,三\n", r"d\.csv:4: id 'x' repeats .*d\.csv:2"),
    "neither-image-nor-caption": (
        "n.json",
        '[{"image": "a.jpg"}, {"caption": "", "image": null}]',
        r"n\.json: item 2: the row has neither an image nor a caption",
    ),
    "non-scalar": (
        "l.jsonl",
        '{"caption": "一", "tags": ["a", "b"]}\n',
        r"l\.jsonl:1: field 'tags' is an array; only scalars",
    ),
    "nul-character": ("z.jsonl", '{"caption": "a\\u0000b"}\n', r"z\.jsonl:1: field 'caption' contains a NUL"),
    "long-id": ("i.csv", "id,caption\n" + "x" * 300 + ",一\n", r"i\.csv:2: id 'x+'\.\.\. is longer than 255"),
    "no-usable-field": ("u.csv", "title,body\n一,二\n", r"u\.csv: no `image` or `caption` field"),
    "not-objects": ("o.json", "[1, 2]", r"o\.json: item 1: expected a JSON object"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_give_one_line_naming_the_row(case, tmp_path, capsys):
    name, content, expected = BAD_FILES[case]
    file = _write(tmp_path / name, content)
    rc, out, err = _cli(capsys, "corpus", "add", "bad", str(file), "--home", str(tmp_path / "home"))
    assert rc == 2
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("tuwen corpus: error: ")
    assert re.search(expected, err), err


def test_a_missing_image_is_named_with_its_row_and_the_row_is_kept(tmp_path, capsys):
    file = _write(tmp_path / "m.csv", "id,image,caption\nk1,nowhere.jpg,还在\n")
    rc, out, err = _cli(capsys, "corpus", "add", "m", str(file), "--home", str(tmp_path / "home"))
    assert rc == 0
    assert f"missing: k1 ({tmp_path / 'nowhere.jpg'}): file not found [{file}:2]" in err
    items = corpus.load_items(settings=Settings(home=tmp_path / "home"), name="m")
    assert (items[0].caption, items[0].image_status) == ("还在", "missing")


def test_cli_list_shows_added_and_competition_corpora(ingested, images, tmp_path, capsys):
    home = str(ingested.home)
    file = _csv(tmp_path / "posts.csv", ROWS, encoding="utf-8")
    assert _cli(capsys, "corpus", "add", "posts", str(file), "--images", str(images), "--home", home)[0] == 0
    rc, out, _ = _cli(capsys, "corpus", "list", "--json", "--home", home)
    assert rc == 0
    listed = {c["name"]: c for c in json.loads(out)}
    assert set(listed) == {"posts"} | set(corpus.BUILTIN)
    assert listed["posts"]["fields"]["likes"] == "int" and not listed["posts"]["builtin"]
    engine = store.make_engine(ingested.store_url)
    with store.transaction(engine) as s:
        counts = store.counts(s)
    engine.dispose()
    assert listed["train"]["rows"] == counts["pairs"]
    assert listed["image_candidates"]["rows"] == counts["images.image_candidates"]
    assert listed["text_queries"]["captions"] == counts["texts.text_queries"]
    for name in ("train", "image_candidates", "image_queries"):  # counted in SQL = the items served
        items = corpus.load_items(settings=ingested, name=name)
        assert listed[name]["images_ok"] == sum(i.image_status == "ok" for i in items)
        assert listed[name]["captions"] == sum(i.caption is not None for i in items)
    rc, out, _ = _cli(capsys, "corpus", "list", "--home", home)
    assert out.splitlines()[0].startswith("posts\t5 rows\t2/4 images\t4 captions\ttime datetime")


def test_competition_collections_are_corpora(ingested):
    engine = store.make_engine(ingested.store_url)
    with store.transaction(engine) as s:
        pairs = s.scalars(select(store.PairRecord).order_by(store.PairRecord.position)).all()
        candidates = store.list_images(s, collection=store.IMAGE_CANDIDATES)
        queries = store.list_texts(s, collection=store.TEXT_QUERIES)
    engine.dispose()
    train = corpus.load_items(settings=ingested, name="train")
    assert [i.caption for i in train] == [p.caption for p in pairs]
    assert len({i.item_id for i in train}) == len(train)  # an image with two captions: two ids
    assert [i.item_id.split("#")[0] for i in train] == [p.image_id for p in pairs]
    assert {i.image_status for i in train} == {"ok", "missing"}  # the corpus's planted missing file
    assert [i.attributes["line"] for i in train] == [p.position for p in pairs]
    cands = corpus.load_items(settings=ingested, name="image_candidates")
    assert [(i.item_id, i.image_path, i.caption) for i in cands] == [
        (c.image_id, c.path, None) for c in candidates
    ]
    texts = corpus.load_items(settings=ingested, name="text_queries")
    assert [(i.item_id, i.caption, i.image_status) for i in texts] == [
        (q.text_id, q.caption, None) for q in queries
    ]


# --- corpus encode -> load_embeddings ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_mapper(one_thread):
    from indexer.encode.mapper import EncodeMapper

    return EncodeMapper("tiny", precision="fp32", workers=1)


def test_encode_then_load_embeddings_aligned_normalised_and_masked(
    settings, images, tmp_path, capsys, tiny_mapper
):
    _add(settings, "posts", _csv(tmp_path / "posts.csv", ROWS, encoding="utf-8"), images)
    not_encoded = "corpus posts is not encoded: run `tuwen corpus encode posts --model SPEC`"
    with pytest.raises(TuwenError, match=re.escape(not_encoded)):
        corpus.load_embeddings(settings=settings, name="posts")
    home = str(settings.home)
    args = ("corpus", "encode", "posts", "--model", "tiny", "--precision", "fp32", "--workers", "1")
    rc, _, err = _cli(capsys, *args, "--home", home)
    assert rc == 0, err
    emb = corpus.load_embeddings(settings=settings, name="posts")
    items = corpus.load_items(settings=settings, name="posts")
    assert (
        emb.image_mask.tolist()
        == [i.image_status == "ok" for i in items]
        == [True, True, False, False, False]
    )
    assert emb.text_mask.tolist() == [i.caption is not None for i in items] == [True, True, True, False, True]
    for vectors, mask in ((emb.image_vectors, emb.image_mask), (emb.text_vectors, emb.text_mask)):
        assert vectors.dtype == np.float32 and vectors.shape[0] == len(items)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), mask.astype(np.float32), atol=1e-5)
    captions = [i.caption for i in items if i.caption]
    texts, _ = tiny_mapper.encode_sources("text", captions)
    pictures, _ = tiny_mapper.encode_sources("image", [i.image_path for i in items if i.image_status == "ok"])
    assert not np.allclose(texts[0], texts[1]) and not np.allclose(pictures[0], pictures[1])
    np.testing.assert_allclose(emb.text_vectors[emb.text_mask], texts, atol=1e-5)  # row i = item i
    np.testing.assert_allclose(emb.image_vectors[emb.image_mask], pictures, atol=1e-5)
    listed = {c.name: c for c in corpus.list_corpora(settings=settings)}
    assert listed["posts"].model_id == emb.model_id == tiny_mapper.model_fields()["model_id"]

    _add(settings, "posts", _csv(tmp_path / "v2.csv", ROWS[:3], encoding="utf-8"), images)  # changed
    with pytest.raises(TuwenError, match="corpus posts changed since it was encoded with tiny"):
        corpus.load_embeddings(settings=settings, name="posts")
    assert {c.name: c for c in corpus.list_corpora(settings=settings)}["posts"].model_id is None


def test_encode_a_text_only_corpus_through_a_given_runner(settings, tmp_path, tiny_mapper):
    from indexer.corpus.encode import encode_corpus
    from indexer.encode.runner import run_local

    file = _write(tmp_path / "t.json", json.dumps([{"caption": "一"}, {"caption": "二"}], ensure_ascii=False))
    _add(settings, "words", file)
    driven = []

    def recording_runner(sets, mapper, writer, say):
        driven.extend(s.name for s in sets)
        run_local(sets, mapper, writer, say)

    encode_corpus(
        settings=settings, name="words", model="tiny", workers=1, progress=False, runner=recording_runner
    )
    assert driven == ["texts"]
    emb = corpus.load_embeddings(settings=settings, name="words")
    assert emb.image_vectors is None and emb.image_mask.tolist() == [False, False]
    assert emb.text_vectors.shape[0] == 2 and emb.text_mask.all()


def test_encode_a_competition_collection(ingested, tiny_mapper):
    from indexer.corpus.encode import encode_corpus

    encode_corpus(settings=ingested, name="train", model="tiny", workers=1, progress=False)
    items = corpus.load_items(settings=ingested, name="train")
    emb = corpus.load_embeddings(settings=ingested, name="train")
    assert emb.image_mask.tolist() == [i.image_status == "ok" for i in items]
    assert emb.text_mask.all() and emb.text_vectors.shape[0] == len(items)
    first_ok = int(np.flatnonzero(emb.image_mask)[0])
    twins = [i for i, item in enumerate(items) if item.image_path == items[first_ok].image_path]
    np.testing.assert_allclose(
        emb.image_vectors[twins], emb.image_vectors[[first_ok] * len(twins)], atol=1e-6
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-05-17", datetime(2024, 5, 17)),
        ("2024-05-17 08:30", datetime(2024, 5, 17, 8, 30)),
        ("2024-05-17T08:30:00Z", datetime(2024, 5, 17, 8, 30)),
        ("2024-05-17T08:30:00+08:00", datetime(2024, 5, 17, 8, 30)),  # wall-clock time as written
        ("2024/05/17", datetime(2024, 5, 17)),
        ("2024-05", datetime(2024, 5, 1)),
        ("17", 17),
        (-3, -3),
        ("", None),
        (None, None),
    ],
)
def test_time_values(value, expected):
    from indexer.corpus.read import parse_time

    assert parse_time(value, where="f:2") == expected


@pytest.mark.parametrize("value", ["yesterday", 1.5, True, "2024-13-01"])
def test_bad_time_values_name_the_row(value):
    from indexer.corpus.read import parse_time

    with pytest.raises(TuwenError, match=r"^f:2: time .* is neither an ISO date/datetime"):
        parse_time(value, where="f:2")


def test_a_json_field_mixing_numbers_and_text_is_kept_as_text(settings, tmp_path):
    file = _write(
        tmp_path / "m.jsonl", '{"caption": "一", "likes": 3}\n{"caption": "二", "likes": "1.2万"}\n'
    )
    lines: list[str] = []
    info = _add(settings, "mixed", file, echo=lines.append)
    assert info.fields == {"likes": "str"}
    assert [i.attributes["likes"] for i in corpus.load_items(settings=settings, name="mixed")] == [
        "3",
        "1.2万",
    ]
    assert any("field 'likes' mixes numbers and text" in line and "m.jsonl:2" in line for line in lines)


def test_missing_file_or_images_folder(tmp_path, capsys):
    home = str(tmp_path / "home")
    rc, _, err = _cli(capsys, "corpus", "add", "x", str(tmp_path / "nope.csv"), "--home", home)
    assert rc == 2 and f"{tmp_path / 'nope.csv'}: no such file" in err
    file = _write(tmp_path / "ok.csv", "caption\n一\n")
    rc, _, err = _cli(
        capsys, "corpus", "add", "x", str(file), "--images", str(tmp_path / "no-dir"), "--home", home
    )
    assert rc == 2 and "the images folder does not exist" in err
