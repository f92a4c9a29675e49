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


LABEL_WORDS = ["新款", "限量", "爆款"]
FILLER = ["红色", "蓝色", "绿色", "黑色", "白色", "连衣裙", "衬衫", "裤子", "半身裙", "帽子", "今日", "穿搭"]
FILLER += ["分享", "日常", "通勤", "周末", "约会", "显瘦", "百搭", "春天", "夏天", "秋天"]


def labelled_corpus(*, n: int = 300, dim: int = 32, seed: int = 0) -> CorpusData:
    """Items with three 0/1 labels for the supervised studies, each with a known answer:

    - ``words``: 1 exactly when the caption holds one of ``LABEL_WORDS`` (a linear function of its words);
    - ``bright``: 1 exactly when an image property (a scalar the image vector carries along one
      direction, above the noise) is positive;
    - ``noise``: a coin flip, independent of everything.
    The caption vectors are noise (no model encodes the captions here)."""
    rng = np.random.default_rng(seed)
    words = rng.random(n) < 0.5
    captions = []
    for has in words:
        tokens = list(rng.choice(FILLER, size=int(rng.integers(3, 6)), replace=False))
        if has:
            tokens.insert(int(rng.integers(len(tokens) + 1)), str(rng.choice(LABEL_WORDS)))
        captions.append(" ".join(tokens))
    brightness = rng.normal(size=n)
    direction = _unit(rng.normal(size=(1, dim)))[0]
    image = _unit(rng.normal(size=(n, dim)) / np.sqrt(dim) + 2.0 * brightness[:, None] * direction)
    return CorpusData(
        name="labelled",
        ids=[f"l{i:04d}" for i in range(n)],
        captions=captions,
        image_paths=[None] * n,
        times=[None] * n,
        attributes={
            "words": [int(w) for w in words],
            "bright": [int(b > 0) for b in brightness],
            "noise": [int(x) for x in rng.integers(0, 2, size=n)],
        },
        image_vectors=image,
        image_mask=np.ones(n, dtype=bool),
        text_vectors=_unit(rng.normal(size=(n, dim))),
        text_mask=np.ones(n, dtype=bool),
        model_id="synthetic",
    )


def labelled_series(*, periods: int = 200, per: int = 4, dim: int = 16, seed: int = 0) -> CorpusData:
    """Items over integer days. ``next``: a day is 1 exactly when the previous day's captions hold
    ``LABEL_WORDS[0]`` (a deterministic function of words, one period back); ``noise``: a coin flip per
    day. The caption vectors are noise."""
    rng = np.random.default_rng(seed)
    flag = rng.random(periods) < 0.5
    coin = rng.integers(0, 2, size=periods)
    n = periods * per
    days = [d for d in range(periods) for _ in range(per)]
    captions = [
        " ".join(list(rng.choice(FILLER, size=3, replace=False)) + ([LABEL_WORDS[0]] if flag[d] else []))
        for d in days
    ]
    return CorpusData(
        name="series",
        ids=[f"s{i:05d}" for i in range(n)],
        captions=captions,
        image_paths=[None] * n,
        times=days,
        attributes={
            "next": [int(flag[d - 1]) if d else 0 for d in days],
            "noise": [int(coin[d]) for d in days],
        },
        text_vectors=_unit(rng.normal(size=(n, dim))),
        text_mask=np.ones(n, dtype=bool),
        model_id="synthetic",
    )
