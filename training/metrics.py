"""Checkpoint selection and chance levels for training; the recall metric itself is
``indexer.metrics`` (shared with ``tuwen analyze alignment``), re-exported here."""

from __future__ import annotations

from indexer.metrics import TOP_K, Rankings, chance_r5, metrics, rank, recall, topk

__all__ = [
    "TOP_K",
    "Rankings",
    "at_chance",
    "chance_r5",
    "metrics",
    "rank",
    "recall",
    "selection_score",
    "topk",
]


def selection_score(m: dict) -> float:
    """How checkpoints are ranked: R@5 text→image + R@5 image→text, as contestants select them."""
    return m["t2i"]["r5"] + m["i2t"]["r5"]


def at_chance(m: dict, *, n_texts: int, n_images: int) -> bool:
    """True when neither direction does clearly better than random ranking (within 1.5× chance,
    +2 points for tiny splits)."""
    chance = chance_r5(n_texts, n_images)
    return all(m[d]["r5"] <= max(1.5 * chance[d], chance[d] + 2.0) for d in ("t2i", "i2t")) and any(
        chance[d] < 100.0 for d in chance
    )
