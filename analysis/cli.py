"""``tuwen analyze STUDY NAME …``: every study's subcommand, built here; the studies are plain functions
over data (``run_trend(data, options, out=…)``) and never import this module.

Each command turns its arguments into the study's options object (``analysis.options``, whose field
defaults the help shows), checks them before the corpus is read, loads the corpus, runs the study and
prints where the report is.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import TypeVar

from analysis.data import CorpusData
from analysis.load import load_corpus_data, report_dir
from analysis.options import CLUSTER_PERIODS as CLUSTER_BY
from analysis.options import (
    FUSIONS,
    METHODS,
    MODALITIES,
    REDUCERS,
    RULES,
    SEQUENCE_MODELS,
    TEXT_KINDS,
    TEXT_SOURCES,
    TREND_FEATURES,
    TREND_PERIODS,
    AlignmentOptions,
    ClassifyOptions,
    ClusterOptions,
    TrendOptions,
    default,
    parse_list,
)
from analysis.report import markdown_table
from common.console import say
from common.reports import report_page
from common.settings import get_settings

OptionsT = TypeVar("OptionsT")


def options_from_args(cls: type[OptionsT], args: argparse.Namespace, **parsed) -> OptionsT:
    """The study's options object from the flags named after its fields (the rest keep the
    dataclass's defaults), with ``parsed`` values (comma lists turned into tuples) in place of theirs;
    checked before any corpus is read."""
    given = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
    options = cls(**{**given, **parsed})
    options.check()
    return options


def study_parser(studies, study: str, *, help: str, common, handler: Callable) -> argparse.ArgumentParser:
    """A study's subparser with what every study takes: NAME, --out, --seed, --home."""
    p = studies.add_parser(study, help=help, description=help)
    common(p)
    p.add_argument("name", metavar="NAME", help="corpus name (see `tuwen corpus list`)")
    p.add_argument(
        "--out", type=Path, default=None, help=f"report folder (default $TUWEN_HOME/analysis/{study}-NAME)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of every sample and fit (same seed, same report)"
    )
    p.set_defaults(handler=handler)
    return p


def _add_min_mask_area(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--min-mask-area",
        type=float,
        default=None,
        help="drop items whose mask covers less than this share of the frame (the seed study: 0.05; "
        "needs a corpus with a mask column)",
    )


def _with_default(options: type, name: str, help: str = "") -> dict:
    """``default=`` and ``help=`` for an option whose default is the options class's field."""
    value = default(options, name)
    shown = ",".join(value) if isinstance(value, tuple) else value
    return {"default": shown, "help": f"{help}{' ' if help else ''}(default: {shown})".replace("%", "%%")}


def study_inputs(args: argparse.Namespace, study: str) -> tuple[Path, CorpusData]:
    """A study command's report folder and corpus data (from --home, NAME and --out)."""
    settings = get_settings(args.home)
    data = load_corpus_data(settings=settings, name=args.name)
    return report_dir(settings=settings, study=study, name=args.name, out=args.out), data


def finished(report_json: Path, *, table: list[dict] | None = None, verdict: str = "") -> int:
    """Print the study's table and verdict (if any), then tell a person where the report is
    (stdout: the page to open)."""
    if table is not None:
        print(markdown_table(table) + "\n" + verdict)
    say(f"report written: {report_json}")
    print(report_page(report_json.parent))
    return 0


# ``analyze clusters``


def _add_clusters(studies, common) -> None:
    p = study_parser(
        studies,
        "clusters",
        help="style clusters, their keywords and per-period shares",
        common=common,
        handler=_clusters_command,
    )
    o = ClusterOptions
    p.add_argument("--modality", choices=MODALITIES, **_with_default(o, "modality", "both = image and text"))
    p.add_argument("--text", choices=TEXT_SOURCES, **_with_default(o, "text", "tags = the #hashtags"))
    p.add_argument("--reduce", choices=REDUCERS, **_with_default(o, "reduce"))
    p.add_argument("--method", choices=METHODS, **_with_default(o, "method"))
    p.add_argument("--k", **_with_default(o, "k", "auto (silhouette sweep) | N | A..B (sweep over A to B)"))
    p.add_argument("--by", choices=CLUSTER_BY, **_with_default(o, "by", "period of the shares"))
    p.add_argument("--min-cluster-size", type=int, default=None, help="hdbscan (default 1 %% of the items)")
    p.add_argument("--exemplars", type=int, **_with_default(o, "exemplars", "images per cluster grid"))
    _add_min_mask_area(p)


def _clusters_command(args) -> int:
    from analysis.clusters_report import run_clusters  # heavy (scikit-learn, UMAP, matplotlib): on use only

    options = options_from_args(ClusterOptions, args)
    out, data = study_inputs(args, "clusters")
    return finished(run_clusters(data, out=out, options=options))


# ``analyze alignment``


def _add_alignment(studies, common) -> None:
    p = study_parser(
        studies,
        "alignment",
        help="how well captions and images find each other",
        common=common,
        handler=_alignment_command,
    )
    p.add_argument("--n", type=int, **_with_default(AlignmentOptions, "n", "pairs in the similarity heatmap"))
    p.add_argument(
        "--gallery",
        type=int,
        **_with_default(AlignmentOptions, "gallery", "sampled queries per top-5 gallery"),
    )


def _alignment_command(args) -> int:
    from analysis.alignment import run_alignment  # heavy (matplotlib): on use only

    options = options_from_args(AlignmentOptions, args)
    out, data = study_inputs(args, "alignment")
    return finished(run_alignment(data, options, out=out))


# ``analyze trend``


def _add_trend(studies, common) -> None:
    p = study_parser(
        studies,
        "trend",
        help="predict a period's label from the previous periods",
        common=common,
        handler=_trend_command,
    )
    o = TrendOptions
    p.add_argument("--label", required=True, help="attribute: 0/1, boolean, or numeric with --threshold")
    p.add_argument(
        "--period", choices=TREND_PERIODS, **_with_default(o, "period", "auto: integers as is, dates by day")
    )
    p.add_argument("--threshold", type=float, default=None, help="numeric label: positive when above this")
    p.add_argument(
        "--rule", choices=RULES, **_with_default(o, "rule", "period positive when any / most items are")
    )
    p.add_argument(
        "--window", type=int, **_with_default(o, "window", "periods per window, the last one predicted")
    )
    p.add_argument("--test-fraction", type=float, **_with_default(o, "test_fraction", "last share held out"))
    p.add_argument("--features", **_with_default(o, "features", f"comma list of {','.join(TREND_FEATURES)}"))
    p.add_argument("--models", **_with_default(o, "models", f"comma list of {','.join(SEQUENCE_MODELS)}"))
    p.add_argument(
        "--seeds", type=int, **_with_default(o, "seeds", "training runs per network (--seed, --seed+1, …)")
    )
    p.add_argument("--epochs", type=int, **_with_default(o, "epochs", "most training epochs per run"))
    p.add_argument(
        "--components", type=int, **_with_default(o, "components", "principal axes kept per set (0: all)")
    )
    _add_min_mask_area(p)


def _trend_command(args) -> int:
    from analysis.trend import run_trend  # heavy (scikit-learn, torch): on use only

    options = options_from_args(
        TrendOptions,
        args,
        features=parse_list(args.features, allowed=TREND_FEATURES, option="--features"),
        models=parse_list(args.models, allowed=SEQUENCE_MODELS, option="--models"),
    )
    out, data = study_inputs(args, f"trend-{args.label}")
    result = run_trend(data, options, out=out)
    return finished(result["report"], table=result["table"], verdict=str(result["verdict"]))


# ``analyze classify``


def _add_classify(studies, common) -> None:
    p = study_parser(
        studies,
        "classify",
        help="image vs text vs early/late fusion, stratified k-fold",
        common=common,
        handler=_classify_command,
    )
    o = ClassifyOptions
    p.add_argument("--label", required=True, help="attribute to predict (any values: binary or multi-class)")
    p.add_argument("--folds", type=int, **_with_default(o, "folds"))
    p.add_argument("--text", choices=TEXT_KINDS, **_with_default(o, "text", "text features in the fusions"))
    p.add_argument("--fusion", **_with_default(o, "fusion", f"comma list of {','.join(FUSIONS)}"))
    _add_min_mask_area(p)


def _classify_command(args) -> int:
    from analysis.classify import run_classify  # heavy (scikit-learn, torch): on use only

    options = options_from_args(
        ClassifyOptions, args, fusion=parse_list(args.fusion, allowed=FUSIONS, option="--fusion")
    )
    out, data = study_inputs(args, f"classify-{args.label}")
    result = run_classify(data, options, out=out)
    return finished(result["report"], table=result["table"], verdict=str(result["verdict"]))


def register(sub, *, common) -> None:
    studies_parser = sub.add_parser("analyze", help="studies of a corpus (reports)")
    studies = studies_parser.add_subparsers(dest="study", required=True, metavar="STUDY")
    for add in (_add_clusters, _add_alignment, _add_trend, _add_classify):
        add(studies, common)
