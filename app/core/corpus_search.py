"""Collection search as plain functions (keyword-only arguments); the routes only translate HTTP.

Errors are exceptions the routes map to statuses: ``UnknownCorpus`` / ``UnknownItem`` 404,
``NotSearchable`` 409 (not encoded, or its items changed since: the message names the command),
``FilterError`` 422 (``indexer.collection``: the field, a message and the corpus's fields; also
raised here for ``k``, ``offset``, ``target``, ``item`` and ``rerank`` so every bad input reads
the same).

``rerank`` (issue 21): ``none`` or ``qb-norm`` (``indexer.collection.search``: the plain ranking,
filter, tombstones and put items included, re-ranked ``RERANK_DEPTH`` deep, then paged). QB-Norm's
bank is of the other modality than the target (captions for the images, images for the captions),
so it answers a text query against the images and an image query against the captions; any other
pairing ("more like this" included) is a 422 naming ``rerank``. A generation encoded without the
statistics is a 409 naming the command that rebuilds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from app.core.corpora import TARGETS, Catalog, ServedCorpus
from common.errors import TuwenError
from indexer.collection.filters import Filter, FilterError, parse_where
from indexer.collection.search import RERANKS, SearchPage, SegmentSearch

MAX_K = 100
MAX_OFFSET = 10_000
MAX_ITEM_ID = 255  # the store's column width
FEW_VALUES = 50  # a str field with at most this many values is listed with them (a select in the page)


class UnknownCorpus(TuwenError):
    pass


class UnknownItem(TuwenError):
    pass


class NotSearchable(TuwenError):
    pass


def _not_encoded(name: str) -> str:
    return f"corpus {name} is not encoded: run `tuwen corpus encode {name} --model SPEC`"


def resolve(
    *, name: str, served: ServedCorpus | None, load_error: str | None, catalog: Catalog, competition: dict
) -> ServedCorpus:
    """The corpus a request searches, or why not (404 unknown, 409 not encoded / stale)."""
    if name in competition:
        return competition[name]
    if served is None:
        if load_error:
            raise NotSearchable(load_error)
        if name in catalog.entries:
            raise NotSearchable(_not_encoded(name))
        known = sorted(set(catalog.entries) | set(competition))
        raise UnknownCorpus(f"unknown corpus {name[:100]!r}; known: {', '.join(known) or 'none'}")
    stale = catalog.stale.get(name)
    if stale:
        raise NotSearchable(stale)
    return served


@dataclass(frozen=True)
class Plan:
    """A checked search: the segment search of one target and the parsed filter."""

    search: SegmentSearch
    target: str
    where: Filter
    k: int
    offset: int
    rerank: str = "none"


def plan(
    *,
    corpus: ServedCorpus,
    target: str | None,
    where: Any,
    k: int,
    offset: int,
    default: str = "image",
    rerank: str | None = "none",
    query: str = "text",
) -> Plan:
    """Check ``target``, ``k``, ``offset``, ``where`` and ``rerank`` (for a ``query`` of kind
    "text", "image" or "item") against the corpus: FilterError if wrong, NotSearchable (409) for
    qb-norm on a generation without its statistics."""
    known = corpus.columns.known_fields
    searches = corpus.searches  # read once: a delta swap mid-request does not mix
    if not 1 <= k <= MAX_K:
        raise FilterError("k", f"k must be 1..{MAX_K}, not {k}", known)
    if not 0 <= offset <= MAX_OFFSET:
        raise FilterError("offset", f"offset must be 0..{MAX_OFFSET}, not {offset}", known)
    if target is None:
        target = default if default in searches else next(iter(searches), default)
    if target not in TARGETS:
        raise FilterError("target", f"target must be one of {', '.join(TARGETS)}, not {target!r}", known)
    if target not in searches:
        has = ", ".join(searches) or "none"
        raise FilterError("target", f"corpus {corpus.corpus} has no {target} vectors (targets: {has})", known)
    flt = parse_where(where, fields=corpus.columns.fields, time_kind=corpus.columns.time_kind)
    rerank = check_rerank(corpus=corpus, search=searches[target], target=target, rerank=rerank, query=query)
    return Plan(searches[target], target, flt, k, offset, rerank)


def check_rerank(
    *, corpus: ServedCorpus, search: SegmentSearch, target: str, rerank: str | None, query: str
) -> str:
    """``rerank`` checked for a ``query`` ("text", "image", "item") against ``target``."""
    known = corpus.columns.known_fields
    rerank = "none" if rerank is None else rerank
    if rerank not in RERANKS:
        raise FilterError("rerank", f"rerank must be one of {', '.join(RERANKS)}, not {rerank!r}", known)
    if rerank == "none":
        return rerank
    if query == "item" or query == target:
        bank, what = ("captions", "images") if target == "image" else ("images", "captions")
        asked = {"item": "more like this", "image": "an image query"}.get(query, "a text query")
        raise FilterError(
            "rerank",
            f"rerank {rerank} answers a text query against the images or an image query against the "
            f"captions (the query bank of the {what} is of {bank}), not {asked} against the {what}",
            known,
        )
    if not search.can_rerank:
        command = "tuwen index" if corpus.builtin else f"tuwen corpus encode {corpus.corpus}"
        without = " or without 附件1's training pairs" if corpus.builtin else ""
        raise NotSearchable(
            f"the generation {corpus.name} of {corpus.corpus} has no QB-Norm statistics (built before "
            f"the service could re-rank, or with --bank-size 0{without}): rebuild it with `{command}`"
        )
    return rerank


def search_vector(*, plan: Plan, vector: np.ndarray) -> SearchPage:
    """The ``k`` best items passing the filter from ``offset`` on, for a query vector (blocking)."""
    return plan.search.search(
        np.asarray(vector, dtype=np.float32).reshape(-1),
        k=plan.k,
        offset=plan.offset,
        where=plan.where or None,
        rerank=plan.rerank,
    )


def search_item(*, plan: Plan, corpus: ServedCorpus, item: str) -> SearchPage:
    """ "More like this": the items closest to ``item``'s own vector, itself left out (blocking)."""
    check_item_id(item, corpus)
    try:
        return plan.search.search_item(item, k=plan.k, offset=plan.offset, where=plan.where or None)
    except KeyError:
        if item_row(corpus=corpus, item=item) is None:
            raise UnknownItem(f"corpus {corpus.corpus} has no item {item[:100]!r}") from None
        raise FilterError(
            "item", f"item {item[:100]!r} has no {plan.target} vector", corpus.columns.known_fields
        ) from None


def check_item_id(item: str, corpus: ServedCorpus) -> None:
    if not item or len(item) > MAX_ITEM_ID or "\x00" in item:
        raise FilterError("item", f"an item id is 1..{MAX_ITEM_ID} characters", corpus.columns.known_fields)


def item_row(*, corpus: ServedCorpus, item: str) -> dict | None:
    """The live version of one item (its delta version when it has one), or None."""
    for search in corpus.searches.values():
        row = search.item_row(item)
        if row is not None:
            return row
    if corpus.searches:  # each search knows the live version: none means unknown or deleted (issue 19)
        return None
    i = corpus.columns.row_of(item)
    return None if i is None else corpus.columns.row(i)


def describe(*, corpus: ServedCorpus, stale: str | None = None) -> dict:
    """What ``GET /api/corpora`` says of a served corpus."""
    columns = corpus.columns
    return {
        "name": corpus.corpus,
        "rows": len(columns),
        "encoded": stale is None,
        "stale": stale,
        "model_id": corpus.model_id,
        "generation": corpus.name,
        "builtin": corpus.builtin,
        "targets": list(corpus.searches),
        "fields": columns.fields,
        "time_kind": columns.time_kind,
        "time_range": list(columns.time_range) if columns.time_range else None,
        "values": {
            name: list(columns.vocab[name])
            for name, kind in columns.fields.items()
            if kind == "str" and len(columns.vocab[name]) <= FEW_VALUES
        },
        "counts": {target: int(segment.vectors.shape[0]) for target, segment in corpus.segments.items()},
    }


def listing(
    *, served: dict[str, tuple[ServedCorpus | None, str | None]], catalog: Catalog, competition: dict
) -> list[dict]:
    """Every corpus: the served ones, those added but not encoded (or failing), the competition's."""
    out = []
    for name in sorted(set(served) | set(catalog.entries)):
        corpus, error = served.get(name, (None, None))
        if corpus is not None:
            out.append(describe(corpus=corpus, stale=catalog.stale.get(name)))
            continue
        entry = catalog.entries.get(name)
        out.append(
            {
                "name": name,
                "rows": entry.rows if entry else 0,
                "encoded": False,
                "stale": error or _not_encoded(name),
                "model_id": None,
                "fields": entry.fields if entry else {},
                "time_kind": entry.time_kind if entry else None,
            }
        )
    out += [describe(corpus=c) for _, c in sorted(competition.items())]
    return out
