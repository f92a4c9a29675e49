"""Time and peak memory of ``analyze trend`` and ``analyze classify`` on a synthetic corpus.

    .venv/bin/python bench/bench_trend_classify.py                 # 10,000 items, 512-d, both studies
    .venv/bin/python bench/bench_trend_classify.py --n 2000 --studies classify

Each study runs in a fresh process (its peak RSS is its own: imports, data, the study) on the same
seeded corpus, made in memory as the store hands it over (``CorpusData``), so the table times the
study, not the store: ``--n`` items over ``--days`` integer days, image and caption vectors with a
planted direction, captions naming one of six styles, a 0/1 ``label`` that both vectors lean on
(what is timed is the same whatever the labels are). Defaults are the commands'
own (trend: 4 feature sets, each with a logistic regression (C by inner CV) and LSTM/Transformer ×
5 seeds tuned on a 2 × 2 grid, at most 100 epochs with early stopping; classify: 5 folds, every set
with logistic regression, boosted trees and an MLP, early and late fusion, plus attention with
``--fusion``). On shared cores the times are upper bounds (the header gives the load average).
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

STYLES = ["连衣裙", "衬衫", "T恤", "裤子", "半身裙", "帽子"]


def synthetic(*, n: int, dim: int, days: int, seed: int = 0):
    import numpy as np

    from analysis.data import CorpusData

    rng = np.random.default_rng(seed)
    day = np.sort(rng.integers(0, days, size=n))
    style = rng.integers(0, len(STYLES), size=n)
    signal = rng.normal(size=(2, dim))
    label = (rng.random(n) < 0.5).astype(int)

    def vectors(direction):
        v = rng.normal(size=(n, dim)) + 0.5 * np.outer(2 * label - 1, direction)
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)

    return CorpusData(
        name="bench",
        ids=[f"b{i}" for i in range(n)],
        captions=[f"今天的{STYLES[s]}穿搭，第{d}天" for s, d in zip(style, day, strict=True)],
        image_paths=[None] * n,
        times=[int(d) for d in day],
        attributes={"label": label.tolist()},
        image_vectors=vectors(signal[0]),
        image_mask=np.ones(n, dtype=bool),
        text_vectors=vectors(signal[1]),
        text_mask=np.ones(n, dtype=bool),
        model_id="synthetic",
    )


def run_once(study: str, *, n: int, dim: int, days: int, fusion: str) -> dict:
    """One study on the synthetic corpus in this process: seconds and peak RSS."""
    data = synthetic(n=n, dim=dim, days=days)
    quiet = lambda _: None  # noqa: E731
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        cpu = time.process_time()
        if study == "trend":
            from analysis.options import TrendOptions
            from analysis.trend import run_trend

            run_trend(data, TrendOptions(label="label"), out=out, say=quiet)
        else:
            from analysis.classify import run_classify
            from analysis.options import FUSIONS, ClassifyOptions, parse_list

            options = ClassifyOptions(
                label="label", fusion=parse_list(fusion, allowed=FUSIONS, option="--fusion")
            )
            run_classify(data, options, out=out, say=quiet)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"study": study, "seconds": seconds, "cpu": cpu, "peak_mb": peak_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--studies", default="trend,classify")
    parser.add_argument("--fusion", default="early,late")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    sizes = dict(n=args.n, dim=args.dim, days=args.days, fusion=args.fusion)
    if args.one:
        print(json.dumps(run_once(args.one, **sizes)))
        return
    rows = []
    for study in args.studies.split(","):
        child = [sys.executable, __file__, "--one", study, *sys.argv[1:]]
        line = (
            subprocess.run(child, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        )
        r = json.loads(line)
        rows.append([r["study"], f"{r['seconds']:.1f}", f"{r['cpu']:.1f}", f"{r['peak_mb']:.0f}"])
    title = f"analyze trend / classify on {args.n:,} items, {args.dim}-d, {args.days} days"
    print(header(title))
    print(table(["study", "wall s", "CPU s", "peak RSS MB"], rows))


if __name__ == "__main__":
    main()
