"""Issue 13's first target: ``tuwen index`` end to end against Chinese-CLIP's README loop.

A competition folder is written once: ``--images`` photo-sized JPEGs (``bench/photos.py``) are
附件2's candidate images, ``--texts`` captions are 附件3's candidate texts and 附件2's text queries,
and one photo is 附件3's query image; ``tuwen ingest`` reads it into a store. Then, in turns (the
order rotating each round), each method runs as its own process and its wall time is taken:

- the README loop: a process that builds the model and does what cn_clip's README shows, per file
  ``preprocess(Image.open(p)).unsqueeze(0)`` and ``encode_image`` (batch 1, fp32, no_grad), per
  text ``tokenize([t])`` and ``encode_text``, for the same images and texts ``tuwen index`` encodes;
- ``tuwen index --model MODEL`` with each ``--configs`` backend:precision (``auto:auto`` is the
  default). Each has one untimed first run before the rounds, which converts the model once into
  ``$TUWEN_HOME/converted`` (its time is printed too): later runs reuse it, as a user's do.

Equivalence against the README loop's fp32 vectors: the lowest cosine of an image row, and the top-5
overlap of the captions retrieving images over each method's image vectors.

    .venv/bin/python bench/bench_index.py --images 256 --rounds 3       # ~15 min on 2 cores
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness  # noqa: F401  (sys.path, HF_HUB_OFFLINE)
import numpy as np
from bench_encode import overlap, readme_images, readme_texts, top_k
from harness import header, median, table
from photos import make_captions, make_photos
from roofline import Ceiling, ceiling

from common.precision import cpu_supports_bf16
from indexer import index_files
from models.factory import LoadedModel, create_model_and_transforms

TUWEN = str(Path(sys.executable).parent / "tuwen")
DEFAULT_CONFIGS = "auto:auto,torch:fp32,openvino:int8"


def write_competition(root: Path, n_images: int, n_texts: int) -> None:
    """附件2: the photos as candidates and the captions as queries; 附件3: one query photo and the
    captions as candidate texts."""
    images = make_photos(root / "附件2" / "ImageData", n_images, seed=0)
    captions = make_captions(n_texts, seed=0)
    _csv(root / "附件2" / "image_data.csv", ["image_id"], [[p.name] for p in images])
    _csv(root / "附件2" / "word_test.csv", ["text_id", "caption"], _texts(captions, "Word"))
    query = root / "附件3" / "ImageData" / "query.jpg"
    query.parent.mkdir(parents=True, exist_ok=True)
    query.write_bytes(images[0].read_bytes())
    _csv(root / "附件3" / "image_test.csv", ["image_id"], [[query.name]])
    _csv(root / "附件3" / "word_data.csv", ["text_id", "caption"], _texts(captions, "Text"))


def _texts(captions: list[str], prefix: str) -> list[list[str]]:
    return [[f"{prefix}-{i:06d}", c] for i, c in enumerate(captions)]


def _csv(path: Path, columns: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([columns, *rows])


def readme_loop(root: Path, model: str, out: Path) -> None:
    """The README loop over what ``tuwen index`` encodes (run as its own process by ``main``)."""
    lm = create_model_and_transforms(model, device="cpu")
    images = [root / "附件2" / "ImageData" / r[0] for r in _rows(root / "附件2" / "image_data.csv")]
    vectors = readme_images(lm, images)
    readme_images(lm, [root / "附件3" / "ImageData" / "query.jpg"])
    text_vectors = readme_texts(lm, [r[1] for r in _rows(root / "附件2" / "word_test.csv")])
    readme_texts(lm, [r[1] for r in _rows(root / "附件3" / "word_data.csv")])
    np.save(out, vectors)
    np.save(out.with_suffix(".texts.npy"), text_vectors)


def _rows(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8") as fh:
        return list(csv.reader(fh))[1:]


def _run(cmd: list[str], env: dict) -> float:
    begin = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    secs = time.perf_counter() - begin
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return secs


def _generation_vectors(home: Path) -> np.ndarray:
    return np.load(index_files.current_generation(home / "index") / "image_candidates.npy")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="random:ViT-B-16")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--texts", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--configs", default=DEFAULT_CONFIGS, help="comma list of BACKEND:PRECISION")
    ap.add_argument("--work", type=Path, default=None, help="folder for data and homes (default: temp)")
    ap.add_argument("--readme-loop", nargs=2, metavar=("ROOT", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.readme_loop:
        return readme_loop(Path(args.readme_loop[0]), args.model, Path(args.readme_loop[1]))
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        print(run_bench(args, work))


def run_bench(args, work: Path) -> str:
    root, template = work / "data", work / "home-ingested"
    write_competition(root, args.images, args.texts)
    _run([TUWEN, "ingest", "--root", str(root)], _env(template))
    loaded = create_model_and_transforms(args.model, device="cpu")  # for the ceilings, before and after
    ceilings = _ceilings(loaded)
    readme_out = work / "readme.npy"
    readme = [sys.executable, __file__, "--model", args.model, "--readme-loop", str(root), str(readme_out)]
    methods = {"README loop (torch fp32, batch 1)": (readme, _env(template))}
    first_runs = {}
    for i, spec in enumerate(args.configs.split(",")):
        backend, precision = spec.split(":")
        # --no-reuse: every run encodes every image (the content-keyed vectors of issue 19 would
        # make the rounds after the first encode nothing)
        cmd = [TUWEN, "index", "--model", args.model, "--backend", backend, "--precision", precision]
        cmd.append("--no-reuse")
        name = "tuwen index, default" if spec == "auto:auto" else f"tuwen index, {backend} {precision}"
        home = work / f"home-{i}"
        shutil.copytree(template, home)  # ingested, nothing converted, no vectors: a user's first index
        first_runs[name] = _run(cmd, _env(home))  # converts the model once (cached under $TUWEN_HOME)
        methods[name] = (cmd, _env(home))
    times: dict[str, list[float]] = {name: [] for name in methods}
    vectors: dict[str, np.ndarray] = {}
    names = list(methods)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            cmd, env = methods[name]
            times[name].append(_run(cmd, env))
            home = Path(env["TUWEN_HOME"])
            vectors[name] = np.load(readme_out) if name == names[0] else _generation_vectors(home)
    ceilings = _best(ceilings, _ceilings(loaded))  # again after the rounds: the best of both
    texts = np.load(readme_out.with_suffix(".texts.npy"))
    return _report(args, names, times, vectors, first_runs, texts, ceilings)


def _env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUWEN_")}
    env.update(TUWEN_HOME=str(home), HF_HUB_OFFLINE="1", PYTHONPATH=str(harness.ROOT))
    return env


def _ceilings(loaded: LoadedModel) -> dict[str, Ceiling]:
    """The image tower's ceiling at fp32 and, where the CPU has native bf16, at bf16 (issue 22)."""
    dtypes = ["fp32"] + (["bf16"] if cpu_supports_bf16() else [])
    return {d: ceiling(loaded, "image", dtype=d) for d in dtypes}


def _best(a: dict[str, Ceiling], b: dict[str, Ceiling]) -> dict[str, Ceiling]:
    return {d: max(a[d], b[d], key=lambda c: c.gflops_rate) for d in a}


def _report(args, names, times, vectors, first_runs, queries, ceilings) -> str:
    ref = vectors[names[0]]
    top_ref = top_k(queries, ref, 5)
    readme_s = median(times[names[0]])
    rows = []
    for name in names:
        ratios = [a / b for a, b in zip(times[names[0]], times[name], strict=True)]
        cos = np.sum(vectors[name] * ref, axis=1)
        same = overlap(top_ref, top_k(queries, vectors[name], 5))
        rate = args.images / median(times[name])
        first = first_runs.get(name)
        rows.append([
            name, f"{median(times[name]):.1f}", f"{rate:.2f}",
            *(f"{100 * c.fraction(rate):.0f}%" for c in ceilings.values()),
            f"{median(ratios):.2f}x",
            f"{first:.0f}" if first else "", f"{readme_s / first:.2f}x" if first else "",
            f"{cos.min():.5f}", f"{same:.3f}",
        ])  # fmt: skip
    columns = ["method (one process each)", "s (median)", "images/s",
               *(f"% of {d} ceiling" for d in ceilings), "speed-up (median)",
               "first run s", "first run speed-up", "min cos to README", "top-5 overlap"]  # fmt: skip
    note = (
        f"\n{args.images} JPEGs (photo-sized, bench/photos.py) + {args.texts} captions twice + 1 query "
        f"image per run; {args.rounds} rounds, order rotating; wall time of each process, model "
        "loading included; images/s: the images over that wall time (end to end); speed-up: median "
        "of per-round ratios to the README loop; first run: `tuwen index` on a freshly ingested "
        "$TUWEN_HOME (nothing converted, no saved vectors) against the README loop's median; "
        "top-5 overlap: the captions' README-loop vectors retrieving among each method's image "
        "vectors.\nCeilings measured in this run (best of before and after the rounds): "
        + "; ".join(c.describe() for c in ceilings.values())
    )
    title = header(f"`tuwen index` end to end vs the README loop, {args.model}")
    return "\n".join([title, table(columns, rows), note])


if __name__ == "__main__":
    main()
