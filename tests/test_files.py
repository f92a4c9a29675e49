"""``common.files``: a replaced file is the old one or the new one, never half, and no temp is left."""

from __future__ import annotations

import json

import pytest

from common import files


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_write_atomic_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "CURRENT"
    files.write_atomic(target, "gen-1")
    files.write_atomic(target, "gen-2")
    assert target.read_text() == "gen-2"
    assert _leftovers(target.parent) == []


def test_a_failure_mid_write_keeps_the_old_file_and_removes_the_temp(tmp_path):
    target = tmp_path / "result1.csv"
    target.write_text("old\n")
    with pytest.raises(ValueError), files.atomic_path(target) as tmp:
        tmp.write_text("half of the new")
        raise ValueError("validation failed")
    assert target.read_text() == "old\n"
    assert _leftovers(tmp_path) == []


def test_a_failed_fsync_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "config.json"
    files.write_json_atomic(target, {"epochs": 1})

    def broken(_path):
        raise OSError("disk full")

    monkeypatch.setattr(files, "fsync_file", broken)
    with pytest.raises(OSError, match="disk full"):
        files.write_json_atomic(target, {"epochs": 2})
    assert json.loads(target.read_text()) == {"epochs": 1}
    assert _leftovers(tmp_path) == []


def test_write_json_atomic_keeps_non_ascii(tmp_path):
    target = files.write_json_atomic(tmp_path / "ids.json", ["一只猫"])
    assert "一只猫" in target.read_text(encoding="utf-8")


def test_atomic_folder_publishes_whole_or_not_at_all(tmp_path):
    target = tmp_path / "converted" / "model"
    with files.atomic_folder(target) as tmp:
        (tmp / "meta.json").write_text("{}")
    assert (target / "meta.json").is_file()
    with pytest.raises(RuntimeError), files.atomic_folder(target) as tmp:
        (tmp / "image.onnx").write_text("partial")
        raise RuntimeError("export failed")
    assert sorted(p.name for p in target.iterdir()) == ["meta.json"]
    assert _leftovers(target.parent) == []
    with files.atomic_folder(target) as tmp:  # replace=True: a stale folder is rebuilt
        (tmp / "meta.json").write_text('{"v": 2}')
    assert (target / "meta.json").read_text() == '{"v": 2}'


def test_a_folder_published_first_by_another_process_is_kept(tmp_path):
    """Two replicas convert one model into a shared cache: the second to finish keeps the first's
    folder (its readers may be loading it), and drops its own; a stale folder is still rebuilt."""
    target = tmp_path / "converted" / "model"
    same = lambda folder: (folder / "meta.json").read_text() == '{"model_id": "m"}'  # noqa: E731
    with files.atomic_folder(target, keep=same) as first:
        (first / "meta.json").write_text('{"model_id": "m"}')
        (first / "text.bin").write_text("first")
    opened = (target / "text.bin").open()  # a reader of the first folder
    with files.atomic_folder(target, keep=same) as second:
        (second / "meta.json").write_text('{"model_id": "m"}')
        (second / "text.bin").write_text("second")
    assert (target / "text.bin").read_text() == "first" and opened.read() == "first"
    opened.close()
    assert _leftovers(target.parent) == []
    (target / "meta.json").write_text('{"model_id": "old"}')  # stale: another model's towers
    with files.atomic_folder(target, keep=same) as third:
        (third / "meta.json").write_text('{"model_id": "m"}')
        (third / "text.bin").write_text("third")
    assert (target / "text.bin").read_text() == "third"
    with pytest.raises(OSError), files.atomic_folder(target, replace=False) as fourth:
        (fourth / "meta.json").write_text("{}")  # neither kept nor replaceable: refused
    assert (target / "text.bin").read_text() == "third" and _leftovers(target.parent) == []
