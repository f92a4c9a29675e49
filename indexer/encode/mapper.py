"""Mapper: the encoding step, built from a model spec and plain (picklable) arguments.

``EncodeMapper(spec, precision=..., backend=..., device=..., weights_dir=..., batch_size=...,
workers=...)`` loads the model once (``models.encoder.open_encoder``, on the backend of
``common.backend``; converted towers cached in ``cache_dir``). Its
``kwargs`` are exactly the arguments it was built from, so a distributed runner builds one per
worker with ``EncodeMapper(**mapper.kwargs)`` and calls ``encode_sources`` on each batch of rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.runtime import decode_workers, encode_threads
from common.settings import Settings
from indexer.encode.options import DEFAULT_BATCH, EncodeOptions
from indexer.encode.reader import EncodeSet, Kind
from models.backends import Calibration, sample_calibration
from models.encoder import open_encoder


class EncodeMapper:
    """Image paths or captions in, L2-normalised float32 vectors and per-row errors out."""

    def __init__(
        self,
        spec: str,
        *,
        precision: str = "auto",
        backend: str | None = "torch",
        cache_dir: str | Path | None = None,
        calibration: Calibration | None = None,
        device: str | None = None,
        weights_dir: str | Path | None = None,
        batch_size: int = DEFAULT_BATCH,
        workers: int | None = None,
        progress: bool = False,
        job_images: int | None = None,
    ):
        self.kwargs: dict[str, Any] = {
            "spec": spec,
            "precision": precision,
            "backend": backend,
            "cache_dir": None if cache_dir is None else str(cache_dir),
            "calibration": calibration,
            "device": None if device is None else str(device),
            "weights_dir": None if weights_dir is None else str(weights_dir),
            "batch_size": batch_size,
            "workers": workers,
            "progress": progress,
            "job_images": job_images,
        }
        self.encoder = open_encoder(
            spec,
            device=self.kwargs["device"],
            weights_dir=weights_dir,
            precision=precision,
            backend="auto" if backend is None else backend,  # None asks for auto here, as it always did
            cache_dir=cache_dir,
            calibration=calibration,
            threads=encode_threads(decode_workers(workers)),
            job_images=job_images,
            bulk=True,
        )
        self.batch_size, self.workers, self.progress = batch_size, decode_workers(workers), progress

    @classmethod
    def for_sets(
        cls,
        sets: Sequence[EncodeSet],
        *,
        settings: Settings,
        options: EncodeOptions,
    ) -> EncodeMapper:
        """The mapper a command builds for ``sets`` with its ``options``: the settings' device,
        weights folder, converted-model cache and default backend; int8 calibrated on the images and
        captions of ``sets``."""
        return cls(
            options.model,
            precision=options.precision,
            backend=options.backend or settings.backend,
            cache_dir=settings.converted_dir,
            calibration=int8_calibration(sets) if options.precision == "int8" else None,
            device=settings.device,
            weights_dir=settings.weights_dir,
            batch_size=options.batch_size,
            workers=options.workers,
            progress=options.progress,
            job_images=sum(len(s.rows) for s in sets if s.kind == "image"),
        )

    def encode(self, s: EncodeSet) -> tuple[np.ndarray, list[str]]:
        """Vectors ``(len(s.rows), d)`` in row order, and per row an error ("" when fine)."""
        return self.encode_sources(s.kind, s.sources)

    def encode_sources(self, kind: Kind, sources: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        if kind == "text":
            vectors = self.encoder.encode_texts(sources, batch_size=self.batch_size, progress=self.progress)
            return vectors, [""] * len(sources)
        if kind == "image":
            return self.encoder.encode_image_files(
                sources, batch_size=self.batch_size, workers=self.workers, progress=self.progress
            )
        raise ValueError(f"unknown kind {kind!r}: 'image' or 'text'")

    def describe(self) -> str:
        e, loaded = self.encoder, self.encoder.loaded
        return (
            f"model {loaded.spec} ({loaded.arch.name}, {loaded.model_id}) on {loaded.device}, {e.describe()}"
        )

    def model_fields(self) -> dict[str, Any]:
        """What a manifest records about the model that made the vectors."""
        e, loaded = self.encoder, self.encoder.loaded
        return {
            "model_spec": loaded.spec,
            "model_id": loaded.model_id,
            "arch": loaded.arch.name,
            "embed_dim": loaded.embed_dim,
            "precision": e.precision,
            "text_precision": e.text_precision,
        }


def int8_calibration(sets: Sequence[EncodeSet]) -> Calibration:
    """int8's calibration sample: the images and captions of the sets about to be encoded."""
    images = [src for s in sets if s.kind == "image" for src in s.sources]
    texts = [src for s in sets if s.kind == "text" for src in s.sources]
    return sample_calibration(image_paths=images, texts=texts)
