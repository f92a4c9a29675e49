"""``tuwen ingest | index | export | db | corpus``: the flags, and handlers that call each stage."""

from __future__ import annotations

from pathlib import Path

from common.console import say
from common.settings import get_settings
from indexer import store
from indexer.build import index_corpus
from indexer.corpus.cli import register as register_corpus
from indexer.encode.options import EncodeOptions, add_encode_options
from indexer.encode.ray_runner import runner_for
from indexer.export import export_results
from indexer.ingest import ingest


def _settings(args):
    return get_settings(args.home)


def _ingest(args) -> int:
    ingest(root=args.root, settings=_settings(args), workers=args.workers, echo=say)
    return 0


def _index(args) -> int:
    options = EncodeOptions.from_args(args)
    runner = runner_for(options.ray)  # checks a --ray address before any work
    index_corpus(
        settings=_settings(args), options=options, index_factory=args.index_factory, echo=say, runner=runner
    )
    return 0


def _export(args) -> int:
    ensemble = [g for g in (args.ensemble or "").split(",") if g]
    export_results(
        settings=_settings(args),
        out=args.out,
        echo=say,
        rerank_method=args.rerank,
        ensemble=ensemble,
        bank_size=args.bank_size,
    )
    return 0


def _db(args) -> int:
    url = _settings(args).store_url
    if args.action == "upgrade":
        before, head = store.upgrade_url(url)
        say(f"store at revision {head}" + ("" if before == head else f" (was {before or 'empty'})"))
    else:
        current, head = store.url_revision(url)
        state = "up to date" if current == head else "needs `tuwen db upgrade`"
        print(f"store revision: {current or 'none (empty)'}; this release: {head}; {state}")
    return 0


def register(sub, *, common) -> None:
    p = sub.add_parser("ingest", help="read 附件1/2/3 into the store, checking every image")
    common(p)
    p.add_argument("--root", type=Path, required=True, help="folder holding 附件1/ 附件2/ 附件3/")
    p.add_argument("--workers", type=int, default=None, help="image-check processes")
    p.set_defaults(handler=_ingest)

    p = sub.add_parser("index", help="encode candidates and queries into FAISS indexes")
    common(p)
    add_encode_options(p)
    p.add_argument(
        "--index-factory", default=None, help="FAISS factory string (default: chosen by corpus size)"
    )
    p.set_defaults(handler=_index)

    p = sub.add_parser("export", help="write result1.csv and result2.csv")
    common(p)
    p.add_argument("--out", type=Path, default=Path("results"))
    p.add_argument(
        "--rerank",
        default="none",
        choices=["none", "dual-softmax", "qb-norm", "one-to-one"],
        help="re-rank the top 5 (indexer.rerank): dual-softmax and one-to-one use the other test "
        "queries, qb-norm a bank of training queries; default none",
    )
    p.add_argument(
        "--ensemble",
        help="GEN[,GEN...]: average the similarities of these index generations (folders under "
        "$TUWEN_HOME/index, each from its own model over the same sets) before any re-ranking",
    )
    p.add_argument(
        "--bank-size", type=int, default=5000, help="training queries in qb-norm's bank; default 5000"
    )
    p.set_defaults(handler=_export)

    p = sub.add_parser("db", help="the store's schema: `status` shows its revision, `upgrade` migrates it")
    common(p)
    p.add_argument("action", choices=["status", "upgrade"])
    p.set_defaults(handler=_db)

    register_corpus(sub, common=common)
