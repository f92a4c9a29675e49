"""Hostile files in the competition data: ingest reports each (through the same guarded decoder as
uploads) and goes on; ``tuwen index`` leaves them out and indexes everything else."""

from __future__ import annotations

import shutil

from test_api_uploads import png_claiming
from test_service_fixtures import make_settings

from indexer import store
from indexer.build import index_corpus
from indexer.index_files import load_current
from indexer.ingest import ingest


def test_bad_image_files_are_reported_and_left_out_not_fatal(small_corpus, tmp_path):
    root = tmp_path / "corpus"
    shutil.copytree(small_corpus[0], root)
    folder = root / "附件2" / "ImageData"
    jpegs = sorted(p for p in folder.glob("*.jpg") if p.read_bytes()[:3] == b"\xff\xd8\xff")
    whole = jpegs[0].read_bytes()
    bad = {
        jpegs[0].name: whole[: len(whole) // 3],  # truncated JPEG
        jpegs[1].name: b"<html>not an image</html>",  # non-image bytes
        jpegs[2].name: b"",  # empty file
        jpegs[3].name: png_claiming(50_000, 50_000),  # decompression bomb
    }
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    settings = make_settings(tmp_path / "home")

    report = ingest(root=root, settings=settings, workers=1, progress=False)

    problems = {p.image_id: p for p in report.problems if p.status == store.STATUS_UNREADABLE}
    assert set(bad) <= set(problems)
    assert all(problems[name].detail and str(folder / name) == problems[name].path for name in bad)
    assert "too large" in problems[jpegs[3].name].detail
    assert "empty" in problems[jpegs[2].name].detail
    engine = store.make_engine(settings.store_url)
    with store.transaction(engine) as session:
        candidates = store.list_images(session, collection=store.IMAGE_CANDIDATES)
    engine.dispose()
    assert {r.image_id for r in candidates} >= set(bad)  # recorded, with their status, not dropped

    index_corpus(settings=settings, model="tiny", workers=0, progress=False)
    indexed = set(load_current(settings.index_dir).sets["image_candidates"].ids)
    usable = {r.image_id for r in candidates if r.status == store.STATUS_OK}
    assert indexed == usable and not indexed & set(bad) and len(usable) >= len(candidates) - len(bad) - 1
