"""``tuwen demo-data | ingest | index | export | db | corpus`` (handlers import their stage lazily)."""

from __future__ import annotations

import json
from pathlib import Path

from common.backend import BACKENDS, ENCODE_PRECISIONS
from common.console import say


def _settings(args):
    from common.settings import get_settings

    return get_settings(args.home)


def _demo_data(args) -> int:
    from indexer.demo_corpus import generate_demo_corpus

    summary = generate_demo_corpus(args.out, seed=args.seed, n_train=args.train, quirks=not args.no_quirks)
    if args.posts:
        from indexer.demo_posts import generate_demo_posts

        summary["posts"] = generate_demo_posts(args.out / "posts", seed=args.seed, n_posts=args.posts)
    print(json.dumps(summary, ensure_ascii=False, indent=1))
    return 0


def _ingest(args) -> int:
    from indexer.ingest import ingest

    ingest(root=args.root, settings=_settings(args), workers=args.workers, echo=say)
    return 0


def _index(args) -> int:
    from indexer.build import index_corpus
    from indexer.encode.ray_runner import runner_for

    runner = runner_for(args.ray)  # checks a --ray address before any work
    index_corpus(
        settings=_settings(args),
        model=args.model,
        precision=args.precision,
        backend=args.backend,
        batch_size=args.batch_size,
        workers=args.workers,
        index_factory=args.index_factory,
        echo=say,
        runner=runner,
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


def add_encode_options(parser) -> None:
    """The options of every command that encodes (``index``, ``corpus encode``): model, precision,
    backend, batch size, decode workers and ``--ray`` (pass ``runner_for(args.ray)`` as the runner)."""
    parser.add_argument(
        "--model",
        required=True,
        help="ViT-B-16 | ViT-L-14 | ViT-L-14-336 | ViT-H-14 | RN50 | checkpoint path | tiny | random:ARCH",
    )
    parser.add_argument("--precision", default="auto", choices=ENCODE_PRECISIONS)
    parser.add_argument(
        "--backend", choices=BACKENDS, help="torch|onnx|openvino (default $TUWEN_BACKEND, else auto)"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None, help="image decode processes")
    parser.add_argument(
        "--ray",
        metavar="auto|ADDRESS",
        default=None,
        help="encode on a Ray cluster: auto (the running one), HOST:6379 or ray://HOST:10001",
    )


def register(sub, *, common) -> None:
    from indexer.corpus_cli import register as register_corpus

    p = sub.add_parser("demo-data", help="generate the synthetic demo corpus (附件 layout)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train", type=int, default=1500, help="training pairs")
    p.add_argument("--no-quirks", action="store_true", help="no missing/mislabelled files")
    p.add_argument(
        "--posts",
        type=int,
        default=0,
        help="also N social posts for `tuwen corpus add` (OUT/posts/posts.jsonl)",
    )
    p.set_defaults(handler=_demo_data)

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
