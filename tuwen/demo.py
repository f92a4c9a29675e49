"""``tuwen demo``: the whole product on the bundled synthetic corpus, in one command.

Generate the corpus → ingest → fine-tune ``tiny`` → index → export result1/2.csv → report the
held-out recall against the corpus's ground truth → serve the search page.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable
from pathlib import Path

from common.console import say as _say
from common.settings import Settings


def held_out_recall(result_csv: Path, relevant: dict[str, list[str]], k: int = 5) -> float:
    """Share of queries with at least one relevant candidate among their ``k`` exported results."""
    found: dict[str, set[str]] = {}
    with open(result_csv, encoding="utf-8", newline="") as fh:
        for query_id, rank, result_id in list(csv.reader(fh))[1:]:
            if int(rank) <= k:
                found.setdefault(query_id, set()).add(result_id)
    hits = sum(bool(found.get(q, set()) & set(ids)) for q, ids in relevant.items())
    return hits / max(len(relevant), 1)


def run_demo(
    *,
    settings: Settings,
    train: bool = True,
    train_epochs: int | None = None,
    serve: bool = True,
    host: str = "127.0.0.1",
    port: int = 8000,
    say: Callable[[str], None] = _say,
) -> dict:
    """Run every stage on the demo corpus under ``settings.home_dir``; returns the figures."""
    from indexer.build import index_corpus
    from indexer.demo_corpus import generate_demo_corpus
    from indexer.export import export_results
    from indexer.ingest import ingest

    home = settings.home_dir
    data = home / "demo-data"
    started = time.perf_counter()
    figures: dict = {}
    if not (data / "ground_truth.json").is_file():
        say(f"[1/5] generating the demo corpus in {data}")
        generate_demo_corpus(data)
    else:
        say(f"[1/5] demo corpus already in {data}")
    say("[2/5] ingest")
    ingest(root=data, settings=settings, echo=say)
    model = "tiny"
    if train:
        from training.demo import train_demo_model

        say("[3/5] fine-tuning tiny on the training pairs (附件1)")
        model = str(train_demo_model(settings=settings, out=home / "runs" / "demo", epochs=train_epochs))
    else:
        say("[3/5] training skipped: indexing with the untrained tiny model")
    say(f"[4/5] index with {model}")
    index_corpus(settings=settings, model=model, echo=say)
    out = home / "results"
    paths = export_results(settings=settings, out=out, echo=say)
    truth = json.loads((data / "ground_truth.json").read_text(encoding="utf-8"))
    figures["t2i_R@5"] = held_out_recall(out / "result1.csv", truth["text_queries"])
    figures["i2t_R@5"] = held_out_recall(out / "result2.csv", truth["image_queries"])
    figures["seconds"] = round(time.perf_counter() - started, 1)
    say(
        f"held-out recall@5 on the demo queries: text→image {figures['t2i_R@5']:.1%}, "
        f"image→text {figures['i2t_R@5']:.1%} ({figures['seconds']} s so far)"
    )
    say("result files: " + ", ".join(str(p) for p in paths))
    if serve:
        from app.cli import serve as serve_app

        say(f"[5/5] serving the search page at http://{host}:{port}/  (Ctrl-C to stop)")
        serve_app(settings=settings, host=host, port=port)
    return figures
