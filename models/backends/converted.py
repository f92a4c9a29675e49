"""Where converted towers are cached and how a finished conversion is found, without PyTorch.

Converted towers live in ``$TUWEN_HOME/converted/<model id>/<format>-<precision>[-<calibration>]/``
with a ``meta.json`` naming the model they were made from; a folder appears only complete (written
under a temporary name, then renamed). ``models.backends.ensure_converted`` converts
(``models.backends.export``, which needs PyTorch) only when nothing is cached.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import TuwenError
from models.factory import LoadedModel

META = "meta.json"
STAMP_KEY = "tuwen.model_id"
TOWERS = ("image", "text")
INPUTS = {"image": "pixels", "text": "tokens"}


@dataclass(frozen=True)
class Calibration:
    """What int8 quantization calibrates on: some of the corpus's image files and captions."""

    image_paths: tuple[str, ...] = field(default_factory=tuple)
    texts: tuple[str, ...] = field(default_factory=tuple)

    def digest(self) -> str:
        h = hashlib.sha256()
        for item in (*self.image_paths, "\0", *self.texts):
            h.update(item.encode("utf-8", "surrogatepass") + b"\n")
        return h.hexdigest()[:10]


CALIBRATION_IMAGES = 128  # NNCF's default subset is 300; 128 images already fix the ranges here
CALIBRATION_TEXTS = 256


def sample_calibration(
    *,
    image_paths: list[str],
    texts: list[str],
    max_images: int = CALIBRATION_IMAGES,
    max_texts: int = CALIBRATION_TEXTS,
) -> Calibration:
    """An evenly spaced sample of a corpus's images and captions (deterministic, so cacheable)."""

    def spaced(items: list[str], n: int) -> tuple[str, ...]:
        if len(items) <= n:
            return tuple(items)
        return tuple(items[round(i * (len(items) - 1) / (n - 1))] for i in range(n))

    return Calibration(
        image_paths=spaced([str(p) for p in image_paths], max_images), texts=spaced(texts, max_texts)
    )


def _safe(model_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@-]+", "_", model_id)


def converted_path(
    cache_dir: Path, model_id: str, *, fmt: str, precision: str, calibration: Calibration | None
) -> Path:
    name = f"{fmt}-{precision}"
    if precision == "int8":
        name += f"-{calibration.digest() if calibration else 'any'}"
    return Path(cache_dir) / _safe(model_id) / name


def read_meta(folder: Path) -> dict | None:
    try:
        return json.loads((Path(folder) / META).read_text())
    except (OSError, ValueError):
        return None


def check_stamp(folder: Path, model_id: str) -> dict:
    """The folder's meta.json, after checking it was made from the model ``model_id``."""
    meta = read_meta(folder)
    if meta is None:
        raise TuwenError(f"{folder}: no readable {META}; export the model again (tuwen export-model)")
    if meta.get("model_id") != model_id:
        raise TuwenError(
            f"{folder} holds towers of model {meta.get('model_id')}, not {model_id}: "
            "export this model (tuwen export-model --model SPEC)"
        )
    return meta


def cached_conversion(
    loaded: LoadedModel, *, fmt: str, precision: str, cache_dir: Path, calibration: Calibration | None = None
) -> Path | None:
    """The finished conversion of ``loaded`` in the cache (its meta.json names this model), else None."""
    path = converted_path(cache_dir, loaded.model_id, fmt=fmt, precision=precision, calibration=calibration)
    return path if is_conversion_of(path, loaded.model_id) else None


def is_conversion_of(folder: Path, model_id: str) -> bool:
    """``folder`` holds finished towers of the model ``model_id`` (its meta.json, written last, says so)."""
    meta = read_meta(folder)
    return meta is not None and meta.get("model_id") == model_id


def cached_int8(loaded: LoadedModel, *, fmt: str, cache_dir: Path) -> Path:
    """The newest int8 conversion of this model, whatever corpus calibrated it (query encoding)."""
    found = sorted(
        (Path(cache_dir) / _safe(loaded.model_id)).glob(f"{fmt}-int8-*/{META}"),
        key=lambda p: p.stat().st_mtime,
    )
    if not found:
        raise TuwenError(
            f"no int8 {fmt} towers of {loaded.model_id} yet: int8 calibrates on a corpus, so run "
            f"`tuwen index --backend {fmt} --precision int8` or `tuwen export-model --format {fmt} "
            "--precision int8` after `tuwen ingest` first"
        )
    return found[-1].parent


def tower_file(fmt: str, tower: str) -> str:
    return f"{tower}.onnx" if fmt == "onnx" else f"{tower}.xml"
