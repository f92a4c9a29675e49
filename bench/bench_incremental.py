"""Issue 19: ``tuwen corpus encode`` after adding 1% of a corpus, against a full encode of it.

A corpus of ``--images`` photo-sized JPEGs (``bench/photos.py``: 500x375 to 1024x768, 60-120 kB,
seeded) with a caption each is added to a fresh store; then, each as its own process timed end to
end (Python start, imports and model loading included in both):

1. ``tuwen corpus encode bench --model MODEL --backend torch``: the full encode (nothing saved yet);
2. ``tuwen corpus add bench more.jsonl --upsert`` of 1% new items (new photos, new captions), untimed;
3. the same ``tuwen corpus encode``: only the new items' images and captions are encoded, every
   other vector comes from the store's ``vectors`` table (looked up by the sha256 of the bytes).

The ratio is (3) / (1). What (3) is made of is measured apart, in this process: a process that only
imports and loads the model, digesting every image file (read + sha256), reading the items and
looking the digests up, and encoding the new 1% with the model loaded.

    .venv/bin/python bench/bench_incremental.py --images 300      # ~3 min on 2 shared cores
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness  # noqa: F401  (sys.path, HF_HUB_OFFLINE)
from harness import header, table
from photos import make_captions, make_photos

TUWEN = str(Path(sys.executable).parent / "tuwen")


def _jsonl(path: Path, photos: list[Path], captions: list[str], prefix: str) -> Path:
    rows = [
        {"id": f"{prefix}{i:05d}", "image": str(p), "caption": c}
        for i, (p, c) in enumerate(zip(photos, captions, strict=True))
    ]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return path


def _timed(args: list[str], env: dict) -> float:
    start = time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    last = (done.stderr.strip().splitlines() or [""])[-1]
    print(f"{wall:7.1f} s  {' '.join(args[1:4])}  | {last}", file=sys.stderr)
    return wall


def _parts(home: Path, model: str, new: tuple[list[Path], list[str]], env: dict) -> dict[str, float]:
    """What the incremental encode is made of, each measured alone."""
    from common.settings import Settings
    from indexer import store
    from indexer.corpus import load_items
    from indexer.corpus.encode import corpus_sets
    from indexer.encode.mapper import EncodeMapper
    from indexer.vector_cache import lookup, model_key, source_digests

    load = [sys.executable, "-c", f"from indexer.encode.mapper import EncodeMapper; EncodeMapper({model!r})"]
    parts = {"process start, imports, model load": _timed(load, env)}
    settings = Settings(home=home)
    start = time.perf_counter()
    items = load_items(settings=settings, name="bench")
    sets = corpus_sets(items)
    parts["read the items"] = time.perf_counter() - start
    start = time.perf_counter()
    digests = {s.name: source_digests(s) for s in sets}
    parts["digest every source (images read + sha256)"] = time.perf_counter() - start
    mapper = EncodeMapper(model, backend="torch")

    start = time.perf_counter()
    with store.open_store(settings.store_url) as session:
        for s in sets:
            lookup(
                session, model_key(mapper.model_fields(), s.kind), s.kind, [d for d in digests[s.name] if d]
            )
    parts["look the digests up in the store"] = time.perf_counter() - start
    start = time.perf_counter()
    mapper.encode_sources("image", [str(p) for p in new[0]])
    mapper.encode_sources("text", new[1])
    parts[f"encode the new {len(new[0])} images and captions"] = time.perf_counter() - start
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--model", default="random:ViT-B-16")
    parser.add_argument("--work", type=Path, default=None, help="folder for photos and the store")
    parser.add_argument("--out", type=Path, default=None, help="append the table to this file")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-incremental-"))
    added = max(1, args.images // 100)
    photos = make_photos(work / "photos", args.images, seed=0)
    more = make_photos(work / "more", added, seed=1)
    captions = make_captions(args.images + added, seed=0)
    home = work / "home"
    env = {**os.environ, "TUWEN_HOME": str(home), "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    base = _jsonl(work / "base.jsonl", photos, captions[: args.images], "p")
    extra = _jsonl(work / "more.jsonl", more, captions[args.images :], "n")
    encode = [TUWEN, "corpus", "encode", "bench", "--model", args.model, "--backend", "torch"]
    subprocess.run([TUWEN, "corpus", "add", "bench", str(base)], env=env, check=True, capture_output=True)
    full = _timed(encode, env)
    subprocess.run(
        [TUWEN, "corpus", "add", "bench", str(extra), "--upsert"], env=env, check=True, capture_output=True
    )
    incremental = _timed(encode, env)
    parts = _parts(home, args.model, (more, captions[args.images :]), env)
    rows = [
        ["full `corpus encode` (nothing saved)", f"{args.images} + {args.images}", f"{full:.1f}", "100%"],
        [f"`corpus encode` after adding {added} items (1%)", f"{added} + {added}", f"{incremental:.1f}",
         f"{100 * incremental / full:.1f}%"],
    ]  # fmt: skip
    rows += [[f"  of which: {k}", "", f"{v:.2f}", f"{100 * v / full:.1f}%"] for k, v in parts.items()]
    text = (
        header(f"`tuwen corpus encode` after adding 1% vs a full encode, {args.model}, PyTorch backend")
        + f"\n{args.images} photos of 500x375 to 1024x768 (JPEG, seeded), a caption each; default precision "
        + "(auto); each encode a process of its own, model loading included.\n\n"
        + table(["run", "encoded (images + texts)", "wall s", "of the full encode"], rows)
        + "\n"
    )
    print(text)
    if args.out:
        with args.out.open("a", encoding="utf-8") as fh:
            fh.write("\n" + text)


if __name__ == "__main__":
    main()
