"""The competition's result files, computed from an index generation: one home for the rules.

Used by ``tuwen export`` (``indexer.export``, files on disk) and by the service's
``/api/export`` (streamed), so both produce the same bytes. Every query of the query file
appears exactly once, in file order, as one block of ``TOP_K`` rows ranked 1..TOP_K with
distinct ids from the candidate set. Search is exact (one batched matrix product per chunk of
queries), whatever index type the service uses for single queries.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from common.errors import TuwenError
from indexer import store
from indexer.index_files import LoadedIndex

TOP_K = 5
CHUNK = 4096


@dataclass(frozen=True)
class Task:
    filename: str
    header: tuple[str, str, str]
    queries: str
    candidates: str


RESULT1 = Task(
    "result1.csv",
    ("text_id", "similarity_ranking", "result_image_id"),
    store.TEXT_QUERIES,
    store.IMAGE_CANDIDATES,
)
RESULT2 = Task(
    "result2.csv",
    ("image_id", "similarity_ranking", "result_text_id"),
    store.IMAGE_QUERIES,
    store.TEXT_CANDIDATES,
)
TASKS = {t.filename: t for t in (RESULT1, RESULT2)}


def has_task(loaded: LoadedIndex, task: Task) -> bool:
    return task.queries in loaded.sets and task.candidates in loaded.sets


def top_k(loaded: LoadedIndex, task: Task, k: int = TOP_K) -> Iterator[tuple[str, list[str]]]:
    """(query id, ``k`` distinct candidate ids best first) for every query, in file order."""
    if not has_task(loaded, task):
        raise TuwenError(
            f"the index has no {task.queries} or {task.candidates}: ingest the "
            f"folder with them and run `tuwen index` to export {task.filename}"
        )
    queries, candidates = loaded.sets[task.queries], loaded.sets[task.candidates]
    if len(candidates.ids) < k:
        raise TuwenError(
            f"{task.filename} needs at least {k} {task.candidates}, the index has {len(candidates.ids)}"
        )
    for start in range(0, len(queries.ids), CHUNK):
        block = np.ascontiguousarray(queries.vectors[start : start + CHUNK], dtype=np.float32)
        _, rows = faiss.knn(block, candidates.vectors, k, metric=faiss.METRIC_INNER_PRODUCT)
        for query_id, row in zip(queries.ids[start : start + CHUNK], rows, strict=True):
            yield query_id, [candidates.ids[r] for r in row]


def csv_chunks(loaded: LoadedIndex, task: Task) -> Iterator[str]:
    """The CSV text of ``task``, a block of queries at a time (for streaming over HTTP)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(task.header)
    for n, (query_id, ids) in enumerate(top_k(loaded, task), start=1):
        writer.writerows((query_id, rank, cid) for rank, cid in enumerate(ids, start=1))
        if n % 1000 == 0:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()


def validate_result(
    path: Path, *, task: Task, query_ids: list[str], candidate_ids: list[str] | set[str], k: int = TOP_K
) -> None:
    """Raise TuwenError naming the line if ``path`` breaks any invariant of the result files."""
    candidates = set(candidate_ids)
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows or tuple(rows[0]) != task.header:
        raise TuwenError(f"{path}: line 1: header must be {','.join(task.header)}")
    body = rows[1:]
    if len(body) != k * len(query_ids):
        raise TuwenError(f"{path}: {len(body)} rows for {len(query_ids)} queries (want {k} each)")
    for q, query_id in enumerate(query_ids):
        block = body[q * k : (q + 1) * k]
        line = 2 + q * k
        if any(r[0] != query_id for r in block):
            raise TuwenError(f"{path}: line {line}: expected {k} rows of query {query_id}")
        if [r[1] for r in block] != [str(i) for i in range(1, k + 1)]:
            raise TuwenError(f"{path}: line {line}: rankings must be 1..{k}")
        ids = [r[2] for r in block]
        if len(set(ids)) != k or not set(ids) <= candidates:
            raise TuwenError(f"{path}: line {line}: results of {query_id} must be {k} distinct candidate ids")
