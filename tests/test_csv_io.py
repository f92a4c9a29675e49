"""CSV reading: encodings detected, quoted multi-line captions kept, bad headers named."""

from __future__ import annotations

import pytest

from common.errors import TuwenError
from indexer.csv_io import read_csv

CONTENT = 'text_id,caption\nWord-1,红色条纹连衣裙\nWord-2,"一件蓝色衬衫，\n第二行, 有逗号"\n'


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gbk", "utf-16"])
def test_encodings_are_detected(tmp_path, encoding):
    path = tmp_path / "word_test.csv"
    path.write_bytes(CONTENT.encode(encoding))
    table = read_csv(path, required=["text_id", "caption"])
    assert [r["caption"] for _, r in table.rows] == ["红色条纹连衣裙", "一件蓝色衬衫，\n第二行, 有逗号"]
    assert table.header == ["text_id", "caption"]


def test_line_numbers_count_physical_lines(tmp_path):
    path = tmp_path / "w.csv"
    path.write_text(CONTENT + "Word-3,黄色帽子\n", encoding="utf-8")
    lines = [line for line, _ in read_csv(path, required=["text_id"]).rows]
    assert lines == [2, 4, 5]


def test_missing_column_names_file_and_line(tmp_path):
    path = tmp_path / "image_data.csv"
    path.write_text("id\nImage1.jpg\n", encoding="utf-8")
    with pytest.raises(TuwenError, match=r"image_data.csv: line 1: missing column\(s\) image_id"):
        read_csv(path, required=["image_id"])


def test_empty_file_is_a_clear_error(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(TuwenError, match="empty.csv: the file is empty"):
        read_csv(path, required=["image_id"])
