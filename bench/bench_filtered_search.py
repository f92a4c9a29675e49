"""Filtered collection search at 1M x 512: the search step alone (filter + vectors, no model).

    .venv/bin/python bench/bench_filtered_search.py                 # 1M x 512, cached under /tmp
    .venv/bin/python bench/bench_filtered_search.py --n 100000 --queries 50 --write

Data: seeded clustered unit vectors (``bench_search.make_data``: a mixture of Gaussians on the
sphere, like CLIP embeddings; uniform random directions defeat any IVF, and ``faiss_factory``
then falls back to exact search) and 1M items' attributes in memory: a str ``category`` (100
values), a float ``price`` (uniform 0..1000) and a datetime ``time`` (uniform over 2024),
independent of the vectors. Filters at selectivities 100%, 10%, 1%, 0.1%, each timed with
``parse_where`` + ``SegmentSearch.search`` (k=10), beside the unfiltered search of the same index.
Each filter is also timed on the two forced paths (brute force over the passing rows, and the
filtered index search) to calibrate the planner's ``BRUTE_COST``.

The index (``faiss_factory.build_index``, the product's automatic choice) and the vectors are
built once and cached under ``--cache``; the build time is recorded there and reported.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import faiss
import numpy as np
from bench_search import make_data
from harness import ROOT, command, cpu_name, table

from indexer.collection.columns import Columns
from indexer.collection.filters import parse_where
from indexer.collection.search import Planner, Segment, SegmentSearch, scan_estimate
from indexer.faiss_factory import build_index, search_params

K = 10
CATEGORIES = [f"类{i:03d}" for i in range(100)]
FILTERS = {  # selectivity -> where
    "100%": {"time": {"gte": "2024-01-01"}},
    "10%": {"category": {"in": CATEGORIES[:10]}},
    "1%": {"price": {"gte": 500, "lt": 510}},
    "0.1%": {"category": CATEGORIES[7], "price": {"lt": 100}},
}


def cached_data(args) -> tuple[np.ndarray, np.ndarray, Path]:
    folder = Path(args.cache) / f"n{args.n}-d{args.dim}-seed{args.seed}"
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "vectors.npy").is_file():
        vectors, queries = make_data("clustered", args.n, args.queries_max, seed=args.seed)
        np.save(folder / "queries.npy", queries)
        np.save(folder / "vectors.npy", vectors)
        del vectors
    vectors = np.load(folder / "vectors.npy", mmap_mode="r")
    queries = np.load(folder / "queries.npy")
    return vectors, queries, folder


def cached_index(folder: Path, vectors: np.ndarray) -> tuple[faiss.Index, dict]:
    path, info_path = folder / "auto.faiss", folder / "auto.json"
    if not path.is_file():
        start = time.perf_counter()
        index, factory = build_index(np.asarray(vectors))
        info = {"factory": factory, "build_s": time.perf_counter() - start, "params": search_params(index)}
        faiss.write_index(index, str(path))
        info_path.write_text(json.dumps(info))
        print(f"built {factory} in {info['build_s']:.0f} s", flush=True)
    return faiss.read_index(str(path)), json.loads(info_path.read_text())


def make_items(n: int, seed: int) -> list[SimpleNamespace]:
    rng = np.random.default_rng(seed + 1)
    cats = rng.integers(0, len(CATEGORIES), n)
    prices = np.round(rng.random(n) * 1000, 2)
    seconds = rng.integers(0, 366 * 86400, n)
    start = datetime(2024, 1, 1)
    return [
        SimpleNamespace(
            item_id=f"item-{i:07d}",
            caption=f"商品 {i} 的描述",
            image_path=f"/data/photos/{i:07d}.jpg",
            time=start + timedelta(seconds=int(seconds[i])),
            attributes={"category": CATEGORIES[cats[i]], "price": float(prices[i])},
        )
        for i in range(n)
    ]


def measured_columns(n: int, seed: int) -> tuple[Columns, dict]:
    """The columns of ``n`` items and their memory: arrays, list slots, strings, the id index.

    Counted with ``nbytes`` and ``sys.getsizeof`` (tracemalloc would slow ``from_items`` 50x).
    """
    items = make_items(n, seed)
    start = time.perf_counter()
    columns = Columns.from_items(items, fields={"category": "str", "price": "float"}, time_kind="datetime")
    built_s = time.perf_counter() - start
    del items
    gc.collect()
    lists = (columns.ids, columns.captions, columns.image_paths)
    columns.row_of(columns.ids[0])  # the id -> row dict, built on first use (more like this, items)
    # the lists share the items' strings here (Columns.load makes its own): count them too
    strings = sum(sys.getsizeof(s) for values in lists for s in values if s is not None)
    vocab = sum(sys.getsizeof(v) for values in columns.vocab.values() for v in values)
    memory = {
        "arrays": columns.nbytes(),
        "lists": sum(sys.getsizeof(values) for values in lists) + vocab,
        "dict": sys.getsizeof(columns._row_of),
        "strings": strings,
        "from_items_s": built_s,
    }
    memory["total"] = memory["arrays"] + memory["lists"] + memory["dict"] + memory["strings"]
    return columns, memory


def timed(fn, queries: np.ndarray) -> tuple[list[float], list]:
    out, ms = [], []
    for q in queries:
        start = time.perf_counter()
        out.append(fn(q))
        ms.append((time.perf_counter() - start) * 1000)
    return ms, out


def pct(values: list[float], p: float) -> float:
    return float(np.percentile(values, p))


def truth(vectors: np.ndarray, mask: np.ndarray | None, q: np.ndarray) -> set[int]:
    rows = np.arange(len(vectors)) if mask is None else np.flatnonzero(mask)
    scores = np.concatenate(
        [
            np.einsum("ij,j->i", np.asarray(vectors[rows[i : i + 65536]]), q)
            for i in range(0, len(rows), 65536)
        ]
    )
    return set(rows[np.argsort(-scores, kind="stable")[:K]].tolist())


def recall(pages, truths) -> float:
    got = [
        len({int(h.id[5:]) for h in p.results} & t) / max(min(K, len(t)), 1)
        for p, t in zip(pages, truths, strict=False)
    ]
    return float(np.mean(got))


def searching(searcher: SegmentSearch, columns: Columns, where: dict | None):
    """One timed search step: parse the where, evaluate it, search the vectors."""

    def step(q: np.ndarray):
        f = parse_where(where, fields=columns.fields, time_kind=columns.time_kind) if where else None
        return searcher.search(q, k=K, where=f)

    return step


def bench_index(name, segment, columns, queries, args) -> list[list[object]]:
    rows = []
    planned = SegmentSearch(segment)
    forced = [SegmentSearch(segment, planner=Planner(force=path)) for path in ("brute", "index")]
    for label, where in [("none", None), *FILTERS.items()]:
        mask = (
            parse_where(where, fields=columns.fields, time_kind=columns.time_kind).mask(columns)
            if where
            else None
        )
        passing = len(columns) if mask is None else int(mask.sum())
        truths = [truth(segment.vectors, mask, q) for q in queries[: args.recall_queries]]
        ms, pages = timed(searching(planned, columns, where), queries)
        paths = []
        for searcher in forced:
            if segment.exact or where is None:  # one path only: nothing to compare
                paths.append("")
                continue
            path_ms, path_pages = timed(searching(searcher, columns, where), queries[: args.forced])
            shown = f"{pct(path_ms, 50):.2f}"
            if searcher is forced[1]:  # the filtered index's own recall, whatever the planner chose
                shown += f" (recall {recall(path_pages[: len(truths)], truths):.3f})"
            paths.append(shown)
        plans = "/".join(sorted({p.plan for p in pages}))
        rows.append([
            name, label, f"{passing:,}", f"{pct(ms, 50):.2f}", f"{pct(ms, 95):.2f}", *paths, plans,
            f"{recall(pages[: len(truths)], truths):.3f}",
        ])  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def cpu_flags() -> str:
    flags = Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0].split()
    wanted = [f for f in flags if f.startswith(("avx2", "avx512", "amx", "fma"))]
    return " ".join(wanted)


def lscpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if "Model name" in line)
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return cpu_name()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200, help="timed queries per row")
    parser.add_argument("--forced", type=int, default=50, help="queries timed on each forced path")
    parser.add_argument("--recall-queries", type=int, default=50)
    parser.add_argument(
        "--flat-queries", type=int, default=20, help="queries for the exact Flat rows (0: none)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default="/tmp/tuwen-bench-filtered")
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--write", action="store_true", help="append the table to bench/RESULTS.md")
    args = parser.parse_args()
    args.queries_max = max(args.queries, args.flat_queries, 200)
    vectors, queries, folder = cached_data(args)
    index, info = cached_index(folder, vectors)
    if args.build_only:
        return
    faiss.omp_set_num_threads(1)  # one query at a time: threads only add overhead at this size
    columns, memory = measured_columns(args.n, args.seed)
    rows = bench_index(
        f"{info['factory']} (auto)", Segment(vectors, index, columns), columns, queries[: args.queries], args
    )
    if args.flat_queries:
        flat = Segment(vectors, None, columns)
        rows += bench_index("exact (no index)", flat, columns, queries[: args.flat_queries], args)
    report(args, info, memory, rows, index)


def report(args, info, memory, rows, index) -> None:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    n = args.n
    scans = [scan_estimate(index, s, K + 10, Planner()) for s in (0.1, 0.01, 0.001)]
    machine = (
        f"{time.strftime('%Y-%m-%d %H:%M')}, {lscpu_model()}, {len(os.sched_getaffinity(0))} cores "
        f"(load average {load} at the end; above ~2 other jobs share the cores: the times are upper bounds), "
        f"flags: {cpu_flags()}; faiss {faiss.__version__}, 1 OpenMP thread per query"
    )
    per_item = {key: memory[key] / n for key in ("total", "arrays", "lists", "dict", "strings")}
    columns = (
        f"Columns of {n:,} items (ids, captions, image paths, category, price, time): "
        f"{per_item['total']:.0f} bytes per item ({memory['total'] / 2**20:,.0f} MiB): numpy arrays "
        f"{per_item['arrays']:.0f} B, list slots {per_item['lists']:.0f} B, "
        f"strings {per_item['strings']:.0f} B, id index {per_item['dict']:.0f} B; "
        f"built by `Columns.from_items` in {memory['from_items_s']:.1f} s."
    )
    header = [
        "index",
        "filter",
        "passing",
        "p50 ms",
        "p95 ms",
        "brute p50",
        "filtered-index p50",
        "plan",
        "recall@10",
    ]
    text = "\n".join([
        f"### Filtered search, {n:,} x {args.dim}, top-{K}, the search step (filter + vectors, no model)",
        "",
        f"`{command()}`",
        "",
        machine,
        "",
        f"Index: `{info['factory']}` ({info['params']}), built once in {info['build_s']:.0f} s "
        "(train on a sample + add + tune, `faiss_factory.build_index`).",
        columns,
        "Planner scan estimates (codes compared by the filtered index) at 10% / 1% / 0.1%: "
        + " / ".join(f"{s:,.0f}" for s in scans) + ".",
        "",
        table(header, rows),
        "",
    ])  # fmt: skip
    print(text)
    if args.write:
        with open(ROOT / "bench" / "RESULTS.md", "a", encoding="utf-8") as fh:
            fh.write("\n" + text + "\n")


if __name__ == "__main__":
    main()
