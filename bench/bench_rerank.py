"""Benchmark: re-ranking (``indexer.rerank``) on an under-trained model's held-out split, and its
cost on a competition-sized similarity matrix.

1. Gain: the demo corpus (``generate_demo_corpus``, seed 0), ``tiny`` trained from scratch for
   ``--epochs`` (default 4 of the demo's tuned 25: deliberately under-trained, so plain R@1 is well
   below the ceiling), then ``tuwen eval --rerank none,dual-softmax,qb-norm,one-to-one`` on its
   held-out split (``training.rerank_eval.rerank_table``, the same code).
2. Cost: seconds for each method on 5,000 × 50,000 synthetic cosine similarities (512-d unit
   vectors, a QB-Norm bank of 5,000), the competition's shape; the bank statistics timed apart
   (computed once per generation).

Prints both tables as Markdown and the machine (CPU model, AVX-512/AMX flags, load average).
Run: ``PYTHONPATH=. python bench/bench_rerank.py [--epochs 4] [--n-train 1500] [--skip-cost]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from common.settings import Settings
from indexer import rerank
from indexer.ingest import ingest
from training.rerank_eval import format_table, rerank_table
from training.train import train
from tuwen.demo.corpus import generate_demo_corpus

METHODS = list(rerank.METHODS)


def machine() -> str:
    info = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    wanted = [f for f in flags if f.startswith(("avx512", "amx")) or f in ("avx2", "fma")]
    model = fields.get("Model name", "?").strip()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{model}, {os.cpu_count()} cores; flags {' '.join(wanted)}; load average {load}"


def gain(epochs: int, n_train: int, seed: int) -> list[dict]:
    root = Path(tempfile.mkdtemp(prefix="bench-rerank-"))
    generate_demo_corpus(root / "corpus", seed=seed, n_train=n_train, n_text_queries=10, n_image_queries=10)
    settings = Settings(home=root / "home")
    ingest(root=root / "corpus", settings=settings, progress=False, echo=lambda _: None)
    run = train(
        settings=settings, model="tiny", out=root / "run", epochs=epochs, batch_size=64, lr=2e-3,
        warmup=50, val_fraction=0.1, seed=0, progress=False, echo=print,
        workers=1, threads=1,  # as first measured on 2 cores: threads change the float sums, so the run
    )  # fmt: skip
    return rerank_table(settings=settings, models=[str(run.best_path)], methods=METHODS)


def markdown_gain(table: list[dict]) -> str:
    plain = next(r for r in table if r["method"] == "none")
    lines = [
        "| method | t2i R@1 | t2i R@5 | i2t R@1 | i2t R@5 | t2i R@1 gain | i2t R@1 gain |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in table:
        rel = {
            d: (r[d]["r1"] - plain[d]["r1"]) / plain[d]["r1"] * 100 if plain[d]["r1"] else float("nan")
            for d in ("t2i", "i2t")
        }
        lines.append(
            f"| {r['method']} | {r['t2i']['r1']:.1f} | {r['t2i']['r5']:.1f} | {r['i2t']['r1']:.1f} | "
            f"{r['i2t']['r5']:.1f} | {rel['t2i']:+.0f}% | {rel['i2t']:+.0f}% |"
        )
    return "\n".join(lines)


def cost(n_queries: int = 5000, n_candidates: int = 50000, d: int = 512, n_bank: int = 5000):
    """(step, seconds) of each step, yielded as it finishes."""
    rng = np.random.default_rng(0)

    def unit(n):
        v = rng.standard_normal((n, d), dtype=np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    queries, candidates, bank = unit(n_queries), unit(n_candidates), unit(n_bank)
    tick = time.perf_counter()
    scores = queries @ candidates.T
    yield "similarities (matrix product)", time.perf_counter() - tick
    tick = time.perf_counter()
    stats = rerank.bank_stats(bank, candidates)
    yield "qb-norm bank statistics (once per generation)", time.perf_counter() - tick
    for method in METHODS:
        tick = time.perf_counter()
        rerank.top_k(rerank.rerank(scores, method, stats=stats), 5)
        yield f"{method} + top 5", time.perf_counter() - tick


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--n-train", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-gain", action="store_true")
    parser.add_argument("--skip-cost", action="store_true")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    if not args.skip_gain:
        table = gain(args.epochs, args.n_train, args.seed)
        print(format_table(table))
        print(markdown_gain(table))
    if not args.skip_cost:
        print("| step | seconds (5,000 × 50,000) |\n|---|---|")
        for name, seconds in cost():
            print(f"| {name} | {seconds:.1f} |", flush=True)
        print(f"machine after: {machine()}")


if __name__ == "__main__":
    main()
