"""What every study takes in: one corpus's items and their embeddings, as plain arrays.

Studies never read the store or the index files themselves (``analysis.load`` does, through
``indexer``), so each step can be tested on arrays a test makes, as BERTopic's steps are.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from common.errors import TuwenError


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
    # The mask modality (optional): the embedding of each image with its background blanked by the
    # item's segmentation mask, and the share of the frame that mask covers (NaN where unknown).
    mask_vectors: np.ndarray | None = None
    mask_mask: np.ndarray | None = None
    mask_area: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def has_images(self) -> bool:
        return self.image_vectors is not None and self.image_mask is not None and bool(self.image_mask.any())

    @property
    def has_texts(self) -> bool:
        return self.text_vectors is not None and self.text_mask is not None and bool(self.text_mask.any())

    @property
    def has_masks(self) -> bool:
        return self.mask_vectors is not None and self.mask_mask is not None and bool(self.mask_mask.any())

    def subset(self, rows: np.ndarray) -> CorpusData:
        """The items at positions ``rows`` (in that order), every column cut alike."""
        rows = np.asarray(rows, dtype=int)

        def cut(array: np.ndarray | None) -> np.ndarray | None:
            return None if array is None else array[rows]

        return replace(
            self,
            ids=[self.ids[i] for i in rows],
            captions=[self.captions[i] for i in rows],
            image_paths=[self.image_paths[i] for i in rows],
            times=[self.times[i] for i in rows],
            attributes={f: [values[i] for i in rows] for f, values in self.attributes.items()},
            **{
                name: cut(getattr(self, name))
                for name in ("image_vectors", "image_mask", "text_vectors", "text_mask")
                + ("mask_vectors", "mask_mask", "mask_area")
            },
        )


def large_masks(data: CorpusData, min_area: float | None) -> tuple[np.ndarray, str]:
    """``--min-mask-area``: which items to keep (their mask covers at least ``min_area`` of the frame;
    items with no known area are kept), and the sentence the report prints about the others."""
    if min_area is None:
        return np.ones(len(data), dtype=bool), ""
    if data.mask_area is None or np.isnan(data.mask_area).all():
        raise TuwenError(
            f"--min-mask-area: corpus {data.name} has no mask areas (give it a `mask` column and run "
            "`tuwen corpus encode` again)"
        )
    small = data.mask_area < min_area  # NaN compares False: unknown areas are kept
    note = (
        f"--min-mask-area {min_area:g}: {int(small.sum())} of {len(data)} items were dropped, their mask "
        f"covering under {min_area:.0%} of the frame."
    )
    return ~small, note


def drop_small_masks(data: CorpusData, min_area: float | None) -> tuple[CorpusData, str]:
    """``large_masks``'s items as a corpus of their own (the same object when nothing is asked)."""
    keep, note = large_masks(data, min_area)
    return (data, note) if keep.all() and not note else (data.subset(np.flatnonzero(keep)), note)
