"""Deterministic photo-like JPEGs and captions for the encoding benchmark.

Camera photos compress and decode unlike flat synthetic drawings: smooth gradients, low-frequency
blotches, an object, and per-pixel sensor noise make a JPEG of realistic size (60-120 kB at
500x375), so decoding costs what it costs on real data.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from PIL import Image

from tuwen.demo.corpus import all_items, caption, draw_item

# Mostly the 500x375 of web photo sets; some portrait and larger ones (which exercise JPEG draft).
SIZES = [(500, 375)] * 6 + [(375, 500), (640, 480), (800, 600), (1024, 768)]
TAILS = [
    "",
    "，简约百搭",
    "，适合通勤和约会穿着",
    "，面料柔软透气，夏天穿很舒服",
    "，今年很流行的款式，性价比高",
]


def make_photos(folder: Path, n: int, *, seed: int = 0) -> list[Path]:
    """``n`` JPEGs in ``folder`` (reused when already there with the same name)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pyrng = random.Random(seed)
    items = all_items()
    paths = []
    for i in range(n):
        w, h = SIZES[i % len(SIZES)]
        path = folder / f"photo-{seed}-{i:05d}-{w}x{h}.jpg"
        paths.append(path)
        item = items[pyrng.randrange(len(items))]
        obj = draw_item(item, pyrng, size=min(w, h) * 3 // 4)  # advance the rng even when cached
        if path.is_file():
            continue
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        angle = rng.uniform(0, 2 * np.pi)
        t = (np.cos(angle) * xx / w + np.sin(angle) * yy / h + 1) / 2
        c0, c1 = rng.uniform(30, 230, 3), rng.uniform(30, 230, 3)
        img = c0 + (c1 - c0) * t[..., None]
        blotches = Image.fromarray(rng.uniform(0, 255, (6, 8, 3)).astype(np.uint8)).resize(
            (w, h), Image.BICUBIC
        )
        img = img + (np.asarray(blotches, np.float32) - 128) * 0.3
        canvas = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
        canvas.paste(obj, (int(rng.integers(0, w - obj.width + 1)), int(rng.integers(0, h - obj.height + 1))))
        noisy = np.asarray(canvas, np.float32) + rng.normal(0, 6, (h, w, 3))
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(path, "JPEG", quality=90)
    return paths


def make_captions(n: int, *, seed: int = 0) -> list[str]:
    """``n`` distinct product captions of 5 to 35 characters, like the competition's.

    Distinct, so that retrieval comparisons never hinge on the order of identical texts.
    """
    rng = random.Random(seed)
    items = all_items()
    seen: dict[str, None] = {}
    while len(seen) < n:
        text = caption(items[rng.randrange(len(items))], rng) + rng.choice(TAILS)
        seen.setdefault(text if text not in seen else f"{text}，款式{len(seen)}", None)
    return list(seen)
