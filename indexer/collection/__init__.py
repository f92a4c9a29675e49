"""Searching a collection: columns, filters and a segment search (issue 18's engine).

Pure numpy + FAISS: no database, no web framework. The server loads a corpus's base segment from
its generation files, keeps the delta (items put since that generation) in memory, and answers
every search with the functions below. Nothing in a filter ever reaches SQL.

API (``from indexer.collection import ...``)::

    # columns.py: the items' searchable attributes, one numpy column per field
    Columns.from_items(items: list[CorpusItem], *, fields: dict[str, str] | None = None,
                       time_kind: str | None = None) -> Columns
    Columns.save(folder: Path) -> None          # columns.json + *.npy, atomic (common.files)
    Columns.load(folder: Path, *, mmap: bool = False) -> Columns
    Columns.row(i: int) -> dict  # {"id", "caption", "image_path", "time", "attributes": {...}}
    Columns.fields: dict[str, str]              # attribute -> "int" | "float" | "str"
    Columns.time_kind: "datetime" | "int" | None
    Columns.time_range -> (first, last) | None  # ISO strings (datetime) or ints
    Columns.known_fields -> dict[str, str]      # fields plus "time" -> time_kind, for errors/UI
    Columns.row_of(item_id: str) -> int | None  # row of an id (a dict built on first use)
    Columns.column(name) -> np.ndarray | None   # the array a filter on ``name`` compares
    Columns.sorted_column(name) -> (rows, values)  # value order, built on first filter use
    Columns.value_counts(name) -> dict[str, int]   # a str field's values (the page's select)
    len(columns)

    # filters.py: the ``where`` grammar
    parse_where(where: dict | None, *, fields: dict[str, str], time_kind: str | None) -> Filter
    Filter.mask(columns: Columns) -> np.ndarray[bool]    # (len(columns),), vectorised
    Filter.conditions: tuple[Condition, ...]; bool(filter) is False for an empty where
    FilterError(field: str | None, message: str, known_fields: dict[str, str])
        .field, .message, .known_fields, .to_dict()  # a TuwenError and a ValueError; 422 in the API

    # search.py: one base segment (+ delta, tombstones), exact filtered top-k, pages
    Segment(vectors (n, d) float32, index: faiss.Index | None, columns: Columns,
            vector_ids: list[str] | None = None)       # vector_ids: ids of vector rows, when the
                                                       # target's vectors cover only some items
    Delta(ids: list[str], vectors (m, d) float32, columns: Columns,
          hidden_base_ids: set[str] = set())           # ids: of the vector rows; columns: every
                                                       # delta item (shadows its base version)
    SegmentSearch(base: Segment | None, delta: Delta | None = None, *, planner: Planner | None = None)
        .search(query (d,), *, k: int = 10, offset: int = 0,
                where: Filter | Callable[[Columns], mask] | None = None) -> SearchPage
        .search_item(item_id: str, *, k=10, offset=0, where=None) -> SearchPage
            # "more like this": the item's own vector (delta first, then base), itself excluded;
            # raises KeyError when the item is unknown, deleted, or has no vector for this target
        .with_delta(delta: Delta | None) -> SegmentSearch   # same base, cached state reused
        .item_row(item_id) -> dict | None                  # the live version of one item
    SearchPage(results: list[Hit], next_offset: int | None, total: int, plan: str)
        # total: live items passing the filter; plan: "index" | "filtered-index" | "brute" |
        # "...+fallback" | "delta" (how the base was searched: log it, show it in /debug)
    Hit(id: str, score: float, segment: "base" | "delta", position: int, row: dict)
        # position: the item's row in that segment's columns; row: Columns.row(position)
    Planner(brute_cost=BRUTE_COST, force=None, ivf_exponent=..., hnsw_factor=..., margin=10)

The service builds one ``SegmentSearch`` per (corpus, target) when it loads a generation, and a
new one with ``with_delta`` whenever its delta changes (cheap: the base's id maps are cached on
the ``Segment``). A search is read-only: one instance may serve concurrent requests.

Where the columns come from (for ``tuwen corpus encode``, issue 19's writer):
``Columns.from_items(load_items(...), fields=info.fields, time_kind=info.time_kind)
.save(generation_dir / "columns")`` beside the vectors; the server ``Columns.load``s it, and
builds a ``Segment`` per target with ``vector_ids`` = the set's ids (``images.ids.json``).

Semantics: see each module's docstring (missing values, tie-breaking, the planner).

Memory at 1M items (bench/RESULTS.md): ~310 bytes per item for ids, captions, image paths, a str,
a float and a time (the Python strings are 3/4 of it), plus 8-12 bytes per item for each field a
filter has used (its sorted copy). The vectors stay memory-mapped; the index is FAISS's.
"""

from indexer.collection.columns import Columns
from indexer.collection.filters import Condition, Filter, FilterError, parse_where
from indexer.collection.search import Delta, Hit, Planner, SearchPage, Segment, SegmentSearch

__all__ = [
    "Columns",
    "Condition",
    "Delta",
    "Filter",
    "FilterError",
    "Hit",
    "Planner",
    "SearchPage",
    "Segment",
    "SegmentSearch",
    "parse_where",
]
