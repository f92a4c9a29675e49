"""``tuwen export-model``: both towers as ONNX or OpenVINO IR, and int8 calibration from the store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from common.errors import TuwenError
from common.settings import Settings
from common.vocabulary import EXPORT_FORMATS, EXPORT_PRECISIONS
from indexer import store
from models.backends import Calibration, ensure_converted, sample_calibration
from models.backends.export import export_towers
from models.factory import create_model_and_transforms


def corpus_calibration(*, settings: Settings) -> Calibration:
    """A sample of the ingested corpus (candidate and training images, candidate and training captions)."""
    with store.open_store(settings.store_url) as session:
        images = [
            r.path
            for collection in (store.IMAGE_CANDIDATES, store.TRAIN_IMAGES)
            for r in store.list_images(session, collection=collection)
            if r.status == store.STATUS_OK and r.path
        ]
        texts = [
            r.caption
            for collection in (store.TEXT_CANDIDATES, store.TEXT_QUERIES)
            for r in store.list_texts(session, collection=collection)
        ]
    if not images or not texts:
        raise TuwenError(
            f"int8 calibrates on the corpus's images and captions, and the store at {settings.store_url} "
            "has none: run `tuwen ingest --root DIR` first"
        )
    return sample_calibration(image_paths=images, texts=texts)


def export_model(
    *,
    settings: Settings,
    model: str,
    fmt: str,
    precision: str = "fp32",
    out: Path | None = None,
    echo: Callable[[str], None] | None = None,
) -> Path:
    """Export ``model``'s towers; into ``out``, or into (and reused from) ``$TUWEN_HOME/converted``."""
    if fmt not in EXPORT_FORMATS:
        raise TuwenError(f"--format must be one of {', '.join(EXPORT_FORMATS)}, not {fmt!r}")
    if precision not in EXPORT_PRECISIONS:
        raise TuwenError(
            f"--precision for an export is fp32 or int8 (bf16 is chosen at run time), not {precision}"
        )
    loaded = create_model_and_transforms(model, device="cpu", weights_dir=settings.weights_dir)
    calibration = corpus_calibration(settings=settings) if precision == "int8" else None
    if out is not None:
        return export_towers(loaded, fmt=fmt, out=Path(out), precision=precision, calibration=calibration)
    return ensure_converted(
        loaded,
        fmt=fmt,
        precision=precision,
        cache_dir=settings.converted_dir,
        calibration=calibration,
        echo=echo,
    )
