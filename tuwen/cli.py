"""``tuwen``: the one console script. Each subcommand calls a plain function of the same name.

Subcommands are registered by the package that owns them (``register(subparsers)``), so the
service's package never pulls in training code; ``demo`` and ``demo-data`` are the roof's own
(``tuwen.demo``). Handlers import the code they run when they run (see ``indexer.cli``): building
this parser must stay cheap, since every command and ``--help`` pays for it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from analysis.cli import register as register_analysis
from app.cli import register as register_service
from common.errors import TuwenError, describe_os_error
from common.settings import get_settings
from indexer.cli import register as register_indexer
from training.cli import register as register_training


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--home", help="working folder (store, indexes, runs); default $TUWEN_HOME or ~/.tuwen"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tuwen", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo_data(sub)
    for register in (
        register_indexer,
        register_training,
        register_service,
        register_analysis,
    ):
        register(sub, common=_common)
    demo = sub.add_parser("demo", help="generate the demo corpus, train, index, export and serve")
    _common(demo)
    demo.add_argument("--no-train", action="store_true", help="index with the untrained tiny model")
    demo.add_argument("--epochs", type=int, default=None, help="training epochs (default: tuned)")
    demo.add_argument("--no-serve", action="store_true", help="stop after exporting the CSVs")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.set_defaults(handler=_demo)
    return parser


def _add_demo_data(sub) -> None:
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


def _demo_data(args) -> int:
    from tuwen.demo.corpus import generate_demo_corpus
    from tuwen.demo.posts import generate_demo_posts

    summary = generate_demo_corpus(args.out, seed=args.seed, n_train=args.train, quirks=not args.no_quirks)
    if args.posts:
        summary["posts"] = generate_demo_posts(args.out / "posts", seed=args.seed, n_posts=args.posts)
    print(json.dumps(summary, ensure_ascii=False, indent=1))
    return 0


def _demo(args) -> int:
    # The demo runs UMAP (numba) and then forks (the posts' and series' corpus checks) in one
    # process: numba's default TBB pool then prints "Unable to join threads to shut down before
    # fork()" at every fork. Its own work-queue pool starts no thread that outlives a call. Set
    # before numba is imported; a user's own NUMBA_THREADING_LAYER wins.
    os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")
    from tuwen.demo.run import run_demo

    run_demo(
        settings=get_settings(args.home),
        train=not args.no_train,
        train_epochs=args.epochs,
        serve=not args.no_serve,
        host=args.host,
        port=args.port,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its CPU-probe chatter
    try:
        result = args.handler(args)
    except TuwenError as exc:
        print(f"tuwen {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tuwen {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # the disk, a permission, a broken link: the environment, named
        if args.verbose:
            raise
        print(
            f"tuwen {args.command}: error: {describe_os_error(exc)} (run with -v for the traceback)",
            file=sys.stderr,
        )
        return 2
    except Exception as exc:  # a bug, not bad input: say so briefly unless asked for detail
        if args.verbose:
            raise
        print(
            f"tuwen {args.command}: unexpected error: {type(exc).__name__}: {exc} "
            "(run with -v for the traceback)",
            file=sys.stderr,
        )
        return 1
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
