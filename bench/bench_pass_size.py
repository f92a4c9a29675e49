"""Images per forward pass on the CPU: one pass (2 threads) over 64 decoded photos, whole or as
passes of 16 or of ``models.encoder.PASS_IMAGES``, methods in turns; minor page faults beside.

    .venv/bin/python bench/bench_pass_size.py --rounds 6 --precisions fp32,bf16
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import harness  # noqa: F401  (sys.path, HF_HUB_OFFLINE)
import numpy as np
import torch
from harness import header, median, table
from photos import make_photos
from PIL import Image

from models.encoder import PASS_IMAGES, Encoder
from models.factory import create_model_and_transforms


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _in_passes(enc: Encoder, pixels: torch.Tensor, size: int) -> np.ndarray:
    return np.concatenate([enc.encode_pixels(pixels[i : i + size]) for i in range(0, len(pixels), size)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="random:ViT-B-16")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=6, help="turns the methods take, order alternating")
    ap.add_argument("--precisions", default="fp32,bf16")
    args = ap.parse_args()
    lm = create_model_and_transforms(args.model, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_photos(Path(tmp), args.images, seed=0)
        pixels = torch.from_numpy(np.stack([lm.preprocess(Image.open(p).convert("RGB")) for p in paths]))
    rows = []
    for precision in args.precisions.split(","):
        enc = Encoder(lm, precision=precision, backend="torch")  # one pass on every thread
        enc.encode_pixels(pixels[:2])
        methods: dict[str, Callable[[], np.ndarray]] = {
            f"whole ({args.images})": lambda enc=enc: enc.encode_pixels(pixels),
            "passes of 16": lambda enc=enc: _in_passes(enc, pixels, 16),
            f"passes of {PASS_IMAGES} (PASS_IMAGES)": lambda enc=enc: _in_passes(enc, pixels, PASS_IMAGES),
        }
        runs: dict[str, list[tuple[float, int]]] = {name: [] for name in methods}
        names = list(methods)
        for r in range(args.rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                faults, begin = _minor_faults(), time.perf_counter()
                methods[name]()
                runs[name].append((time.perf_counter() - begin, _minor_faults() - faults))
        for name, measured in runs.items():
            rates = [args.images / s for s, _ in measured]
            faults = median([f for _, f in measured])
            rows.append(
                [
                    f"torch {precision}, {torch.get_num_threads()} threads",
                    name,
                    f"{median(rates):.2f}",
                    f"{min(rates):.1f}-{max(rates):.1f}",
                    f"{faults:,.0f}",
                ]
            )
    columns = ["encoder", "images per pass", "images/s (median)", "range", "minor faults (median)"]
    print(header(f"One pass, {args.images} decoded photos, {args.model}") + "\n" + table(columns, rows))


if __name__ == "__main__":
    main()
