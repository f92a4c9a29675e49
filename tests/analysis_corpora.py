"""Synthetic corpora with planted structure for the analysis tests (arrays, no model, no store).

Six garment types are six directions in embedding space; each item's image and caption vectors are
its garment's direction plus noise, so clusters, retrieval and trends have a known answer. The
first garment's share rises month by month over a year.
"""

from __future__ import annotations

import numpy as np

from analysis.data import CorpusData

GARMENTS = ["连衣裙", "衬衫", "T恤", "裤子", "半身裙", "帽子"]
COLOURS = ["红色", "蓝色", "绿色", "黑色"]
RISING = 0  # index of the garment whose share rises


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def planted_corpus(
    *,
    n: int = 360,
    dim: int = 32,
    noise: float = 0.35,
    seed: int = 0,
    images: bool = True,
    texts: bool = True,
) -> tuple[CorpusData, np.ndarray]:
    """(corpus, garment index per item). Times are ISO dates over 12 months of 2025."""
    rng = np.random.default_rng(seed)
    centres = _unit(rng.normal(size=(len(GARMENTS), dim)))
    months = np.sort(rng.integers(0, 12, size=n))
    garments = np.empty(n, dtype=np.int64)
    for i, m in enumerate(months):
        rising = 0.05 + 0.45 * m / 11  # 5 % in January to 50 % in December
        others = (1 - rising) / (len(GARMENTS) - 1)
        garments[i] = rng.choice(len(GARMENTS), p=[rising] + [others] * (len(GARMENTS) - 1))
    image = _unit(centres[garments] + noise * rng.normal(size=(n, dim)) / np.sqrt(dim) * 3)
    text = _unit(centres[garments] + noise * rng.normal(size=(n, dim)) / np.sqrt(dim) * 3)
    captions = [
        f"{COLOURS[rng.integers(len(COLOURS))]}{GARMENTS[g]}穿搭 {m + 1:02d}-15 #{GARMENTS[g]} #日常穿搭"
        for g, m in zip(garments, months, strict=True)
    ]
    data = CorpusData(
        name="planted",
        ids=[f"p{i:04d}" for i in range(n)],
        captions=captions if texts else [None] * n,
        image_paths=[None] * n,
        times=[f"2025-{m + 1:02d}-{1 + i % 28:02d}" for i, m in enumerate(months)],
        attributes={"likes": [int(x) for x in rng.integers(0, 500, size=n)]},
        image_vectors=image if images else None,
        image_mask=np.ones(n, dtype=bool) if images else None,
        text_vectors=text if texts else None,
        text_mask=np.ones(n, dtype=bool) if texts else None,
        model_id="synthetic",
    )
    return data, garments
