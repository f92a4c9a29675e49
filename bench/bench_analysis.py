"""Time and peak memory of the analysis studies on a large synthetic corpus (512-d embeddings).

    .venv/bin/python bench/bench_analysis.py                       # clusters on 50,000 items
    .venv/bin/python bench/bench_analysis.py --n 5000 --configs umap-kmeans

Each configuration runs in a fresh process (its peak RSS is its own: imports, data, the study) on
the same seeded corpus: ``--clusters`` planted directions in ``--dim`` dimensions, a caption per item
naming its cluster, a date over twelve months. The vectors are made in memory as the store hands them
over (``CorpusData``), so the table times the study, not the store. Add a study with one entry in
``STUDIES`` (a name → function running it on ``(data, out)``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time

from harness import header, table

CONFIGS = {  # name: ClusterOptions fields
    "umap-kmeans": {"reduce": "umap", "method": "kmeans", "k": "auto"},
    "none-kmeans": {"reduce": "none", "method": "kmeans", "k": "auto"},
    "umap-hdbscan": {"reduce": "umap", "method": "hdbscan"},
}


def synthetic(*, n: int, dim: int, clusters: int, seed: int = 0):
    import numpy as np

    from analysis.data import CorpusData

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    labels = rng.integers(0, clusters, size=n)
    vectors = centres[labels] + 1.5 * rng.normal(size=(n, dim))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    months = rng.integers(1, 13, size=n)
    return CorpusData(
        name="bench",
        ids=[f"b{i}" for i in range(n)],
        captions=[f"风格{c}的穿搭 #风格{c} #日常" for c in labels],
        image_paths=[None] * n,
        times=[f"2025-{m:02d}-15" for m in months],
        image_vectors=vectors,
        image_mask=np.ones(n, dtype=bool),
        model_id="synthetic",
    ), labels


def run_clusters_once(config: str, *, n: int, dim: int, clusters: int) -> dict:
    from sklearn.metrics import adjusted_rand_score

    from analysis.clusters import ClusterOptions, cluster_corpus
    from analysis.clusters_report import write_report

    data, truth = synthetic(n=n, dim=dim, clusters=clusters)
    start = time.perf_counter()
    result = cluster_corpus(data, options=ClusterOptions(**CONFIGS[config]))
    numbers = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        write_report(data, result, out=out)
    done = time.perf_counter()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "config": config,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "k": result.k,
        "ari": float(adjusted_rand_score(truth[result.rows], result.labels)),
        "cluster_s": numbers - start,
        "report_s": done - numbers,
        "peak_mb": usage.ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--clusters", type=int, default=20)
    parser.add_argument("--configs", default="umap-kmeans,none-kmeans", help=f"of {', '.join(CONFIGS)}")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # the child process's config
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_clusters_once(args.one, n=args.n, dim=args.dim, clusters=args.clusters)))
        return
    rows = []
    for config in args.configs.split(","):
        child = [sys.executable, __file__, "--one", config, "--n", str(args.n), "--dim", str(args.dim)]
        child += ["--clusters", str(args.clusters)]
        r = json.loads(
            subprocess.run(child, check=True, capture_output=True, text=True).stdout.splitlines()[-1]
        )
        print(json.dumps(r), file=sys.stderr, flush=True)  # each configuration as it ends
        rows.append(
            [
                f"clusters {r['config']}",
                f"{args.n:,} × {args.dim}",
                r["k"],
                f"{r['ari']:.3f}",
                f"{r['cluster_s']:.1f}",
                f"{r['report_s']:.1f}",
                f"{r['cpu_s']:.0f}",
                f"{r['peak_mb']:.0f}",
            ]
        )
    columns = [
        "study",
        "items × dim",
        "k chosen",
        "ARI vs planted",
        "numbers s",
        "figures s",
        "CPU s (all)",
        "peak RSS MB",
    ]
    print(
        header(f"analyze clusters on {args.n:,} synthetic {args.dim}-d embeddings ({args.clusters} planted)")
    )
    print(table(columns, rows))


if __name__ == "__main__":
    main()
