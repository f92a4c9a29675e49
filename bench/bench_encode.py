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
    .venv/bin/python bench/bench_encode.py --images 128 --chunks 8 --workers 0 --batch-size 64
    .venv/bin/python bench/bench_encode.py --skip-texts --backends torch:auto:1,torch:auto:2  # passes at once
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
from cn_clip.clip import image_transform as cn_clip_image_transform
from cn_clip.clip import tokenize
from harness import header, median, table
from photos import make_captions, make_photos
from PIL import Image

from common.backend import resolve_backend
from common.errors import TuwenError
from common.runtime import decode_workers
from models.backends import sample_calibration
from models.encoder import IMAGE_BATCH, Encoder
from models.factory import LoadedModel, create_model_and_transforms
from models.tokens import CONTEXT_LENGTH


def readme_images(lm: LoadedModel, paths: list[Path]) -> np.ndarray:
    out = []
    preprocess = cn_clip_image_transform(lm.arch.resolution)  # the README's own transform
    with torch.no_grad():
        for p in paths:
            image = preprocess(Image.open(p)).unsqueeze(0)
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
    kind: str, n: int, times: dict, outputs: dict, speed_ref: str, exact_ref: str, queries: np.ndarray
) -> str:
    """One table: throughput, speed-up over ``speed_ref`` (median of per-turn ratios) and equivalence
    to ``exact_ref`` (PyTorch fp32 through the same pipeline): min cosine and top-5 overlap."""
    ref = outputs[exact_ref]
    top_ref = top_k(queries, ref, 5)
    rows = []
    for name, secs in times.items():
        ratios = [b / s for b, s in zip(times[speed_ref], secs, strict=True)]
        cos = np.sum(outputs[name] * ref, axis=1)
        rows.append(
            [
                name,
                n,
                f"{sum(secs):.1f}",
                f"{n / sum(secs):.1f}",
                f"{median(ratios):.2f}x",
                f"{cos.min():.5f}",
                f"{overlap(top_ref, top_k(queries, outputs[name], 5)):.3f}",
            ]
        )
    columns = [kind, "n", "s", f"{kind}/s", "speed-up", "min cos to torch fp32", "top-5 overlap"]
    return table(columns, rows)


def encoders(lm: LoadedModel, args, paths: list[Path], captions: list[str]) -> dict[str, Encoder]:
    """Every backend x precision this machine can run, ``[default]`` marking what auto picks."""
    calibration = sample_calibration(image_paths=[str(p) for p in paths], texts=captions)
    default = resolve_backend("auto", device_type="cpu")
    out = {}
    for spec in args.backends.split(","):
        backend, precision, *passes = spec.split(":")
        streams = int(passes[0]) if passes else 1
        try:
            enc = Encoder(
                lm,
                backend=backend,
                precision=precision,
                cache_dir=args.cache,
                calibration=calibration,
                threads=args.model_threads,
                echo=print,
                streams=streams,
            )
        except TuwenError as exc:
            print(f"skipped {spec}: {exc}")
            continue
        name = (
            f"{enc.backend} {enc.precision}"
            + (f"/{enc.text_precision}" if enc.text_precision != enc.precision else "")
            + (f", {streams} {'passes' if streams > 1 else 'pass'} at once" if passes else "")
        )
        out[name + (" [default]" if backend == default and precision == "auto" else "")] = enc
    return out


def decode_split(lm: LoadedModel, args, paths: list[Path]) -> str:
    """Item 4: the default backend's end-to-end image rate for decode workers x model threads,
    beside the tower alone on pixels decoded beforehand (the ceiling), methods in turns."""
    backend = resolve_backend("auto", device_type="cpu")
    pixels = torch.from_numpy(np.stack([lm.preprocess(Image.open(p).convert("RGB")) for p in paths]))
    index = {p: i for i, p in enumerate(paths)}
    methods: dict[str, Callable[[list], np.ndarray]] = {}
    for threads in (1, 2):
        enc = Encoder(lm, backend=backend, precision="auto", cache_dir=args.cache, threads=threads)
        enc.encode_texts(["热身"]), enc.encode_pil([Image.open(paths[0]).convert("RGB")] * 2)
        methods[f"tower alone, {threads} threads (pixels decoded beforehand)"] = lambda chunk, enc=enc: (
            np.concatenate(
                [
                    enc.encode_pixels(pixels[[index[p] for p in chunk[i : i + args.batch_size]]])
                    for i in range(0, len(chunk), args.batch_size)
                ]
            )
        )
        for workers in (0, 1, 2):
            methods[f"end to end, {workers} decode workers, {threads} threads"] = (
                lambda chunk, enc=enc, w=workers: enc.encode_image_files(
                    chunk, batch_size=args.batch_size, workers=w
                )[0]
            )
    times, _ = run_interleaved(methods, paths, args.chunks)
    rows = [[name, len(paths), f"{len(paths) / sum(secs):.1f}"] for name, secs in times.items()]
    return f"decode / inference split, {backend} (auto precision), batch {args.batch_size}:\n\n" + table(
        ["images", "n", "images/s"], rows
    )


DEFAULT_BACKENDS = (
    "torch:fp32,torch:auto,onnx:fp32,onnx:int8,openvino:fp32,openvino:auto,openvino:bf16,openvino:int8"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="random:ViT-B-16")
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--texts", type=int, default=96)
    ap.add_argument("--chunks", type=int, default=3, help="turns the methods take (ratios per turn)")
    ap.add_argument("--batch-size", type=int, default=IMAGE_BATCH, help="image batch")
    ap.add_argument("--workers", type=int, default=None, help="decode workers (default: the encoder's)")
    ap.add_argument("--model-threads", type=int, default=None, help="ONNX Runtime / OpenVINO threads")
    ap.add_argument(
        "--backends",
        default=DEFAULT_BACKENDS,
        help="comma list of BACKEND:PRECISION[:PASSES] (passes at once, as a bulk job runs; default 1)",
    )
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "tuwen-bench-converted")
    ap.add_argument("--data", type=Path, default=None, help="folder for the JPEGs (default: a temp dir)")
    ap.add_argument("--skip-texts", action="store_true")
    ap.add_argument("--skip-images", action="store_true")
    ap.add_argument("--split", action="store_true", help="only the decode workers x model threads table")
    args = ap.parse_args()
    if args.split:
        with tempfile.TemporaryDirectory() as tmp:
            paths = make_photos(args.data or Path(tmp), args.images, seed=0)
            lm = create_model_and_transforms(args.model, device="cpu")
            split = decode_split(lm, args, paths)  # the header's load average is the one at the end
            print(header(f"Decode / inference split, {args.model}") + "\n" + split)
        return

    with tempfile.TemporaryDirectory() as tmp:
        paths = make_photos(args.data or Path(tmp), args.images, seed=0)
        captions = make_captions(args.texts, seed=0)
        lm = create_model_and_transforms(args.model, device="cpu")
        encs = encoders(lm, args, paths, captions)
        readme = "README loop (torch fp32, batch 1)"
        exact = next(name for name, enc in encs.items() if enc.backend == "torch" and enc.precision == "fp32")
        image_methods: dict[str, Callable[[list], np.ndarray]] = {
            readme: lambda chunk: readme_images(lm, chunk)
        }
        text_methods: dict[str, Callable[[list], np.ndarray]] = {
            readme: lambda chunk: readme_texts(lm, chunk)
        }
        for name, enc in encs.items():
            image_methods[name] = lambda chunk, enc=enc: enc.encode_image_files(
                chunk, batch_size=args.batch_size, workers=args.workers
            )[0]
            text_methods[name] = lambda chunk, enc=enc: enc.encode_texts(chunk)
        # Warm-up: first calls build kernels for each precision and shape; time none of that.
        readme_images(lm, paths[:1]), readme_texts(lm, captions[:1])
        for enc in encs.values():
            enc.encode_texts(captions[:8]), enc.encode_pil([Image.open(paths[0]).convert("RGB")] * 2)

        out = []
        text_queries = readme_texts(lm, captions[:64])
        if not args.skip_images:
            img_times, img_out = run_interleaved(image_methods, paths, args.chunks)
            # Image table: texts (fp32 embeddings) retrieve images; text table: images retrieve texts.
            out.append(report("images", len(paths), img_times, img_out, readme, exact, text_queries))
        if not args.skip_texts:
            txt_times, txt_out = run_interleaved(text_methods, captions, args.chunks)
            image_queries = img_out[exact] if not args.skip_images else text_queries
            out += ["", report("texts", len(captions), txt_times, txt_out, readme, exact, image_queries)]
        out.append(
            f"\nspeed-up: median over {args.chunks} turns of (README loop seconds / method seconds) on the "
            f"same chunk, methods taking turns; image batch {args.batch_size}, decode workers "
            f"{decode_workers(args.workers)}; min cos: lowest cosine of a row to PyTorch fp32 through the "
            "same pipeline; top-5 overlap: texts retrieving images (image table) and images retrieving "
            "texts (text table), against the same retrieval over PyTorch fp32 embeddings. int8: NNCF "
            "post-training quantization calibrated on these images and captions."
        )
        # the header last: its load average is the one at the end of the run
        print(
            "\n".join([header(f"Encoding images and texts, {args.model}, every backend x precision"), *out])
        )


if __name__ == "__main__":
    main()
