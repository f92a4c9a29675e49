"""What every study takes in: one corpus's items and their embeddings, as plain arrays.

Studies never read the store or the index files themselves (``analysis.load`` does, through
``indexer``), so each step can be tested on arrays a test makes, as BERTopic's steps are.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class CorpusData:
    """Items in corpus order. Vectors are L2-normalised; a row whose mask is False is zero."""

    name: str
    ids: list[str]
    captions: list[str | None]
    image_paths: list[str | None]
    times: list[str | int | None]  # as stored: ISO date/datetime strings or integers (day numbers)
    attributes: dict[str, list] = field(default_factory=dict)  # field -> one value (or None) per item
    image_vectors: np.ndarray | None = None  # (n, d) float32, None when the corpus has no images
    image_mask: np.ndarray | None = None  # (n,) bool: the item has a usable image embedding
    text_vectors: np.ndarray | None = None
    text_mask: np.ndarray | None = None
    model_id: str = ""

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def has_images(self) -> bool:
        return self.image_vectors is not None and self.image_mask is not None and bool(self.image_mask.any())

    @property
    def has_texts(self) -> bool:
        return self.text_vectors is not None and self.text_mask is not None and bool(self.text_mask.any())
