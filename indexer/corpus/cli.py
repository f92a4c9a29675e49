"""``tuwen corpus add | remove | list | encode | masks`` (handlers import their stage lazily)."""

from __future__ import annotations

import json
from pathlib import Path

from common.console import say
from common.errors import TuwenError
from indexer.encode.options import EncodeOptions, add_encode_options


def _settings(args):
    from common.settings import get_settings

    return get_settings(args.home)


def _add(args) -> int:
    from indexer.corpus.add import add_corpus

    add_corpus(
        settings=_settings(args),
        name=args.name,
        file=args.file,
        images=args.images,
        workers=args.workers,
        echo=say,
        upsert=args.upsert,
    )
    return 0


def _remove(args) -> int:
    from indexer.corpus.add import remove_items

    ids = list(args.ids)
    if args.ids_file is not None:
        try:
            lines = args.ids_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise TuwenError(f"{args.ids_file}: cannot read ({exc.strerror})") from exc
        ids += [line.strip() for line in lines if line.strip()]
    if not ids:
        raise TuwenError("name the ids to remove (ID ... or --ids-file FILE)")
    remove_items(settings=_settings(args), name=args.name, ids=ids, echo=say)
    return 0


def _list(args) -> int:
    from dataclasses import asdict

    from indexer.corpus.items import list_corpora

    infos = list_corpora(settings=_settings(args))
    if args.json:
        print(json.dumps([asdict(i) for i in infos], ensure_ascii=False, indent=1))
        return 0
    if not infos:
        say("no corpora: `tuwen corpus add NAME FILE`, or `tuwen ingest --root DIR` for the competition's")
    for i in infos:
        fields = ", ".join(f"{f}:{k}" for f, k in i.fields.items()) or "-"
        print(
            f"{i.name}\t{i.rows} rows\t{i.images_ok}/{i.images} images\t{i.captions} captions\t"
            f"time {i.time_kind or '-'}\tattributes {fields}\tencoded {i.model_id or '-'}\t{i.source}"
        )
    return 0


def _encode(args) -> int:
    from indexer.corpus.encode import encode_corpus
    from indexer.encode.ray_runner import runner_for

    options = EncodeOptions.from_args(args)
    runner = runner_for(options.ray)  # checks a --ray address before any work
    encode_corpus(settings=_settings(args), name=args.name, options=options, echo=say, runner=runner)
    return 0


def _masks(args) -> int:
    from indexer.corpus.masks import make_masks

    extra = {} if args.iterations is None else {"iterations": args.iterations}
    make_masks(settings=_settings(args), name=args.name, echo=say, **extra)
    return 0


def register(sub, *, common) -> None:
    corpus = sub.add_parser("corpus", help="any captioned-image collection: add, remove, list, encode, masks")
    actions = corpus.add_subparsers(dest="corpus_command", required=True, metavar="ACTION")

    p = actions.add_parser(
        "add", help="read a CSV, JSONL or JSON-array file into the store (replaces NAME, or --upsert)"
    )
    common(p)
    p.add_argument("name")
    p.add_argument(
        "file", type=Path, help="fields id, image, caption, time; any other scalar is an attribute"
    )
    p.add_argument("--images", type=Path, default=None, help="folder the image paths are relative to")
    p.add_argument("--workers", type=int, default=None, help="image-check processes")
    p.add_argument(
        "--upsert",
        action="store_true",
        help="add new ids, replace changed ones, keep the rest (not a whole replace)",
    )
    p.set_defaults(handler=_add)

    p = actions.add_parser("remove", help="remove items by id (unknown ids are named, the others removed)")
    common(p)
    p.add_argument("name")
    p.add_argument("ids", nargs="*", metavar="ID")
    p.add_argument("--ids-file", type=Path, default=None, help="a file of ids, one a line")
    p.set_defaults(handler=_remove)

    p = actions.add_parser("list", help="the corpora in the store, the competition collections included")
    common(p)
    p.add_argument("--json", action="store_true", help="as JSON")
    p.set_defaults(handler=_list)

    p = actions.add_parser("encode", help="embed every image and caption of a corpus with a model")
    common(p)
    p.add_argument("name")
    add_encode_options(p)
    p.set_defaults(handler=_encode)

    p = actions.add_parser(
        "masks", help="a foreground mask per image (GrabCut, no downloaded weights), set as the items' masks"
    )
    common(p)
    p.add_argument("name")
    p.add_argument(
        "--iterations",
        type=int,
        default=None,
        help="GrabCut iterations per image (default 5; fewer: faster, coarser masks)",
    )
    p.set_defaults(handler=_masks)
