"""The documented workflow through the real console script: ingest → index → export."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tuwen.demo.corpus import generate_demo_corpus

TUWEN = str(Path(sys.executable).parent / "tuwen")
pytestmark = pytest.mark.slow


def run(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TUWEN_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([TUWEN, *args], capture_output=True, text=True, env=env, timeout=600)


def read_ids(path: Path, column: str) -> list[str]:
    raw = path.read_bytes()
    for enc in ("utf-8-sig", "gb18030"):
        try:
            text = raw.decode(enc)
            break
        except UnicodeDecodeError:
            continue
    return [row[column] for row in csv.DictReader(text.splitlines())]


def check_result_file(path: Path, header: list[str], queries: list[str], candidates: set[str]) -> None:
    """Every invariant of a result file, checked independently of the exporter's own validator."""
    text = path.read_bytes().decode("utf-8")  # must be plain UTF-8
    rows = list(csv.reader(text.splitlines()))
    assert rows[0] == header
    body = rows[1:]
    assert len(body) == 5 * len(queries)
    seen = []
    for start in range(0, len(body), 5):
        block = body[start : start + 5]
        assert len({r[0] for r in block}) == 1
        seen.append(block[0][0])
        assert [int(r[1]) for r in block] == [1, 2, 3, 4, 5]
        ids = [r[2] for r in block]
        assert len(set(ids)) == 5 and set(ids) <= candidates
    assert seen == queries  # every query exactly once, in the order of the query file


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("released")
    summary = generate_demo_corpus(
        root, seed=7, n_train=40, n_text_queries=9, n_image_queries=8, image_size=48
    )
    return root, summary


def test_ingest_index_export(released, tmp_path):
    root, summary = released
    home = tmp_path / "home"
    ingest = run("ingest", "--root", str(root), home=home)
    assert ingest.returncode == 0, ingest.stderr
    for quirk in ("train_missing", "query_missing"):
        image_id = summary["quirks"][quirk]
        line = next(li for li in ingest.stderr.splitlines() if image_id in li)
        assert line.startswith("missing") and str(root) in line  # id and path named
    assert "missing images: 2, unreadable images: 0" in ingest.stderr
    index = run("index", "--model", "tiny", home=home)
    assert index.returncode == 0, index.stderr
    assert summary["quirks"]["query_missing"] in index.stderr and "fallback" in index.stderr
    out = tmp_path / "results"
    export = run("export", "--out", str(out), home=home)
    assert export.returncode == 0, export.stderr
    check_result_file(
        out / "result1.csv",
        ["text_id", "similarity_ranking", "result_image_id"],
        read_ids(root / "附件2" / "word_test.csv", "text_id"),
        set(read_ids(root / "附件2" / "image_data.csv", "image_id")),
    )
    check_result_file(
        out / "result2.csv",
        ["image_id", "similarity_ranking", "result_text_id"],
        read_ids(root / "附件3" / "image_test.csv", "image_id"),
        set(read_ids(root / "附件3" / "word_data.csv", "text_id")),
    )
    for proc in (ingest, index, export):
        assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["ingest", "--root", "/nonexistent/data"], "not a folder"),
        (["index", "--model", "tiny"], "run `tuwen ingest"),
        (["export", "--out", "x"], "run `tuwen index` first"),
    ],
)
def test_errors_are_one_line_not_tracebacks(tmp_path, args, message):
    proc = run(*args, home=tmp_path / "empty-home")
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_model_is_refused(released, tmp_path):
    home = tmp_path / "home"
    assert run("ingest", "--root", str(released[0]), home=home).returncode == 0
    proc = run("index", "--model", "ViT-Q-1", home=home)
    assert proc.returncode == 2 and "unknown model" in proc.stderr and "Traceback" not in proc.stderr
