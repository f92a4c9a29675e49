"""Benchmark 4: ``tuwen export`` (``indexer.export.export_results``) on pre-computed vectors.

An index generation with 50,000 image and 50,000 text candidates and 5,000 queries of each kind
is written directly (synthetic clustered 512-d vectors; encoding is not part of this benchmark),
then both result files are exported and validated as ``tuwen export`` does. Side by side, in the
same run: the per-query Python loop (one matrix-vector product and a partial sort per query) that
batched search replaces, timed on ``--loop-queries`` queries and scaled to the full count.

    .venv/bin/python bench/bench_export.py                      # ~1 min
    .venv/bin/python bench/bench_export.py --queries 20000 --candidates 200000
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import harness  # noqa: F401  (sys.path)
import numpy as np
from bench_search import make_data
from harness import header, table

from common.settings import Settings
from indexer import index_files
from indexer.export import write_result
from indexer.faiss_factory import build_index
from indexer.index_files import load_current
from indexer.results import RESULT1, RESULT2, TOP_K


def write_generation(index_dir: Path, n_candidates: int, n_queries: int) -> dict[str, np.ndarray]:
    """A published generation holding all four vector sets; returns the vectors by set name."""
    tmp = index_files.new_generation_dir(index_dir)
    sets = {}
    for seed, (candidates, queries) in enumerate(
        [("image_candidates", "text_queries"), ("text_candidates", "image_queries")]
    ):
        corpus, qs = make_data("clustered", n_candidates, n_queries, seed=seed)
        prefix = "img" if candidates.startswith("image") else "txt"
        index_files.save_vectors(
            tmp, candidates, [f"{prefix}{i:06d}.jpg" for i in range(n_candidates)], corpus
        )
        index_files.save_faiss(tmp, candidates, build_index(corpus, factory="Flat")[0])
        index_files.save_vectors(tmp, queries, [f"q{i:06d}" for i in range(n_queries)], qs)
        sets[candidates], sets[queries] = corpus, qs
    manifest = {"model_spec": "synthetic", "model_id": "synthetic", "arch": "none", "embed_dim": 512}
    index_files.publish_generation(index_dir, tmp, manifest)
    return sets


def loop_top_k(queries: np.ndarray, candidates: np.ndarray) -> list[list[int]]:
    """What batched search replaces: one query at a time."""
    out = []
    for q in queries:
        scores = candidates @ q
        top = np.argpartition(-scores, TOP_K)[:TOP_K]
        out.append(top[np.argsort(-scores[top])].tolist())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=5000)
    ap.add_argument("--candidates", type=int, default=50000)
    ap.add_argument("--loop-queries", type=int, default=500, help="queries the per-query loop is timed on")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp) / "home")
        sets = write_generation(settings.index_dir, args.candidates, args.queries)
        out = Path(tmp) / "results"

        start = time.perf_counter()
        loaded = load_current(settings.index_dir)
        load_s = time.perf_counter() - start
        export_s = {}
        for task in (RESULT1, RESULT2):  # what export_results does, timed file by file
            start = time.perf_counter()
            write_result(loaded, task, out)
            export_s[task.filename] = time.perf_counter() - start

        rows, agree = [], []
        for task in (RESULT1, RESULT2):
            queries, candidates = sets[task.queries][: args.loop_queries], sets[task.candidates]
            start = time.perf_counter()
            looped = loop_top_k(queries, candidates)
            loop_s = (time.perf_counter() - start) * args.queries / len(queries)
            with open(out / task.filename, encoding="utf-8", newline="") as fh:
                body = list(csv.reader(fh))[1:]
            exported = [
                [int(r[2][3:9]) for r in body[i * TOP_K : (i + 1) * TOP_K]] for i in range(len(queries))
            ]
            agree.append(np.mean([a == b for a, b in zip(exported, looped, strict=True)]))
            ours = export_s[task.filename]
            rows.append(
                [
                    task.filename,
                    f"{args.queries:,} x {args.candidates:,}",
                    f"{loop_s:.1f}",
                    f"{ours:.2f}",
                    f"{ours + load_s:.2f}",
                    f"{loop_s / ours:.0f}x",
                ]
            )
    print(header(f"Export: {args.queries:,} queries x {args.candidates:,} candidates per task, 512-d"))
    print(
        table(
            [
                "file",
                "queries x candidates",
                "per-query loop s (scaled)",
                "export s (search + write + validate)",
                "with loading the generation",
                "speed-up",
            ],
            rows,
        )
    )
    print(
        f"\nper-query loop: numpy matrix-vector product + argpartition per query, timed on "
        f"{args.loop_queries} queries and scaled to {args.queries:,}; loading the generation "
        f"({load_s:.2f} s) is shared by both files. Identical top-5 lists on the timed queries: "
        f"{', '.join(f'{a:.1%}' for a in agree)}."
    )


if __name__ == "__main__":
    main()
