"""The ``where`` grammar and the columns it runs on (indexer.collection.filters / columns).

Every operator on every kind is checked against a plain-Python reading of the grammar on seeded
random items with missing values, and every malformed ``where`` raises a ``FilterError`` that
names the field and lists the corpus's fields.
"""

from __future__ import annotations

import operator
from datetime import datetime, timedelta
from types import SimpleNamespace

import numpy as np
import pytest

from indexer.collection import columns as col
from indexer.collection import filters
from indexer.collection.columns import Columns
from indexer.collection.filters import MAX_IN, FilterError, parse_where

FIELDS = {"category": "str", "price": "float", "stock": "int"}
CATEGORIES = ["连衣裙", "衬衫", "裤子", "外套", "鞋"]
START = datetime(2024, 1, 1)


def make_items(n: int, *, seed: int = 0, int_time: bool = False) -> list[SimpleNamespace]:
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        missing = rng.random(4) < 0.1  # about a tenth of each value is missing
        when = (
            int(rng.integers(0, 1000))
            if int_time
            else START + timedelta(hours=int(rng.integers(0, 24 * 365)))
        )
        attributes = {
            "category": None if missing[0] else CATEGORIES[int(rng.integers(0, len(CATEGORIES)))],
            "price": None if missing[1] else round(float(rng.random() * 500), 2),
            "stock": None if missing[2] else int(rng.integers(0, 20)),
        }
        items.append(SimpleNamespace(
            item_id=f"id{i}", caption=f"caption {i}" if i % 3 else None, image_path=None,
            time=None if missing[3] else when, attributes=attributes,
        ))  # fmt: skip
    return items


@pytest.fixture(scope="module")
def items():
    return make_items(2000)


@pytest.fixture(scope="module")
def columns(items):
    return Columns.from_items(items, fields=FIELDS, time_kind="datetime")


LIST_OPS = ("in", "nin")
COMPARE = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
    "in": lambda a, b: a in b,
    "nin": lambda a, b: a not in b,
}


def reference(item, where: dict) -> bool:
    """The grammar read literally: missing values pass only ``ne`` and ``nin``."""
    for name, spec in where.items():
        value = item.time if name == "time" else item.attributes.get(name)
        for op, operand in spec.items() if isinstance(spec, dict) else [("eq", spec)]:
            if name == "time":
                operand = [_when(v) for v in operand] if isinstance(operand, list) else _when(operand)
            if value is None:
                if op not in ("ne", "nin"):
                    return False
            elif not COMPARE[op](value, operand):
                return False
    return True


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def random_where(rng: np.random.Generator) -> dict:
    where = {}
    for name in rng.choice(
        ["category", "price", "stock", "time"], size=int(rng.integers(1, 4)), replace=False
    ):
        ops = [str(op) for op in rng.choice(list(COMPARE), size=int(rng.integers(1, 3)), replace=False)]
        if name == "category":
            pick = lambda: str(rng.choice(CATEGORIES + ["不存在"]))  # noqa: E731
        elif name == "price":
            pick = lambda: round(float(rng.random() * 500), 2)  # noqa: E731
        elif name == "stock":
            pick = lambda: int(rng.integers(0, 20))  # noqa: E731
        else:
            pick = lambda: (START + timedelta(hours=int(rng.integers(0, 24 * 365)))).isoformat()  # noqa: E731
        # two operators on one field (a range such as gte + lt) are intersected by the filter
        spec = {
            op: [pick() for _ in range(int(rng.integers(1, 4)))] if op in LIST_OPS else pick() for op in ops
        }
        where[str(name)] = spec["eq"] if ops == ["eq"] and rng.random() < 0.5 else spec
    return where


@pytest.mark.parametrize("narrow", [0.0, 0.25, 1.0], ids=["scan", "planned", "sorted-slices"])
def test_every_operator_matches_the_grammar_read_literally(items, columns, monkeypatch, narrow):
    """Whole-column scans and sorted-column slices (``NARROW_FRACTION``) give the same rows."""
    monkeypatch.setattr(filters, "NARROW_FRACTION", narrow)
    rng = np.random.default_rng(1)
    for _ in range(300):
        where = random_where(rng)
        mask = parse_where(where, fields=FIELDS, time_kind="datetime").mask(columns)
        expected = np.array([reference(i, where) for i in items])
        assert np.array_equal(mask, expected), where


@pytest.mark.parametrize("op", list(COMPARE))
def test_missing_values_pass_only_ne_and_nin(columns, items, op):
    operand = ["鞋"] if op in ("in", "nin") else "鞋"
    mask = parse_where({"category": {op: operand}}, fields=FIELDS, time_kind="datetime").mask(columns)
    missing = np.array([i.attributes["category"] is None for i in items])
    assert missing.any()
    assert mask[missing].all() == (op in ("ne", "nin"))
    assert mask[missing].any() == (op in ("ne", "nin"))


def test_str_ranges_are_lexicographic_and_unknown_values_match_nothing(columns, items):
    mask = parse_where({"category": {"gte": "衬", "lt": "裤"}}, fields=FIELDS, time_kind=None).mask(columns)
    expected = [c is not None and "衬" <= c < "裤" for c in (i.attributes["category"] for i in items)]
    assert mask.tolist() == expected
    assert not parse_where({"category": "帽子"}, fields=FIELDS, time_kind=None).mask(columns).any()


def test_dates_mean_midnight_and_an_offset_is_dropped(columns, items):
    where = {"time": {"gte": "2024-03-01", "lt": "2024-06-01T00:00:00+08:00"}}
    mask = parse_where(where, fields=FIELDS, time_kind="datetime").mask(columns)
    expected = [i.time is not None and datetime(2024, 3, 1) <= i.time < datetime(2024, 6, 1) for i in items]
    assert mask.tolist() == expected and any(expected)


def test_int_times_filter_as_integers():
    items = make_items(500, int_time=True)
    columns = Columns.from_items(items)
    assert columns.time_kind == "int"
    mask = parse_where({"time": {"gt": 100, "lte": 400}}, fields=columns.fields, time_kind="int").mask(
        columns
    )
    assert mask.tolist() == [i.time is not None and 100 < i.time <= 400 for i in items]
    assert columns.time_range == (
        min(i.time for i in items if i.time is not None),
        max(i.time for i in items if i.time is not None),
    )


def test_a_field_the_columns_lack_counts_as_missing(columns):
    fields = FIELDS | {"colour": "str"}  # first put through the API: the base has no such column
    assert not parse_where({"colour": "红"}, fields=fields, time_kind=None).mask(columns).any()
    assert parse_where({"colour": {"ne": "红"}}, fields=fields, time_kind=None).mask(columns).all()


def test_an_empty_where_passes_everything(columns):
    for where in (None, {}):
        f = parse_where(where, fields=FIELDS, time_kind="datetime")
        assert not f and f.mask(columns).all()


# --- columns ---------------------------------------------------------------------------------


def test_columns_infer_kinds_and_show_rows_as_the_api_does(items):
    columns = Columns.from_items(items)
    assert columns.fields == FIELDS and columns.time_kind == "datetime"
    row = columns.row(1)
    assert row["id"] == "id1" and row["caption"] == "caption 1"
    assert row["attributes"] == items[1].attributes
    assert row["time"] == (items[1].time.isoformat() if items[1].time else None)
    assert isinstance(
        columns.row(next(i for i, it in enumerate(items) if it.attributes["stock"] is not None))[
            "attributes"
        ]["stock"],
        int,
    )
    first, last = columns.time_range
    times = [i.time for i in items if i.time is not None]
    assert (first, last) == (min(times).isoformat(), max(times).isoformat())
    assert columns.known_fields == FIELDS | {"time": "datetime"}
    assert columns.row_of("id7") == 7 and columns.row_of("nope") is None
    assert sum(columns.value_counts("category").values()) == sum(
        i.attributes["category"] is not None for i in items
    )


@pytest.mark.parametrize("mmap", [False, True])
def test_columns_survive_save_and_load(tmp_path, columns, mmap):
    columns.save(tmp_path)
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file left behind"
    back = Columns.load(tmp_path, mmap=mmap)
    assert [back.row(i) for i in range(len(back))] == [columns.row(i) for i in range(len(columns))]
    where = {"category": {"in": ["鞋", "衬衫"]}, "price": {"lt": 200}, "time": {"gte": "2024-05-01"}}
    f = parse_where(where, fields=FIELDS, time_kind="datetime")
    assert np.array_equal(f.mask(back), f.mask(columns))


def test_columns_of_no_time_and_no_fields():
    items = [SimpleNamespace(item_id="a", caption=None, image_path="/x.jpg", time=None, attributes={})]
    columns = Columns.from_items(items)
    assert columns.time_kind is None and columns.time_range is None and columns.fields == {}
    assert columns.row(0) == {
        "id": "a",
        "caption": None,
        "image_path": "/x.jpg",
        "time": None,
        "attributes": {},
    }
    assert (
        col.time_from_int(col.time_to_int(datetime(2024, 2, 29, 23, 59, 59, 5)), "datetime")
        == "2024-02-29T23:59:59.000005"
    )


# --- errors ----------------------------------------------------------------------------------

BAD = [
    ({"colour": "红"}, "colour", "unknown field"),
    ({"price": {"gte": "cheap"}}, "price", "does not fit a float field"),
    ({"stock": {"lt": True}}, "stock", "does not fit"),
    ({"category": 3}, "category", "does not fit a str field"),
    ({"category": None}, "category", "does not fit"),
    ({"price": {"about": 3}}, "price", "unknown operator 'about'"),
    ({"price": {"gte": {"lt": 3}}}, "price", "nested deeper than the grammar"),
    ({"category": {"in": [["鞋"]]}}, "category", "nested deeper than the grammar"),
    ({"category": {"in": [{"eq": "鞋"}]}}, "category", "nested deeper than the grammar"),
    ({"category": {"in": []}}, "category", "the list is empty"),
    ({"category": {"nin": []}}, "category", "the list is empty"),
    ({"category": {"in": "鞋"}}, "category", "needs a list"),
    ({"category": {"in": ["鞋"] * (MAX_IN + 1)}}, "category", f"at most {MAX_IN}"),
    ({"category": ["鞋", "衬衫"]}, "category", "needs an operator"),
    ({"price": {"lt": [1, 2]}}, "price", "only goes with 'in'"),
    ({"price": {}}, "price", "an empty condition"),
    ({"price": {"lt": float("nan")}}, "price", "does not fit"),
    ({"time": {"gte": "March 2024"}}, "time", "ISO date"),
    ({"time": {"gte": 20240301}}, "time", "ISO date"),
    ({"time": {"in": ["2024-03-01", 5]}}, "time", "ISO date"),
    (["category", "鞋"], None, "where must be an object"),
    ("category=鞋", None, "where must be an object"),
]


@pytest.mark.parametrize(("where", "field", "message"), BAD, ids=[str(b[0])[:40] for b in BAD])
def test_bad_wheres_name_the_field_and_list_the_fields(where, field, message):
    with pytest.raises(FilterError) as caught:
        parse_where(where, fields=FIELDS, time_kind="datetime")
    error = caught.value
    assert error.field == field and message in error.message
    assert error.known_fields == FIELDS | {"time": "datetime"}
    assert error.to_dict() == {"field": field, "message": error.message, "fields": error.known_fields}
    assert "price (float)" in str(error) and isinstance(error, ValueError)


def test_an_unknown_field_suggests_a_close_one():
    with pytest.raises(FilterError, match="did you mean 'price'"):
        parse_where({"prise": {"lt": 3}}, fields=FIELDS, time_kind=None)


def test_time_is_unknown_without_times_and_an_int_in_int_time_corpora():
    with pytest.raises(FilterError, match="unknown field 'time'") as caught:
        parse_where({"time": {"gte": 3}}, fields=FIELDS, time_kind=None)
    assert "time" not in caught.value.known_fields
    with pytest.raises(FilterError, match="expected an integer"):
        parse_where({"time": {"gte": "2024-03-01"}}, fields=FIELDS, time_kind="int")
    with pytest.raises(FilterError, match="expected an integer"):
        parse_where({"time": 2.5}, fields=FIELDS, time_kind="int")


@pytest.mark.parametrize("op", ["in", "nin"])
def test_long_in_lists_match_short_ones(columns, items, op):
    stocks = list(range(0, 20, 2))  # 10 values: np.isin rather than one comparison per value
    hours = [(START + timedelta(hours=h)).isoformat() for h in range(0, 24 * 365, 3)][:MAX_IN]
    for where in ({"stock": {op: stocks}}, {"category": {op: CATEGORIES[:3]}}, {"time": {op: hours}}):
        mask = parse_where(where, fields=FIELDS, time_kind="datetime").mask(columns)
        assert mask.tolist() == [reference(i, where) for i in items], where
