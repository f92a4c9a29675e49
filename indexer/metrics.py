"""Retrieval recall as Chinese-CLIP reports it: R@1/5/10 and their mean, in percent, both ways.

Text→image: every caption is a query, its image the one correct answer. Image→text: every image is
a query, all of its captions correct (cn_clip's ``transform_ir_annotation_to_tr.py``).

Pure functions of features and ground truth, shared by ``tuwen eval`` (``training``) and
``tuwen analyze alignment`` (``analysis``), which may not import each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

TOP_K = 10  # cn_clip's prediction files hold the top 10


@dataclass
class Rankings:
    """Top-k of each query as indices into the other side, plus the ground truth as index sets."""

    t2i: np.ndarray  # [n_texts, k] image indices
    i2t: np.ndarray  # [n_images, k] text indices
    text_gold: list[set[int]]  # per text: its image index
    image_gold: list[set[int]]  # per image: its text indices


def topk(queries: np.ndarray, keys: np.ndarray, k: int, chunk: int = 2048) -> np.ndarray:
    """Indices of the ``k`` best keys per query by dot product (features are L2-normalised)."""
    k = min(k, len(keys))
    keys_t = torch.from_numpy(np.ascontiguousarray(keys, dtype=np.float32))
    out = []
    for start in range(0, len(queries), chunk):
        q = torch.from_numpy(np.ascontiguousarray(queries[start : start + chunk], dtype=np.float32))
        out.append(torch.topk(q @ keys_t.t(), k, dim=1).indices.numpy())
    return np.concatenate(out) if out else np.zeros((0, k), dtype=np.int64)


def rank(
    text_features: np.ndarray, image_features: np.ndarray, text_image: Sequence[int], *, k: int = TOP_K
) -> Rankings:
    """``text_image[t]`` is the index of text ``t``'s image among ``image_features``."""
    image_gold: list[set[int]] = [set() for _ in range(len(image_features))]
    for t, i in enumerate(text_image):
        image_gold[i].add(t)
    return Rankings(
        t2i=topk(text_features, image_features, k),
        i2t=topk(image_features, text_features, k),
        text_gold=[{i} for i in text_image],
        image_gold=image_gold,
    )


def recall(top: np.ndarray, gold: Sequence[set[int]]) -> dict[str, float]:
    """Share (percent) of queries with a correct item in the top 1, 5, 10; ``mr`` is their mean."""
    n = max(len(gold), 1)
    out = {}
    for k in (1, 5, 10):
        hits = sum(bool(gold[q] & set(top[q, :k].tolist())) for q in range(len(gold)))
        out[f"r{k}"] = 100.0 * hits / n
    out["mr"] = (out["r1"] + out["r5"] + out["r10"]) / 3
    return out


def metrics(rankings: Rankings) -> dict[str, dict[str, float]]:
    return {"t2i": recall(rankings.t2i, rankings.text_gold), "i2t": recall(rankings.i2t, rankings.image_gold)}


def chance_r5(n_texts: int, n_images: int) -> dict[str, float]:
    """Expected R@5 (percent) of a model that ranks at random."""
    t2i = 100.0 * min(1.0, 5 / max(n_images, 1))
    per_image = n_texts / max(n_images, 1)  # captions per image, each a correct answer
    miss = 1.0
    for j in range(min(5, n_texts)):  # P(no correct text among 5 random draws without replacement)
        miss *= max(0.0, (n_texts - per_image - j) / max(n_texts - j, 1))
    return {"t2i": t2i, "i2t": 100.0 * (1 - miss)}
