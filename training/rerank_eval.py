"""``tuwen eval --rerank …`` and several ``--model``: one table of recall per model (and their
ensemble) and per re-ranking (``indexer.rerank``), on one held-out split, plain ranking first.

The split is the first model's (its config.json's seed and val fraction unless given), so every
row scores the same queries. The ensemble averages the models' similarity matrices before any
re-ranking. QB-Norm's bank is drawn from the *training* side of the split, never the scored
queries: up to ``bank_size`` training images with one caption each (their captions for
text→image, the images for image→text).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from common.settings import Settings
from indexer import rerank
from indexer.metrics import TOP_K, recall
from indexer.rerank import DEFAULT_BANK_SIZE
from training.data import Pair, split_by_image
from training.evaluate import SplitFeatures, encode_with, resolve_split

DIRECTIONS = ("t2i", "i2t")


@dataclass
class Similarities:
    """One model's (or an ensemble's) similarities on the split, and against the bank."""

    t2i: np.ndarray  # (n_texts, n_images)
    bank_t2i: np.ndarray | None = None  # (n_bank, n_images): bank captions × split images
    bank_i2t: np.ndarray | None = None  # (n_bank, n_texts): bank images × split captions

    @classmethod
    def of(cls, split: SplitFeatures, bank: SplitFeatures | None) -> Similarities:
        t2i = split.text_features @ split.image_features.T
        if bank is None:
            return cls(t2i)
        return cls(
            t2i,
            bank.text_features @ split.image_features.T,
            bank.image_features @ split.text_features.T,
        )

    @classmethod
    def mean(cls, members: Sequence[Similarities]) -> Similarities:
        def avg(name):
            parts = [getattr(m, name) for m in members]
            return None if parts[0] is None else np.mean(parts, axis=0)

        return cls(avg("t2i"), avg("bank_t2i"), avg("bank_i2t"))


def bank_pairs(train_pairs: Sequence[Pair], *, size: int, seed: int) -> list[Pair]:
    """QB-Norm's bank as ``tuwen export`` draws it (``rerank.bank_sample``), from the training side."""
    rows = [(p.image_id, p.caption, p.path) for p in train_pairs]
    return [train_pairs[i] for i in rerank.bank_sample(rows, size=size, seed=seed)]


def recall_rows(sims: Similarities, text_image: Sequence[int], methods: Sequence[str]) -> dict[str, dict]:
    """``{method: {"t2i": recall, "i2t": recall}}`` of the re-rankings of ``sims``."""
    n_images = sims.t2i.shape[1]
    text_gold = [{i} for i in text_image]
    image_gold: list[set[int]] = [set() for _ in range(n_images)]
    for t, i in enumerate(text_image):
        image_gold[i].add(t)
    scores = {"t2i": sims.t2i, "i2t": sims.t2i.T}
    banks = {"t2i": sims.bank_t2i, "i2t": sims.bank_i2t}
    gold = {"t2i": text_gold, "i2t": image_gold}
    rows = {}
    for method in methods:
        rows[method] = {}
        for d in DIRECTIONS:
            stats = rerank.bank_stats_of_scores(banks[d]) if method == "qb-norm" else None
            top = rerank.top_k(rerank.rerank(scores[d], method, stats=stats), TOP_K)
            rows[method][d] = recall(top, gold[d])
    return rows


def rerank_table(
    *,
    settings: Settings,
    models: Sequence[str],
    methods: Sequence[str],
    split: str = "val",
    val_fraction: float | None = None,
    seed: int | None = None,
    precision: str = "auto",
    workers: int | None = None,
    bank_size: int = DEFAULT_BANK_SIZE,
) -> list[dict]:
    """Rows ``{"model", "method", "t2i": {r1, r5, r10, mr}, "i2t": {...}}`` for each model, then
    their ensemble when there are several, each with every method (``none`` first)."""
    chosen, drawn = resolve_split(settings, models[0], split=split, val_fraction=val_fraction, seed=seed)
    bank = None
    if "qb-norm" in methods:
        train, _ = split_by_image(drawn["pairs"], val_fraction=drawn["val_fraction"], seed=drawn["seed"])
        bank = bank_pairs(train, size=bank_size, seed=drawn["seed"]) or None
    members, text_image = [], None
    for model in models:
        features = encode_with(settings, model, chosen, precision=precision, workers=workers)
        bank_features = (
            encode_with(settings, model, bank, precision=precision, workers=workers) if bank else None
        )
        members.append(Similarities.of(features, bank_features))
        text_image = features.text_image
    named = list(zip(models, members, strict=True))
    if len(members) > 1:
        named.append(("ensemble", Similarities.mean(members)))
    table = []
    for name, sims in named:
        for method, result in recall_rows(sims, text_image, methods).items():
            table.append({"model": name, "method": method, **result})
    return table


def format_table(table: list[dict]) -> str:
    """The table as aligned text: one line per (model, method), R@1/5/10 and mean recall both ways."""
    width = max(len("model"), *(len(r["model"]) for r in table))
    header = f"{'model':<{width}}  {'method':<12}  t2i R@1   R@5  R@10    MR  |  i2t R@1   R@5  R@10    MR"
    lines = [header, "-" * len(header)]
    for r in table:
        cells = "  |  ".join(
            "    " + " ".join(f"{r[d][k]:5.1f}" for k in ("r1", "r5", "r10", "mr")) for d in DIRECTIONS
        )
        lines.append(f"{r['model']:<{width}}  {r['method']:<12}  {cells}")
    return "\n".join(lines)
