"""Benchmark 2: exact ``IndexFlatIP`` vs the approximate index ``tuwen index`` builds, side by side.

Synthetic normalised vectors, two kinds:

- ``clustered``: a mixture of Gaussians on the sphere (``n/1000`` centres, at least 100; each
  point is its centre plus isotropic noise of the same norm, then normalised: same-cluster pairs
  at cosine ~0.5, as semantically close CLIP embeddings are). Real embeddings are clustered like
  this, and this is the case the targets are judged on;
- ``uniform``: uniformly random directions, the worst case for any approximate index (every
  neighbour is barely closer than a random point), reported so nobody is surprised by it.

Queries are fresh draws from the same distribution, not corpus points. Recall@10 is against the
exact index's results on the same queries. Single-query latencies interleave exact and approximate
queries one by one (the CPU is shared); batch ms/query is one ``search`` call over all queries.

    .venv/bin/python bench/bench_search.py                              # 50k and 200k, ~2 min
    .venv/bin/python bench/bench_search.py --sizes 50000,1000000        # the issue's sizes, ~15 min
    .venv/bin/python bench/bench_search.py --sizes 1000000 --data clustered --factories 'auto;HNSW32,Flat'
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import faiss
import harness  # noqa: F401  (sys.path)
import numpy as np
from harness import header, median, table

from indexer.faiss_factory import build_index, search_params

DIM = 512
K = 10


def normalise(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def make_data(kind: str, n: int, nq: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` corpus vectors and ``nq`` queries from the same distribution, float32, unit norm."""
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        return (
            normalise(rng.standard_normal((n, DIM), dtype=np.float32)),
            normalise(rng.standard_normal((nq, DIM), dtype=np.float32)),
        )
    centres = normalise(rng.standard_normal((max(100, n // 1000), DIM), dtype=np.float32))

    def draw(m: int) -> np.ndarray:
        out = np.empty((m, DIM), dtype=np.float32)
        for start in range(0, m, 100_000):  # chunks keep the temporary copies small
            stop = min(m, start + 100_000)
            noise = rng.standard_normal((stop - start, DIM), dtype=np.float32) / np.sqrt(DIM)
            out[start:stop] = centres[rng.integers(0, len(centres), stop - start)] + noise
        return normalise(out)

    return draw(n), draw(nq)


def index_bytes(index: faiss.Index) -> int:
    with tempfile.NamedTemporaryFile(suffix=".faiss") as tmp:
        faiss.write_index(index, tmp.name)
        return os.path.getsize(tmp.name)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


def single_latencies(indexes: list[faiss.Index], queries: np.ndarray) -> list[list[float]]:
    """ms per single query for each index, the indexes taking turns query by query."""
    out: list[list[float]] = [[] for _ in indexes]
    for q in queries:
        q = q[None, :]
        for i, index in enumerate(indexes):
            start = time.perf_counter()
            index.search(q, K)
            out[i].append((time.perf_counter() - start) * 1000)
    return out


def p95(values: list[float]) -> float:
    return sorted(values)[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]


def run(kind: str, n: int, factories: list[str], args) -> list[list[object]]:
    t0 = time.perf_counter()
    corpus, queries = make_data(kind, n, args.queries)
    print(f"[{kind} {n}] data in {time.perf_counter() - t0:.1f}s", flush=True)

    start = time.perf_counter()
    exact = faiss.IndexFlatIP(DIM)
    exact.add(corpus)
    exact_build = time.perf_counter() - start
    start = time.perf_counter()
    _, truth = exact.search(queries, K)
    exact_batch = (time.perf_counter() - start) * 1000 / len(queries)

    built = []
    for factory in factories:
        start = time.perf_counter()
        index, used = build_index(corpus, factory=None if factory == "auto" else factory)
        seconds = time.perf_counter() - start
        print(f"[{kind} {n}] {used} built in {seconds:.1f}s {search_params(index)}", flush=True)
        built.append((used + (" (auto)" if factory == "auto" else ""), index, seconds))

    singles = single_latencies([exact] + [b[1] for b in built], queries[: args.single])
    rows = [
        [
            kind,
            f"{n:,}",
            "Flat (exact)",
            "",
            f"{exact_build:.1f}",
            f"{DIM * 4 * 1_000_000 / 2**20:,.0f}",
            f"{exact_batch:.3f}",
            f"{median(singles[0]):.2f} / {p95(singles[0]):.2f}",
            "1.000",
            "1.0x",
        ]
    ]
    for (name, index, seconds), lat in zip(built, singles[1:], strict=True):
        start = time.perf_counter()
        _, found = index.search(queries, K)
        batch = (time.perf_counter() - start) * 1000 / len(queries)
        ratios = [e / a for e, a in zip(singles[0], lat, strict=True)]
        rows.append(
            [
                kind,
                f"{n:,}",
                name,
                " ".join(f"{k}={v}" for k, v in search_params(index).items()),
                f"{seconds:.1f}",
                f"{index_bytes(index) / n * 1_000_000 / 2**20:,.0f}",
                f"{batch:.3f}",
                f"{median(lat):.2f} / {p95(lat):.2f}",
                f"{recall_at_k(found, truth):.3f}",
                f"{median(ratios):.1f}x",
            ]
        )
    del corpus
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="50000,200000", help="comma list of corpus sizes")
    ap.add_argument("--data", default="clustered,uniform", help="clustered, uniform or both")
    ap.add_argument(
        "--factories", default="auto", help="'auto' (choose_factory) or FAISS factory strings, separated by ;"
    )
    ap.add_argument("--queries", type=int, default=1000, help="queries for recall and batch timing")
    ap.add_argument("--single", type=int, default=100, help="queries timed one at a time")
    args = ap.parse_args()
    factories = args.factories.split(";")
    rows = []
    for kind in args.data.split(","):
        for n in (int(s) for s in args.sizes.split(",")):
            rows += run(kind, n, factories, args)
    print()
    print(header("Search: exact Flat vs the index tuwen index builds, 512-d, top-10"))
    print(
        table(
            [
                "data",
                "n",
                "index",
                "search params",
                "build s",
                "MiB per 1M vectors",
                "batch ms/query",
                "single ms p50 / p95",
                "recall@10",
                "single speed-up",
            ],
            rows,
        )
    )
    print(
        "\nbuild s: add (+ train on a sample + tune the search parameter for the index's recall target); "
        "memory: size of the serialised index scaled to 1M vectors; single speed-up: median over "
        "queries of exact ms / approximate ms, timed in turns."
    )


if __name__ == "__main__":
    main()
