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
    try:
        for values in reader:
            if not any(v.strip() for v in values):
                continue
            rows.append((reader.line_num, dict(zip(header, values, strict=False))))
    except csv.Error as exc:
        raise TuwenError(f"{path}: line {reader.line_num}: {exc}") from exc
    return CsvTable(path, encoding, header, rows)
