"""CSV reading: encodings detected, quoted multi-line captions kept, bad headers named, and a quote
left open never swallows the rows after it, nor an unquoted comma cuts a caption."""

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


def test_a_quote_left_open_to_the_end_is_named_not_swallowing_the_rows_after_it(tmp_path):
    path = tmp_path / "ImageWordData.csv"
    rows = 'a.jpg,first\nb.jpg,"open quote\nc.jpg,third\nd.jpg,fourth\n'
    path.write_text("image_id,caption\n" + rows, encoding="utf-8")
    with pytest.raises(TuwenError) as raised:
        read_csv(path, required=["image_id", "caption"])
    message = str(raised.value)
    assert message.startswith(f"{path}: line 3: a quoted field here does not close as CSV requires")
    assert "so lines 4-5 would be read into this row" in message


def test_a_quote_left_open_up_to_the_next_quote_is_named(tmp_path):
    path = tmp_path / "w.csv"
    path.write_text('text_id,caption\nW1,"open\nW2,"second"\nW3,third\n', encoding="utf-8")
    with pytest.raises(TuwenError, match=r"w.csv: line 2: .* so line 3 would be read into this row"):
        read_csv(path, required=["text_id", "caption"])


def test_quotes_that_lose_no_row_are_read_as_before(tmp_path):
    """A caption opening with a quoted word, a quote inside a field, a closed multi-line caption and
    a quote left open on the last line lose no row: read as Python's lenient reader reads them."""
    path = tmp_path / "w.csv"
    path.write_text(
        'text_id,caption\nW1,"双11"购物节\nW2,他说"你好"\nW3,"一件衬衫，\n第二行"\nW4,"last open\n',
        encoding="utf-8",
    )
    table = read_csv(path, required=["text_id", "caption"])
    assert [(line, r["text_id"], r["caption"]) for line, r in table.rows] == [
        (2, "W1", "双11购物节"),
        (3, "W2", '他说"你好"'),
        (5, "W3", "一件衬衫，\n第二行"),
        (6, "W4", "last open\n"),
    ]


def test_an_unquoted_comma_is_named_instead_of_cutting_the_caption(tmp_path):
    path = tmp_path / "word_test.csv"
    path.write_text("text_id,caption\nW1,红色,条纹连衣裙\nW2,蓝色衬衫\n", encoding="utf-8")
    with pytest.raises(TuwenError) as raised:
        read_csv(path, required=["text_id", "caption"])
    assert str(raised.value) == (
        f"{path}: line 2: 3 values where the header has 2 (text_id,caption), so caption would be cut "
        "to '红色' from '红色,条纹连衣裙'; a value holding a comma must be in quotes (\"红色,条纹\")"
    )


def test_empty_values_past_the_header_are_a_trailing_comma_not_an_error(tmp_path):
    path = tmp_path / "w.csv"
    path.write_text("text_id,caption\nW1,红色,\nW2,蓝色,,\n", encoding="utf-8")
    table = read_csv(path, required=["text_id", "caption"])
    assert [r["caption"] for _, r in table.rows] == ["红色", "蓝色"]
