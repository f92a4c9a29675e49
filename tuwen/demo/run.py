"""``tuwen demo`` (``run_demo``): the whole product on the bundled synthetic corpus, in one command.

Generate the corpus → ingest → fine-tune ``tiny`` → index → export result1/2.csv → report the
held-out recall against the corpus's ground truth → the social posts corpus through ``corpus add``,
``corpus encode`` and the clusters and alignment studies → serve the search page (which links them).
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable
from pathlib import Path

from analysis import load
from analysis.alignment import run_alignment
from analysis.classify import run_classify
from analysis.clusters import ClusterOptions
from analysis.clusters_report import run_clusters
from analysis.load import load_corpus_data, report_dir
from analysis.options import ClassifyOptions, TrendOptions
from analysis.report import markdown_table
from analysis.trend import run_trend
from app.cli import serve as serve_app
from common.console import say as _say
from common.settings import Settings
from indexer.build import index_corpus
from indexer.corpus.add import add_corpus
from indexer.corpus.encode import encode_corpus
from indexer.export import export_results
from indexer.ingest import ingest
from tuwen.demo.corpus import generate_demo_corpus
from tuwen.demo.posts import generate_demo_posts
from tuwen.demo.series import generate_demo_series
from tuwen.demo.training import train_demo_model


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
    home = settings.home_dir
    data = home / "demo-data"
    started = time.perf_counter()
    figures: dict = {}
    if not (data / "ground_truth.json").is_file():
        say(f"[1/7] generating the demo corpus in {data}")
        generate_demo_corpus(data)
    else:
        say(f"[1/7] demo corpus already in {data}")
    say("[2/7] ingest")
    ingest(root=data, settings=settings, echo=say)
    model = "tiny"
    if train:
        say("[3/7] fine-tuning tiny on the training pairs (附件1)")
        model = str(train_demo_model(settings=settings, out=home / "runs" / "demo", epochs=train_epochs))
    else:
        say("[3/7] training skipped: indexing with the untrained tiny model")
    say(f"[4/7] index with {model}")
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
    say(f"[5/7] the demo posts: corpus add, corpus encode with {model}, analyze clusters and alignment")
    figures["reports"] = analysis_demo(settings=settings, model=model, trained=train, say=say)
    for study, page in figures["reports"].items():
        say(f"report {study}: {page}")
    say(f"[6/7] the demo series: corpus add, corpus encode with {model}, analyze trend and classify")
    figures["supervised"] = supervised_demo(settings=settings, model=model, say=say)
    if serve:
        say(f"[7/7] serving the search page at http://{host}:{port}/  (Ctrl-C to stop)")
        serve_app(settings=settings, host=host, port=port)
    return figures


def analysis_demo(
    *, settings: Settings, model: str, trained: bool, say: Callable[[str], None] = _say
) -> dict:
    """The social-posts corpus (a garment rising month by month) added, encoded and studied;
    returns {study: its index.html}. Captions are clustered always; images too when ``model`` was
    fine-tuned (an untrained tiny image tower does not tell the garments apart)."""
    posts = settings.home_dir / "demo-posts"
    if not (posts / "posts.jsonl").is_file():
        generate_demo_posts(posts)
    _add_and_encode(settings=settings, file=posts / "posts.jsonl", model=model, say=say)
    data = load_corpus_data(settings=settings, name="posts")
    runs = {"clusters": ("text", report_dir(settings=settings, study="clusters", name="posts", out=None))}
    if trained:
        runs["clusters-image"] = ("image", settings.home_dir / "analysis" / "clusters-posts-image")
    pages = {}
    for study, (modality, out) in runs.items():
        options = ClusterOptions(modality=modality, k="2..12", by="month")
        pages[study] = run_clusters(data, out=out, options=options).parent / "index.html"
    out = report_dir(settings=settings, study="alignment", name="posts", out=None)
    pages["alignment"] = run_alignment(data, out=out).parent / "index.html"
    return pages


def _add_and_encode(
    *, settings: Settings, file: Path, model: str, say: Callable[[str], None], name: str = "posts"
) -> None:
    """``tuwen corpus add NAME FILE`` and ``tuwen corpus encode NAME --model MODEL``."""
    add_corpus(settings=settings, name=name, file=file, echo=say)
    encode_corpus(settings=settings, name=name, model=model, echo=say)


def supervised_demo(*, settings: Settings, model: str, say: Callable[[str], None] = _say) -> dict:
    """``tuwen.demo.series``'s two corpora added, encoded with ``model`` and studied by
    ``analyze trend`` (the planted rise of dresses) and ``analyze classify`` (image + caption);
    prints both tables on stdout and returns {study: report.json}."""
    folder = settings.home_dir / "demo-series"
    files = {"trend": folder / "trend.jsonl", "fusion": folder / "fusion.jsonl"}
    if not all(f.is_file() for f in files.values()):
        generate_demo_series(folder)
    for kind, file in files.items():
        _add_and_encode(settings=settings, file=file, model=model, say=say, name=f"demo-{kind}")
    trend = run_trend(
        load.load_corpus_data(settings=settings, name="demo-trend"),
        TrendOptions(label="hot"),
        out=load.report_dir(settings=settings, study="trend-hot", name="demo-trend", out=None),
        say=say,
    )
    classify = run_classify(
        load.load_corpus_data(settings=settings, name="demo-fusion"),
        ClassifyOptions(label="bestseller", fusion=("early", "late", "attention")),
        out=load.report_dir(settings=settings, study="classify-bestseller", name="demo-fusion", out=None),
        say=say,
    )
    for title, result in (
        ("analyze trend demo-trend --label hot", trend),
        ("analyze classify demo-fusion --label bestseller", classify),
    ):
        print(f"\n{title}\n\n{markdown_table(result['table'])}\n{result['verdict']}", flush=True)
    return {"trend": trend["report"], "classify": classify["report"]}
