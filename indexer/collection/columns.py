"""The items of a collection as columns: what a search filters on and shows, without a database.

Row ``i`` is the ``i``-th item given to ``Columns.from_items`` (a corpus's row order). Columns:

- ``ids``, ``captions``, ``image_paths``: Python lists (``image_paths`` are server-side paths);
- ``time``: int64, µs since 1970-01-01 for ``time_kind == "datetime"`` (wall-clock time as
  written, no time zone: the corpus reader drops offsets), the raw integer for ``"int"``, and
  ``TIME_MISSING`` (the smallest int64) where an item has no time;
- each attribute field of kind ``"int"`` or ``"float"``: float64 with NaN where missing (an int
  beyond 2**53 loses its last digits, as it would in JSON);
- each ``"str"`` field: int32 codes into a sorted vocabulary, -1 where missing.

``save`` / ``load`` keep them as plain ``.npy`` files plus ``columns.json`` (ids, captions,
paths, vocabularies), written atomically with ``common.files``; ``load(..., mmap=True)`` maps
the arrays instead of reading them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from common.files import atomic_path, write_json_atomic

KIND_INT, KIND_FLOAT, KIND_STR = "int", "float", "str"
KINDS = (KIND_INT, KIND_FLOAT, KIND_STR)
TIME_DATETIME, TIME_INT = "datetime", "int"
TIME_FIELD = "time"
TIME_MISSING = np.iinfo(np.int64).min
EPOCH = datetime(1970, 1, 1)
COLUMNS_FILE = "columns.json"
TIME_FILE = "time.npy"
FORMAT_VERSION = 1
_MICROSECOND = timedelta(microseconds=1)


def time_to_int(value: datetime | int | None) -> int:
    """A time as stored in ``Columns.time`` (µs since the epoch for a datetime)."""
    if value is None:
        return int(TIME_MISSING)
    if isinstance(value, datetime):
        return (value.replace(tzinfo=None) - EPOCH) // _MICROSECOND
    return int(value)


def time_from_int(value: int, time_kind: str | None) -> str | int | None:
    """The stored time back as the API shows it: an ISO string for datetimes, else the int."""
    if value == TIME_MISSING or time_kind is None:
        return None
    if time_kind == TIME_DATETIME:
        return (EPOCH + timedelta(microseconds=int(value))).isoformat()
    return int(value)


@dataclass(eq=False)
class Columns:
    ids: list[str]
    captions: list[str | None]
    image_paths: list[str | None]
    time: np.ndarray  # (n,) int64
    time_kind: str | None
    fields: dict[str, str]  # attribute -> "int" | "float" | "str", in the corpus's order
    numbers: dict[str, np.ndarray] = field(default_factory=dict)  # float64, NaN = missing
    codes: dict[str, np.ndarray] = field(default_factory=dict)  # int32, -1 = missing
    vocab: dict[str, list[str]] = field(default_factory=dict)  # sorted

    def __len__(self) -> int:
        return len(self.ids)

    # --- building -----------------------------------------------------------------------------

    @classmethod
    def from_items(
        cls, items: Sequence[Any], *, fields: dict[str, str] | None = None, time_kind: str | None = None
    ) -> Columns:
        """Columns of ``items`` (``indexer.corpus.CorpusItem`` or anything with its attributes).

        ``fields`` / ``time_kind`` default to what the items hold (a field of ints and floats is
        "float", of anything else "str"); pass the corpus's own to keep kinds stable.
        """
        fields = dict(fields) if fields is not None else infer_fields(i.attributes for i in items)
        times = [i.time for i in items]
        if time_kind is None:
            time_kind = infer_time_kind(times)
        columns = cls(
            ids=[i.item_id for i in items],
            captions=[i.caption for i in items],
            image_paths=[i.image_path for i in items],
            time=np.fromiter((time_to_int(t) for t in times), dtype=np.int64, count=len(times)),
            time_kind=time_kind,
            fields=fields,
        )
        for name, kind in fields.items():
            columns.set_field(name, kind, [i.attributes.get(name) for i in items])
        return columns

    def set_field(self, name: str, kind: str, values: Sequence[Any]) -> None:
        """Store one attribute column (``values[i]`` of row ``i``, None where missing)."""
        if kind not in KINDS:
            raise ValueError(f"field {name!r}: kind {kind!r} is not one of {', '.join(KINDS)}")
        self.fields[name] = kind
        if kind == KIND_STR:
            texts = [None if v is None else str(v) for v in values]
            vocab = sorted({t for t in texts if t is not None})
            code_of = {t: c for c, t in enumerate(vocab)}
            self.codes[name] = np.fromiter(
                (-1 if t is None else code_of[t] for t in texts), dtype=np.int32, count=len(texts)
            )
            self.vocab[name] = vocab
        else:
            self.numbers[name] = np.fromiter(
                (np.nan if v is None else float(v) for v in values), dtype=np.float64, count=len(values)
            )

    # --- reading ------------------------------------------------------------------------------

    @property
    def known_fields(self) -> dict[str, str]:
        """Every field a filter may name: the attributes and ``time`` (kind ``time_kind``)."""
        known = dict(self.fields)
        if self.time_kind is not None:
            known[TIME_FIELD] = self.time_kind
        return known

    @property
    def time_range(self) -> tuple[str | int, str | int] | None:
        """(first, last) time of the items, as ``row`` shows times; None when none has a time."""
        present = self.time[self.time != TIME_MISSING]
        if self.time_kind is None or not len(present):
            return None
        first, last = int(present.min()), int(present.max())
        return time_from_int(first, self.time_kind), time_from_int(last, self.time_kind)

    def attribute(self, name: str, i: int) -> int | float | str | None:
        kind = self.fields[name]
        if kind == KIND_STR:
            code = int(self.codes[name][i])
            return None if code < 0 else self.vocab[name][code]
        value = float(self.numbers[name][i])
        if value != value:  # NaN: missing
            return None
        return int(value) if kind == KIND_INT else value

    def row(self, i: int) -> dict[str, Any]:
        """Item ``i`` as the API shows it: id, caption, image_path, time, attributes."""
        return {
            "id": self.ids[i],
            "caption": self.captions[i],
            "image_path": self.image_paths[i],
            "time": time_from_int(int(self.time[i]), self.time_kind),
            "attributes": {name: self.attribute(name, i) for name in self.fields},
        }

    @cached_property
    def _row_of(self) -> dict[str, int]:
        return {item_id: i for i, item_id in enumerate(self.ids)}

    def row_of(self, item_id: str) -> int | None:
        """The row of ``item_id`` (None when absent); the first call builds a dict of all ids."""
        return self._row_of.get(item_id)

    def column(self, name: str) -> np.ndarray | None:
        """The array a filter on ``name`` compares: times, str codes or numbers (None if absent)."""
        if name == TIME_FIELD and self.time_kind is not None:
            return self.time
        kind = self.fields.get(name)
        if kind is None:
            return None
        return self.codes[name] if kind == KIND_STR else self.numbers[name]

    def sorted_column(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(rows in value order, the values in that order) of ``column(name)``, built on first use.

        Missing values sort first for times and codes (the smallest int), last for numbers (NaN).
        A range condition is then two binary searches, and its rows one slice: a selective filter
        never scans the whole column. 4 bytes per item (rows) plus a copy of the column.
        """
        cache = self.__dict__.setdefault("_sorted", {})
        if name not in cache:
            values = self.column(name)
            order = np.argsort(values, kind="stable").astype(np.int32 if len(values) < 2**31 else np.int64)
            cache[name] = (order, np.ascontiguousarray(values[order]))
        return cache[name]

    def value_counts(self, name: str) -> dict[str, int]:
        """How many items hold each value of a str field (for a select in the page)."""
        counts = np.bincount(self.codes[name][self.codes[name] >= 0], minlength=len(self.vocab[name]))
        return {value: int(c) for value, c in zip(self.vocab[name], counts, strict=True)}

    def nbytes(self) -> int:
        """The arrays' bytes (the Python lists of ids, captions and paths not counted)."""
        arrays = [self.time, *self.numbers.values(), *self.codes.values()]
        return int(sum(a.nbytes for a in arrays))

    # --- files --------------------------------------------------------------------------------

    def save(self, folder: str | Path) -> None:
        """Write ``columns.json`` and one ``.npy`` per array into ``folder``, each atomically.

        The JSON is written last, so a reader that finds it finds the arrays it names.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        _save_npy(folder / TIME_FILE, self.time)
        files = {}
        for j, (name, kind) in enumerate(self.fields.items()):
            files[name] = f"field{j}.npy"
            _save_npy(folder / files[name], self.codes[name] if kind == KIND_STR else self.numbers[name])
        meta = {
            "version": FORMAT_VERSION,
            "rows": len(self),
            "time_kind": self.time_kind,
            "fields": [[name, kind, files[name]] for name, kind in self.fields.items()],
            "vocab": self.vocab,
            "ids": self.ids,
            "captions": self.captions,
            "image_paths": self.image_paths,
        }
        write_json_atomic(folder / COLUMNS_FILE, meta, indent=None)

    @classmethod
    def load(cls, folder: str | Path, *, mmap: bool = False) -> Columns:
        """Columns saved by ``save`` (arrays memory-mapped read-only with ``mmap=True``)."""
        folder = Path(folder)
        meta = json.loads((folder / COLUMNS_FILE).read_text(encoding="utf-8"))
        if meta.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"{folder / COLUMNS_FILE}: format version {meta.get('version')} is not {FORMAT_VERSION}"
            )
        mode = "r" if mmap else None
        columns = cls(
            ids=meta["ids"],
            captions=meta["captions"],
            image_paths=meta["image_paths"],
            time=np.load(folder / TIME_FILE, mmap_mode=mode),
            time_kind=meta["time_kind"],
            fields={name: kind for name, kind, _ in meta["fields"]},
            vocab=meta["vocab"],
        )
        for name, kind, file in meta["fields"]:
            target = columns.codes if kind == KIND_STR else columns.numbers
            target[name] = np.load(folder / file, mmap_mode=mode)
        return columns


def _save_npy(target: Path, array: np.ndarray) -> None:
    with atomic_path(target) as tmp, open(tmp, "wb") as fh:  # a path would get ".npy" appended
        np.save(fh, np.ascontiguousarray(array))


def infer_fields(attributes: Iterable[dict[str, Any]]) -> dict[str, str]:
    """Each field's kind from its values: all ints "int", ints and floats "float", else "str"."""
    seen: dict[str, set[type]] = {}
    for attrs in attributes:
        for name, value in attrs.items():
            kinds = seen.setdefault(name, set())
            if value is not None:
                kinds.add(type(value))
    return {name: _kind_of(types) for name, types in seen.items()}


def _kind_of(types: set[type]) -> str:
    if types and types <= {int}:
        return KIND_INT
    if types and types <= {int, float}:
        return KIND_FLOAT
    return KIND_STR


def infer_time_kind(times: Iterable[datetime | int | None]) -> str | None:
    kinds = {TIME_DATETIME if isinstance(t, datetime) else TIME_INT for t in times if t is not None}
    if len(kinds) > 1:
        raise ValueError("the items mix datetime and integer times")
    return kinds.pop() if kinds else None
