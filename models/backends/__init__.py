"""Inference backends behind one small interface: a pair of towers that map a batch to features.

``Encoder`` (``models/encoder.py``) keeps everything the backends share: image decoding and
preprocessing, sorting texts by length and trimming their padding, batching, normalisation. A
backend only runs ``encode_image(pixels (B, 3, R, R) float32)`` and ``encode_text(tokens (B, L)
int64)`` (numpy arrays or CPU tensors) and returns unnormalised ``(B, D)`` float32 features. The
choice is ``common.backend``'s.

PyTorch is imported only for the ``torch`` backend and for a conversion: a process whose exported
towers are cached runs without it (840 MB less memory for a server).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

import numpy as np

from common.backend import resolve_backend, resolve_backend_precision
from common.console import say
from common.files import atomic_folder
from common.hardware import cpu_supports_bf16, cpu_supports_vnni
from common.runtime import available_cores
from common.settings import get_settings
from common.vocabulary import canonical_precision
from models.backends.converted import (
    Calibration,
    cached_conversion,
    cached_int8,
    converted_path,
    is_conversion_of,
    sample_calibration,
)
from models.backends.runtime_towers import OnnxTowers, OpenVinoTowers, openvino_prefers_bf16
from models.factory import LoadedModel

__all__ = [
    "CONVERT_FROM_IMAGES",
    "Calibration",
    "Towers",
    "ensure_converted",
    "open_towers",
    "sample_calibration",
]

# Under ``auto``, a job that would have to convert the towers first (nothing cached for this model
# yet) and encodes fewer images than this runs on PyTorch, at the same precisions, and converts
# nothing: on a small job the conversion costs more than it saves. Break-even, ViT-B-16 on 2 cores
# (bench/RESULTS.md, issue 22): about 230 images on today's Xeon (conversion ~11 s, OpenVINO 5.6
# against PyTorch 4.4 images/s end to end), about 1,400 on the earlier EPYC (conversion 1-3 min).
# A larger job, a server and any explicit ``--backend`` convert once and keep the fastest path.
CONVERT_FROM_IMAGES = 500


class Towers(Protocol):
    backend: str
    image_precision: str
    text_precision: str
    streams: int  # image passes that may run at once from as many threads (1: one at a time)

    def encode_image(self, pixels) -> np.ndarray: ...

    def encode_text(self, tokens) -> np.ndarray: ...

    def streaming(self) -> AbstractContextManager: ...  # around calls from ``streams`` threads


def open_towers(
    loaded: LoadedModel,
    *,
    backend: str | None = "auto",
    precision: str | None = "auto",
    cache_dir: Path | None = None,
    calibration: Calibration | None = None,
    threads: int | None = None,
    echo: Callable[[str], None] | None = None,
    job_images: int | None = None,
    streams: int = 1,
) -> Towers:
    """The towers of ``loaded`` on ``backend`` at ``precision`` (converted and cached on first use).

    ``threads``: the model's intra-op threads for ONNX Runtime / OpenVINO (default: every core;
    PyTorch keeps its process-wide setting). ``calibration``: int8's sample of the corpus; without
    one, int8 uses the newest int8 conversion of this model in the cache. ``job_images``: how many
    images the job will encode (None: unknown or long-running, as a server), see
    ``CONVERT_FROM_IMAGES``. ``streams``: image passes a bulk job runs at once
    (``common.runtime.encode_streams``; ONNX Runtime runs one).
    """
    name = resolve_backend(backend, device_type=loaded.device_type)
    cache_dir = cache_dir or get_settings().converted_dir
    if _small_job_first(loaded, name, backend, precision, cache_dir, job_images):
        (echo or say)(
            f"backend auto: PyTorch for this job of {job_images} images (no {name} conversion of "
            f"{loaded.spec} cached yet, and converting pays off from about {CONVERT_FROM_IMAGES} "
            f"images; `tuwen export-model --format {name}` converts ahead)"
        )
        name = "torch"
    if name == "torch":
        resolve_backend_precision("torch", precision, cpu_bf16=False)  # refuses int8
        from models.backends.torch_towers import TorchTowers  # PyTorch: only for this backend

        return TorchTowers(loaded, precision=precision or "auto", streams=streams)
    image_precision, text_precision = _exported_precisions(loaded, name, precision, echo=echo or say)
    folder = ensure_converted(
        loaded,
        fmt=name,
        precision="int8" if image_precision == "int8" else "fp32",
        cache_dir=cache_dir,
        calibration=calibration,
        echo=echo,
    )
    threads = threads or available_cores()
    if name == "onnx":
        return OnnxTowers(
            folder, model_id=loaded.model_id, threads=threads, cuda=loaded.device_type == "cuda"
        )
    return OpenVinoTowers(
        folder,
        model_id=loaded.model_id,
        threads=threads,
        image_precision=image_precision,
        text_precision=text_precision,
        streams=streams,
    )


def _exported_precisions(
    loaded: LoadedModel, name: str, precision: str | None, *, echo: Callable[[str], None]
) -> tuple[str, str]:
    """(image, text) precisions on an exported backend; a note where int8 would be emulated."""
    # bf16 images under auto only where OpenVINO measures them faster (ONNX Runtime stays fp32)
    prefer_bf16 = canonical_precision(precision) == "auto" and name == "openvino" and openvino_prefers_bf16()
    image_precision, text_precision = resolve_backend_precision(
        name, precision, cpu_bf16=cpu_supports_bf16(), prefer_bf16=prefer_bf16
    )
    if image_precision == "int8" and loaded.device_type == "cpu" and not cpu_supports_vnni():
        echo(
            "note: this CPU has no int8 dot-product instructions (VNNI/AMX): int8 is emulated here and "
            "may be slower than fp32"
        )
    return image_precision, text_precision


def _small_job_first(
    loaded: LoadedModel,
    name: str,
    backend: str | None,
    precision: str | None,
    cache_dir: Path,
    job_images: int | None,
) -> bool:
    """``auto`` chose an exported backend for a small job whose conversion is not cached yet."""
    if (backend or "auto") != "auto" or name == "torch" or job_images is None:
        return False
    if job_images >= CONVERT_FROM_IMAGES or canonical_precision(precision) == "int8":
        return False
    return cached_conversion(loaded, fmt=name, precision="fp32", cache_dir=cache_dir) is None


def ensure_converted(
    loaded: LoadedModel,
    *,
    fmt: str,
    precision: str,
    cache_dir: Path,
    calibration: Calibration | None = None,
    echo: Callable[[str], None] | None = None,
) -> Path:
    """The cached converted towers of ``loaded`` (built on the first call); precision fp32 or int8."""
    if precision == "int8" and calibration is None:
        return cached_int8(loaded, fmt=fmt, cache_dir=cache_dir)
    cached = cached_conversion(
        loaded, fmt=fmt, precision=precision, cache_dir=cache_dir, calibration=calibration
    )
    if cached is not None:
        return cached
    path = converted_path(cache_dir, loaded.model_id, fmt=fmt, precision=precision, calibration=calibration)
    (echo or (lambda _m: None))(f"converting {loaded.spec} to {fmt} {precision} in {path} (once)")
    # PyTorch (and the exporters) load only to convert: a process that finds the towers cached
    # never imports them.
    from models.backends.export import export_towers

    # Another process (a second replica on the same home) may publish these towers while this one
    # converts: its folder is kept, as its readers may be loading it; a stale one is replaced.
    with atomic_folder(path, keep=lambda folder: is_conversion_of(folder, loaded.model_id)) as tmp:
        export_towers(loaded, fmt=fmt, out=tmp, precision=precision, calibration=calibration)
    return path
