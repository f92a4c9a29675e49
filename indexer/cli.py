"""``tuwen ingest | index | export | db | export-model | corpus``: the flags, and handlers that call
each stage.

Each handler imports its stage when it runs, as ``indexer.corpus.cli``'s do: the stages pull in
torch, cn_clip, FAISS, OpenVINO and Ray, and every ``tuwen`` command (``--help`` included) builds
this parser, so importing them here cost every command 5 s before it began (measured:
``python -X importtime -c "import tuwen.cli"``).
"""

from __future__ import annotations

from pathlib import Path

from common.console import say
from common.settings import get_settings
from common.vocabulary import EXPORT_FORMATS, EXPORT_PRECISIONS
from indexer.corpus.cli import register as register_corpus
from indexer.encode.options import EncodeOptions, add_encode_options
from indexer.rerank import METHODS as RERANK_METHODS


def _settings(args):
    return get_settings(args.home)


def _ingest(args) -> int:
    from indexer.ingest import ingest

    ingest(root=args.root, settings=_settings(args), workers=args.workers, echo=say)
    return 0


def _index(args) -> int:
    from indexer.encode.ray_runner import runner_for

    options = EncodeOptions.from_args(args)
    runner = runner_for(options.ray)  # checks a --ray address before any work (and before torch loads)
    from indexer.build import index_corpus

    index_corpus(
        settings=_settings(args), options=options, index_factory=args.index_factory, echo=say, runner=runner
    )
    return 0


def _export(args) -> int:
    from indexer.export import export_results

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
    from indexer import store

    url = _settings(args).store_url
    if args.action == "upgrade":
        before, head = store.upgrade_url(url)
        say(f"store at revision {head}" + ("" if before == head else f" (was {before or 'empty'})"))
    else:
        current, head = store.url_revision(url)
        state = "up to date" if current == head else "needs `tuwen db upgrade`"
        print(f"store revision: {current or 'none (empty)'}; this release: {head}; {state}")
    return 0


def _export_model(args) -> int:
    from indexer.export_model import export_model

    path = export_model(
        settings=_settings(args),
        model=args.model,
        fmt=args.fmt,
        precision=args.precision,
        out=args.out,
        echo=say,
    )
    say(f"{args.fmt} towers of {args.model} in {path}")
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
        choices=RERANK_METHODS,
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

    p = sub.add_parser(
        "export-model",
        help="export both towers to ONNX or OpenVINO IR (dynamic batch and text length, model id stamped)",
    )
    common(p)
    p.add_argument("--model", required=True, help="ViT-B-16 | checkpoint path | tiny | random:ARCH")
    p.add_argument("--format", dest="fmt", required=True, choices=EXPORT_FORMATS)
    p.add_argument(
        "--precision",
        default="fp32",
        choices=EXPORT_PRECISIONS,
        help="int8: NNCF post-training quantization calibrated on the ingested corpus",
    )
    p.add_argument("--out", type=Path, help="folder to write (default: the cache in $TUWEN_HOME/converted)")
    p.set_defaults(handler=_export_model)

    register_corpus(sub, common=common)
