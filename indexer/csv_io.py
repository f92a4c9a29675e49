"""Reading the competition CSVs whatever their encoding, with row numbers for every complaint."""

from __future__ import annotations

import codecs
import csv
import io
from dataclasses import dataclass
from pathlib import Path

from charset_normalizer import from_bytes

from common.errors import TuwenError


@dataclass
class CsvTable:
    path: Path
    encoding: str
    header: list[str]
    rows: list[tuple[int, dict[str, str]]]  # (line number in the file, row)


def detect_encoding(raw: bytes, path: Path) -> str:
    """BOMs first, then strict UTF-8, then GB18030 (a superset of GBK), then a statistical guess."""
    if raw.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    for candidate in ("utf-8", "gb18030"):
        try:
            raw.decode(candidate)
            return candidate
        except UnicodeDecodeError:
            continue
    best = from_bytes(raw).best()
    if best is None:
        raise TuwenError(f"{path}: cannot tell the text encoding (tried UTF-8, GBK/GB18030)")
    return best.encoding


def read_text(path: Path) -> tuple[str, str]:
    """The file's text and the encoding it was decoded with (detected; a clear error if unreadable)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TuwenError(f"{path}: cannot read ({exc.strerror})") from exc
    encoding = detect_encoding(raw, path)
    return raw.decode(encoding), encoding


def read_csv(path: Path, *, required: list[str]) -> CsvTable:
    """Rows of ``path`` as dicts keyed by the (trimmed) header; ``required`` columns must exist."""
    text, encoding = read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip().lstrip("\ufeff") for h in next(reader)]
    except StopIteration:
        raise TuwenError(f"{path}: the file is empty (expected a header {','.join(required)})") from None
    except csv.Error as exc:
        raise TuwenError(f"{path}: line 1: {exc}") from exc
    missing = [c for c in required if c not in header]
    if missing:
        raise TuwenError(
            f"{path}: line 1: missing column(s) {', '.join(missing)} "
            f"(header is {','.join(header)!r}, expected {','.join(required)})"
        )
    rows = []
    lines: list[str] | None = None  # the file's physical lines, read once a record spans several
    start = reader.line_num + 1  # the first line of the next record
    try:
        for values in reader:
            if reader.line_num > start:
                lines = lines or io.StringIO(text, newline="").readlines()
                _check_quoted_field(path, lines, start, reader.line_num)
            start = reader.line_num + 1
            _check_field_count(path, reader.line_num, header, values)
            if any(v.strip() for v in values):
                rows.append((reader.line_num, dict(zip(header, values, strict=False))))
    except csv.Error as exc:
        raise TuwenError(f"{path}: line {reader.line_num}: {exc}") from exc
    return CsvTable(path, encoding, header, rows)


def _check_field_count(path: Path, line: int, header: list[str], values: list[str]) -> None:
    """More values than the header has columns would be dropped: a caption with an unquoted comma
    cut at the comma. Empty ones past the end (a trailing comma on every row) are fine."""
    extra = values[len(header) :]
    if any(v.strip() for v in extra):
        raise TuwenError(
            f"{path}: line {line}: {len(values)} values where the header has {len(header)} "
            f"({','.join(header)}), so {header[-1]} would be cut to {values[len(header) - 1]!r} "
            f"from {','.join(values[len(header) - 1 :])!r}; a value holding a comma must be in quotes"
            ' ("红色,条纹")'
        )


def _check_quoted_field(path: Path, lines: list[str], first: int, last: int) -> None:
    """A record over lines ``first``..``last`` (a caption with line breaks, quoted) must close
    its quotes as CSV says. Python's lenient reader, which keeps a stray quote inside one line as
    text, would otherwise read every line after a quote left open into that one field, up to the
    next quote or the end of the file: rows lost without a word."""
    try:
        for _ in csv.reader(lines[first - 1 : last], strict=True):
            pass
    except csv.Error as exc:
        swallowed = f"line {last}" if last == first + 1 else f"lines {first + 1}-{last}"
        raise TuwenError(
            f"{path}: line {first}: a quoted field here does not close as CSV requires ({exc}), "
            f"so {swallowed} would be read into this row; close the quote "
            '(a quote inside a quoted field is written twice: "")'
        ) from None
