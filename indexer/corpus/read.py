"""Reading a corpus file into typed rows: CSV (any encoding ingest detects), JSONL, or a JSON array.

Fields: ``id`` (else the row number), ``image`` (a path relative to the images folder), ``caption``,
``mask`` (optional: a mask image of the item, nonzero = garment, relative like ``image``),
``time`` (ISO date/datetime or an integer, one kind per corpus) and any other scalar field, kept
as a typed attribute (int, float, str; true/false as 1/0). Every complaint names the file and the
row (``file:line`` for CSV and JSONL, ``file: item N`` for a JSON array) and stops the read.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from common.errors import TuwenError
from indexer.csv_io import read_csv, read_text

RESERVED = ("id", "image", "caption", "time", "mask")
TIME_DATETIME, TIME_INT = "datetime", "int"
KIND_INT, KIND_FLOAT, KIND_STR = "int", "float", "str"
_INT64 = 2**63
MAX_NAME = 255  # ids and field names (String(255) columns)
_INT_RE = re.compile(r"[+-]?\d+")
_FLOAT_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_BOOLS = {"true": 1, "false": 0}
_DATE_FORMATS = ("%Y-%m", "%Y/%m/%d", "%Y/%m/%d %H:%M", "%Y/%m/%d %H:%M:%S", "%Y/%m")

Scalar = int | float | str | None


@dataclass(frozen=True)
class RawRow:
    where: str  # "file:line" or "file: item N"
    number: int  # 1-based record number, the id of a row without one
    values: dict[str, object]


@dataclass
class ParsedRow:
    where: str
    item_id: str
    caption: str | None
    image: str | None  # absolute path
    time: datetime | int | None
    attributes: dict[str, Scalar]
    mask: str | None = None  # absolute path of the item's mask image (the optional ``mask`` field)


@dataclass
class ParsedCorpus:
    path: Path
    format: str  # "csv" | "jsonl" | "json"
    encoding: str
    rows: list[ParsedRow]
    time_kind: str | None
    fields: dict[str, str]  # attribute field -> "int" | "float" | "str", in first-seen order
    warnings: list[str] = field(default_factory=list)


def read_corpus_file(path: Path, *, images_dir: Path | None = None) -> ParsedCorpus:
    """Every row of ``path`` checked and typed; image paths resolved against ``images_dir``."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise TuwenError(f"{path}: no such file")
    base = Path(images_dir).expanduser().resolve() if images_dir is not None else path.parent
    if not base.is_dir():
        raise TuwenError(f"{base}: the images folder does not exist")
    fmt, encoding, raw_rows = _read_raw(path)
    if not raw_rows:
        raise TuwenError(f"{path}: no rows")
    corpus = ParsedCorpus(path, fmt, encoding, [], None, {})
    names = list(dict.fromkeys(k for r in raw_rows for k in r.values))
    if not {"image", "caption"} & set(names):
        raise TuwenError(f"{path}: no `image` or `caption` field (fields are {', '.join(names)})")
    attribute_names = [n for n in names if n not in RESERVED]
    corpus.fields = {
        n: _field_kind(n, raw_rows, corpus.warnings, typed=fmt != "csv") for n in attribute_names
    }
    seen: dict[str, str] = {}
    time_first: dict[str, str] = {}
    for raw in raw_rows:
        row = _parse_row(raw, base, corpus.fields)
        if row.item_id in seen:
            raise TuwenError(f"{raw.where}: id {row.item_id!r} repeats {seen[row.item_id]}")
        seen[row.item_id] = raw.where
        if row.time is not None:
            kind = TIME_INT if isinstance(row.time, int) else TIME_DATETIME
            time_first.setdefault(kind, raw.where)
            if len(time_first) > 1:
                other = next(k for k in time_first if k != kind)
                raise TuwenError(
                    f"{raw.where}: time {raw.values.get('time')!r} is {_TIME_WORDS[kind]}, but "
                    f"{time_first[other]} has {_TIME_WORDS[other]}: one kind of time per corpus"
                )
        corpus.rows.append(row)
    corpus.time_kind = next(iter(time_first), None)
    return corpus


_TIME_WORDS = {TIME_INT: "an integer", TIME_DATETIME: "a date/datetime"}


def _read_raw(path: Path) -> tuple[str, str, list[RawRow]]:
    suffix = path.suffix.lower()
    if suffix not in {".json", ".jsonl", ".ndjson"}:
        table = read_csv(path, required=[])
        header = table.header
        if "" in header or len(set(header)) < len(header):
            raise TuwenError(f"{path}: line 1: empty or repeated column name in the header {header}")
        rows = [
            RawRow(f"{path}:{line}", number, {k: (v if v.strip() else None) for k, v in row.items()})
            for number, (line, row) in enumerate(table.rows, start=1)
        ]
        return "csv", table.encoding, rows
    text, encoding = read_text(path)
    if suffix == ".json" and text.lstrip().startswith("["):
        return "json", encoding, _json_array(path, text)
    return "jsonl", encoding, _json_lines(path, text)


def _json_array(path: Path, text: str) -> list[RawRow]:
    try:
        items = json.loads(text, object_pairs_hook=unique_object)
    except json.JSONDecodeError as exc:
        raise TuwenError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}, column {exc.colno})") from exc
    except RepeatedKey as exc:
        raise TuwenError(f"{path}: {exc}") from None
    if not isinstance(items, list):
        raise TuwenError(f"{path}: expected a JSON array of objects")
    rows = []
    for number, item in enumerate(items, start=1):
        where = f"{path}: item {number}"
        if not isinstance(item, dict):
            raise TuwenError(f"{where}: expected a JSON object, got {_json_type(item)}")
        rows.append(RawRow(where, number, item))
    return rows


def _json_lines(path: Path, text: str) -> list[RawRow]:
    rows = []
    for line_no, line in enumerate(text.split("\n"), start=1):  # not splitlines: JSON strings may hold U+2028
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            item = json.loads(line, object_pairs_hook=unique_object)
        except json.JSONDecodeError as exc:
            raise TuwenError(f"{where}: not valid JSON ({exc.msg}, column {exc.colno})") from exc
        except RepeatedKey as exc:
            raise TuwenError(f"{where}: {exc}") from None
        if not isinstance(item, dict):
            raise TuwenError(f"{where}: expected a JSON object, got {_json_type(item)}")
        rows.append(RawRow(where, len(rows) + 1, item))
    return rows


class RepeatedKey(ValueError):
    """A key given twice in one JSON object (``unique_object``)."""


def unique_object(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object whose keys are unique: Python's ``json`` keeps the last of a repeated key,
    dropping the other value without a word."""
    found: dict = {}
    for key, value in pairs:
        if key in found:
            values = f"values {found[key]!r} and {value!r}"
            raise RepeatedKey(f"key {key!r} appears twice in one object ({values})")
        found[key] = value
    return found


def _json_type(value: object) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "true/false"}.get(
        type(value), "null" if value is None else "a number"
    )


def _parse_row(raw: RawRow, base: Path, fields: dict[str, str]) -> ParsedRow:
    values = raw.values
    for name, value in values.items():
        if isinstance(value, dict | list):
            raise TuwenError(
                f"{raw.where}: field {name!r} is {_json_type(value)}; only scalars "
                "(string, number, true/false, null) can be fields"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise TuwenError(f"{raw.where}: field {name!r} is {value}, not a finite number")
        if isinstance(value, str) and "\x00" in value:  # PostgreSQL text cannot hold it
            raise TuwenError(f"{raw.where}: field {name!r} contains a NUL character")
        if len(name) > MAX_NAME:
            raise TuwenError(f"{raw.where}: field name {name[:40]!r}... is longer than {MAX_NAME} characters")
    item_id = _text(values.get("id")) or str(raw.number)
    if len(item_id) > MAX_NAME:
        raise TuwenError(f"{raw.where}: id {item_id[:40]!r}... is longer than {MAX_NAME} characters")
    caption = _text(values.get("caption"))
    image = _text(values.get("image"))
    mask = _text(values.get("mask"))
    if caption is None and image is None:
        raise TuwenError(f"{raw.where}: the row has neither an image nor a caption")
    return ParsedRow(
        where=raw.where,
        item_id=item_id,
        caption=caption,
        image=str((base / Path(image).expanduser()).resolve()) if image else None,
        time=parse_time(values.get("time"), where=raw.where),
        attributes={n: _convert(values.get(n), kind) for n, kind in fields.items()},
        mask=str((base / Path(mask).expanduser()).resolve()) if mask else None,
    )


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        value = int(value)
    return str(value).strip() or None


def parse_time(value: object, *, where: str) -> datetime | int | None:
    """An ISO date/datetime (wall-clock time as written; an offset is dropped) or an integer."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool | float):
        raise TuwenError(f"{where}: time {value!r} is neither an ISO date/datetime nor an integer")
    text = str(value).strip()
    if _INT_RE.fullmatch(text):
        number = int(text)
        if not -_INT64 <= number < _INT64:
            raise TuwenError(f"{where}: time {number} is out of range")
        return number
    parsed = _parse_datetime(text)
    if parsed is None:
        raise TuwenError(
            f"{where}: time {text!r} is neither an ISO date/datetime (2024-05-17, 2024-05-17T08:30) "
            "nor an integer (a day number)"
        )
    return parsed


def _parse_datetime(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text).replace(
            tzinfo=None
        )
    except ValueError:
        pass
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    return None


def _field_kind(name: str, rows: list[RawRow], warnings: list[str], *, typed: bool) -> str:
    """int, float or str: what every value of the field fits; JSON values keep their own type."""
    if not name.strip():
        where = next(r.where for r in rows if name in r.values)
        raise TuwenError(f"{where}: a field has an empty name")
    kinds: dict[str, str] = {}  # kind -> where it was first seen
    for raw in rows:
        value = raw.values.get(name)
        if value is None or isinstance(value, dict | list):
            continue  # nulls fit anything; non-scalars are refused with their row in _parse_row
        kinds.setdefault(json_kind(value) if typed else _text_kind(value), raw.where)
    if not kinds or set(kinds) == {KIND_INT}:
        return KIND_INT if kinds else KIND_STR
    if set(kinds) <= {KIND_INT, KIND_FLOAT}:
        return KIND_FLOAT
    if typed and len(kinds) > 1:
        warnings.append(
            f"field {name!r} mixes numbers and text (text first at {kinds[KIND_STR]}): kept as text"
        )
    return KIND_STR


def json_kind(value: object) -> str:
    """int, float or str: the kind of a JSON scalar (true/false are ints; a huge int is text)."""
    if isinstance(value, bool):
        return KIND_INT
    if isinstance(value, int):
        return KIND_INT if -_INT64 <= value < _INT64 else KIND_STR
    return KIND_FLOAT if isinstance(value, float) else KIND_STR


def _text_kind(value: object) -> str:
    text = str(value).strip()
    if _INT_RE.fullmatch(text):
        return KIND_INT if -_INT64 <= int(text) < _INT64 else KIND_STR
    if text.lower() in _BOOLS:
        return KIND_INT
    return KIND_FLOAT if _FLOAT_RE.fullmatch(text) else KIND_STR


def _convert(value: object, kind: str) -> Scalar:
    if value is None:
        return None
    if kind == KIND_STR:
        return _text(value)
    if isinstance(value, str):
        value = _BOOLS.get(value.strip().lower(), value.strip())
    return int(value) if kind == KIND_INT else float(value)
