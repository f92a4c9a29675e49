"""Benchmark 1: `tuwen index`'s encoder vs Chinese-CLIP's README loop, side by side in one run.

The README loop is what users write from cn_clip's README: per image
``preprocess(Image.open(p)).unsqueeze(0)`` then ``model.encode_image`` (batch 1, fp32,
``torch.no_grad``), and per text ``tokenize([t])`` then ``model.encode_text``. Ours is
``Encoder.encode_image_files`` / ``encode_texts`` as ``tuwen index`` calls them.

The methods take turns chunk by chunk (the CPU is shared, so speed-ups are the median of
per-chunk ratios, never times from different runs). Equivalence is measured against
the README loop's fp32 embeddings: minimum cosine, and the overlap of top-5 retrieval results
(texts retrieving images, and images retrieving texts) on the same queries.

    .venv/bin/python bench/bench_encode.py                       # ~2 min on 2 shared cores
    .venv/bin/python bench/bench_encode.py --images 128 --chunks 8 --workers 1,0,2 --batch-size 16,64
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import harness  # noqa: F401  (sys.path, HF_HUB_OFFLINE)
import numpy as np
import torch
from cn_clip.clip import tokenize
from harness import header, median, table
from photos import make_captions, make_photos
from PIL import Image

from common.runtime import decode_workers
from models.encoder import IMAGE_BATCH, Encoder
from models.factory import LoadedModel, create_model_and_transforms
from models.tokens import CONTEXT_LENGTH


def readme_images(lm: LoadedModel, paths: list[Path]) -> np.ndarray:
    out = []
    with torch.no_grad():
        for p in paths:
            image = lm.preprocess(Image.open(p)).unsqueeze(0)
            features = lm.model.encode_image(image)
            features /= features.norm(dim=-1, keepdim=True)
            out.append(features[0].numpy())
    return np.stack(out)


def readme_texts(lm: LoadedModel, texts: list[str]) -> np.ndarray:
    out = []
    with torch.no_grad():
        for t in texts:
            features = lm.model.encode_text(tokenize([t], CONTEXT_LENGTH))
            features /= features.norm(dim=-1, keepdim=True)
            out.append(features[0].numpy())
    return np.stack(out)


def top_k(queries: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(queries @ candidates.T), axis=1, kind="stable")[:, :k]


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([len(set(x) & set(y)) / len(x) for x, y in zip(a, b, strict=True)]))


def run_interleaved(
    methods: dict[str, Callable[[list], np.ndarray]], items: list, chunks: int
) -> tuple[dict, dict]:
    """Seconds per method per chunk of ``items`` and each method's embeddings of all items.

    The methods take turns chunk by chunk, the order rotating, so each ratio compares runs a few
    seconds apart: on a shared CPU that is the only comparison that means anything.
    """
    times: dict[str, list[float]] = {name: [] for name in methods}
    parts: dict[str, list[np.ndarray]] = {name: [] for name in methods}
    names = list(methods)
    size = -(-len(items) // chunks)
    for c, start in enumerate(range(0, len(items), size)):
        chunk = items[start : start + size]
        shift = c % len(names)
        for name in names[shift:] + names[:shift]:
            begin = time.perf_counter()
            parts[name].append(methods[name](chunk))
            times[name].append(time.perf_counter() - begin)
    return times, {name: np.concatenate(p) for name, p in parts.items()}


def report(
    kind: str,
    n: int,
    times: dict,
    outputs: dict,
    reference: str,
    queries: np.ndarray,
) -> str:
    """One table: throughput, speed-up (median of per-round ratios) and equivalence to fp32."""
    ref = outputs[reference]
    rows = []
    for name, secs in times.items():
        ratios = [b / s for b, s in zip(times[reference], secs, strict=True)]
        cos = np.sum(outputs[name] * ref, axis=1)
        top_ref = top_k(queries, ref, 5)
        top_new = top_k(queries, outputs[name], 5)
        rows.append(
            [
                name,
                n,
                f"{sum(secs):.1f}",
                f"{n / sum(secs):.1f}",
                f"{median(ratios):.2f}x",
                f"{cos.min():.5f}",
                f"{overlap(top_ref, top_new):.3f}",
            ]
        )
    columns = [kind, "n", "s", f"{kind}/s", "speed-up", "min cos to fp32", "top-5 overlap"]
    return table(columns, rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="random:ViT-B-16")
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--texts", type=int, default=96)
    ap.add_argument("--chunks", type=int, default=3, help="turns the methods take (ratios per turn)")
    ap.add_argument("--batch-size", default="default", help="comma list of image batches for the fast rows")
    ap.add_argument("--text-batch", type=int, default=None, help="text batch (default: the encoder's)")
    ap.add_argument("--workers", default="auto", help="comma list of decode workers for the fast rows")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--data", type=Path, default=None, help="folder for the JPEGs (default: a temp dir)")
    ap.add_argument("--skip-texts", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        paths = make_photos(args.data or Path(tmp), args.images, seed=0)
        captions = make_captions(args.texts, seed=0)
        lm = create_model_and_transforms(args.model, device="cpu")
        fp32, auto = Encoder(lm, precision="fp32"), Encoder(lm, precision="auto")
        batches = [IMAGE_BATCH if b == "default" else int(b) for b in args.batch_size.split(",")]
        txt_kw = {} if args.text_batch is None else {"batch_size": args.text_batch}
        workers = [decode_workers() if w == "auto" else int(w) for w in args.workers.split(",")]
        readme = "README loop (fp32, batch 1)"

        image_methods: dict[str, Callable[[list], np.ndarray]] = {
            readme: lambda chunk: readme_images(lm, chunk),
            f"ours fp32 (batch {batches[0]}, workers {workers[0]})": lambda chunk: fp32.encode_image_files(
                chunk, batch_size=batches[0], workers=workers[0]
            )[0],
        }
        for b in batches:
            for w in workers:
                name = f"ours {auto.precision} (batch {b}, workers {w})"
                name += " [default]" if (b, w) == (IMAGE_BATCH, decode_workers()) else ""
                image_methods[name] = lambda chunk, b=b, w=w: auto.encode_image_files(
                    chunk, batch_size=b, workers=w
                )[0]
        text_methods: dict[str, Callable[[list], np.ndarray]] = {
            readme: lambda chunk: readme_texts(lm, chunk),
            "ours fp32": lambda chunk: fp32.encode_texts(chunk, **txt_kw),
            f"ours {auto.precision} [default]": lambda chunk: auto.encode_texts(chunk, **txt_kw),
        }
        # Warm-up: first calls build oneDNN kernels for each precision; time none of that.
        readme_images(lm, paths[:1]), readme_texts(lm, captions[:1])
        auto.encode_texts(captions[:8]), auto.encode_pil([Image.open(paths[0]).convert("RGB")])

        img_times, img_out = run_interleaved(image_methods, paths, args.chunks)
        out = [header(f"Encoding images and texts, {args.model}")]
        # Image table: texts (fp32 README embeddings) retrieve images; text table: the reverse.
        text_queries = readme_texts(lm, captions[:64])
        out.append(report("images", len(paths), img_times, img_out, readme, text_queries))
        if not args.skip_texts:
            txt_times, txt_out = run_interleaved(text_methods, captions, args.chunks)
            out += ["", report("texts", len(captions), txt_times, txt_out, readme, img_out[readme])]
        out.append(
            f"\nspeed-up: median over {args.chunks} turns of (README loop seconds / method seconds) on the "
            "same chunk, methods taking turns; min cos: lowest cosine of a row to the README loop's "
            "fp32 embedding; top-5 overlap: texts retrieving images (image table) and images "
            "retrieving texts (text table), against the same retrieval over fp32 embeddings."
        )
        print("\n".join(out))


if __name__ == "__main__":
    main()
