"""Local runner vs Ray runner: the same `tuwen index` build of a demo corpus, timed side by side.

    .venv/bin/python bench/bench_ray.py                                  # tiny: Ray's overhead alone
    .venv/bin/python bench/bench_ray.py --model random:ViT-B-16 --queries 16   # a real-sized model

A local Ray instance (127.0.0.1, ``--cpus`` CPUs) is started once (its start is timed apart) and
stopped at the end. Builds alternate local / Ray for ``--turns`` turns on the same store; the table
gives the median wall time of each and the rows encoded per second (images + captions, candidates
and queries). The Ray build includes what every Ray build pays: shipping rows, starting one actor
pool per kind (each loading the model), decode tasks, and gathering the vectors on the driver.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from harness import ROOT, header, median, table

from common.settings import Settings
from indexer.build import index_corpus
from indexer.encode.ray_runner import RayRunner
from indexer.ingest import ingest
from tuwen.demo.corpus import generate_demo_corpus


def _home(folder: Path, *, per_item: int, queries: int) -> tuple[Settings, int]:
    """A store with the demo corpus (192 x ``per_item`` candidates per kind); rows to encode."""
    from indexer.encode.reader import competition_sets

    root = folder / "corpus"
    generate_demo_corpus(
        root,
        n_train=8,
        candidates_per_item=per_item,
        n_text_queries=queries,
        n_image_queries=queries,
        quirks=False,
    )
    settings = Settings(home=folder / "home")
    ingest(root=root, settings=settings, workers=1, progress=False, echo=lambda _: None)
    return settings, sum(len(s.rows) for s in competition_sets(settings, lambda _: None))


def _timed_build(settings: Settings, model: str, runner=None) -> float:
    started = time.perf_counter()
    kwargs = {"runner": runner} if runner is not None else {}
    index_corpus(settings=settings, model=model, progress=False, echo=lambda _: None, **kwargs)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--per-item", type=int, default=1, help="candidates per demo item (192 items)")
    parser.add_argument("--queries", type=int, default=100, help="text and image queries")
    parser.add_argument("--turns", type=int, default=2)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    args = parser.parse_args()
    import ray

    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        settings, rows = _home(Path(tmp), per_item=args.per_item, queries=args.queries)
        started = time.perf_counter()
        ray.init(
            address="local",
            num_cpus=args.cpus,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
        )
        ray_start = time.perf_counter() - started
        times: dict[str, list[float]] = {"local runner": [], "Ray runner": []}
        try:
            for _ in range(args.turns):
                times["local runner"].append(_timed_build(settings, args.model))
                times["Ray runner"].append(_timed_build(settings, args.model, RayRunner("auto")))
        finally:
            ray.shutdown()
    local = median(times["local runner"])
    out = [
        [
            name,
            rows,
            f"{median(ts):.1f}",
            ", ".join(f"{t:.1f}" for t in ts),
            f"{rows / median(ts):.1f}",
            f"{median(ts) / local:.2f}x",
        ]
        for name, ts in times.items()
    ]
    print(header(f"Local vs Ray runner, `tuwen index` of the demo corpus, {args.model}"))
    print(table(["runner", "rows", "median s", "each turn s", "rows/s", "time vs local"], out))
    print(
        f"\nrows: candidate images + captions + query captions + query images ({192 * args.per_item} "
        f"candidates per kind, {args.queries} queries per kind); Ray: a local instance with {args.cpus} "
        f"CPUs on 127.0.0.1, started once in {ray_start:.1f} s (not in the build times); builds "
        f"alternate local / Ray; load average now {', '.join(f'{x:.1f}' for x in os.getloadavg())}."
    )


if __name__ == "__main__":
    main()
