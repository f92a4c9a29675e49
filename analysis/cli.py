"""``tuwen analyze STUDY NAME …``: each study module adds its own subcommand (``add_parser``).

A new study is one more entry in ``STUDIES``; handlers import their study lazily, so ``tuwen
--help`` and ``tuwen serve`` never load scikit-learn, UMAP, jieba or matplotlib.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from analysis.data import CorpusData


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


def study_inputs(args: argparse.Namespace, study: str) -> tuple[Path, CorpusData]:
    """A study command's report folder and corpus data (from --home, NAME and --out)."""
    from analysis.load import load_corpus_data, report_dir
    from common.settings import get_settings

    settings = get_settings(args.home)
    data = load_corpus_data(settings=settings, name=args.name)
    return report_dir(settings=settings, study=study, name=args.name, out=args.out), data


def finished(report_json: Path, *, table: list[dict] | None = None, verdict: str = "") -> int:
    """Print the study's table and verdict (if any), then tell a person where the report is
    (stdout: the page to open)."""
    from analysis.report import markdown_table
    from common.console import say

    if table is not None:
        print(markdown_table(table) + "\n" + verdict)
    say(f"report written: {report_json}")
    print(report_json.parent / "index.html")
    return 0


def register(sub, *, common) -> None:
    from analysis import alignment, classify, clusters, trend

    studies_parser = sub.add_parser("analyze", help="studies of a corpus (reports)")
    studies = studies_parser.add_subparsers(dest="study", required=True, metavar="STUDY")
    for add_parser in (clusters.add_parser, alignment.add_parser, trend.add_parser, classify.add_parser):
        add_parser(studies, common=common)
