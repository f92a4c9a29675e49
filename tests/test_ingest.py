"""Ingest of a released-style folder: counts, named problems, idempotence, hostile ids."""

from __future__ import annotations

import shutil

import pytest

from common.errors import TuwenError
from common.settings import Settings
from indexer import store
from indexer.ingest import ingest


def _store_counts(settings: Settings) -> dict[str, int]:
    engine = store.make_engine(settings.store_url)
    with store.transaction(engine) as s:
        out = store.counts(s)
    engine.dispose()
    return out


def test_ingest_counts_and_names_every_missing_file(small_corpus, home, database_url):
    root, summary = small_corpus
    settings = Settings(home=home, database_url=database_url)
    report = ingest(root=root, settings=settings, workers=1, progress=False)
    missing = {(p.image_id, p.status) for p in report.problems}
    assert missing == {
        (summary["quirks"]["train_missing"], "missing"),
        (summary["quirks"]["query_missing"], "missing"),
    }
    assert all(str(root) in p.path for p in report.problems)
    assert report.mislabelled == 4  # GIF + PNG in 附件1, PNG in 附件2, GIF in 附件3
    assert report.encodings[str(root / "附件2" / "word_test.csv")] == "gb18030"
    first = _store_counts(settings)
    assert first["pairs"] == summary["train_pairs"]
    assert first["texts.text_queries"] == summary["text_queries"]
    assert first["images.image_candidates"] == summary["candidate_images"]
    ingest(root=root, settings=settings, workers=2, progress=False)
    assert _store_counts(settings) == first  # a rerun duplicates nothing


def test_multiline_caption_survives(small_corpus, settings):
    root, summary = small_corpus
    ingest(root=root, settings=settings, workers=1, progress=False)
    engine = store.make_engine(settings.store_url)
    with store.transaction(engine) as s:
        captions = [
            c for i, c, _ in store.list_training_pairs(s) if i == summary["quirks"]["train_multiline_caption"]
        ]
    assert captions and "\n第二行, with comma" in captions[0]


def test_absent_part_keeps_its_data(small_corpus, tmp_path, settings):
    root, _ = small_corpus
    ingest(root=root, settings=settings, workers=1, progress=False)
    before = _store_counts(settings)
    partial = tmp_path / "partial"
    shutil.copytree(root / "附件3", partial / "附件3")
    report = ingest(root=partial, settings=settings, workers=1, progress=False)
    assert any("附件1" in w and "unchanged" in w for w in report.warnings)
    assert _store_counts(settings) == before


def test_hostile_and_duplicate_ids_are_reported_not_followed(tmp_path, settings):
    part = tmp_path / "附件2"
    (part / "ImageData").mkdir(parents=True)
    (part / "word_test.csv").write_text("text_id,caption\nW1,红色\nW1,重复\nW2,\n", encoding="utf-8")
    (part / "image_data.csv").write_text("image_id\n../../etc/passwd\nok.jpg\n", encoding="utf-8")
    report = ingest(root=tmp_path, settings=settings, workers=1, progress=False)
    hostile = [p for p in report.problems if p.image_id == "../../etc/passwd"]
    assert hostile and hostile[0].status == "unreadable" and "plain file name" in hostile[0].detail
    assert any("word_test.csv:3" in w and "repeats line 2" in w for w in report.warnings)
    assert any("word_test.csv:4" in w and "empty caption" in w for w in report.warnings)


def test_not_a_competition_folder(tmp_path, settings):
    with pytest.raises(TuwenError, match="none of 附件1"):
        ingest(root=tmp_path, settings=settings)
    with pytest.raises(TuwenError, match="not a folder"):
        ingest(root=tmp_path / "nope", settings=settings)
