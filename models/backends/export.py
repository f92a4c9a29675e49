"""Both towers exported to ONNX or converted to OpenVINO IR: dynamic batch and text length, stamped.

Chinese-CLIP's own ONNX scripts fix the batch at 1 (its issue #47); here the image tower takes
``pixels (batch, 3, R, R)`` and the text tower ``tokens (batch, length)`` with both leading
dimensions dynamic, so the encoder's batching and padding trimming carry over unchanged.

Every artifact carries the model id (ONNX metadata ``tuwen.model_id``, OpenVINO ``rt_info``, and
``meta.json`` beside it): towers of one model never serve an index built by another. Converted
towers are cached in ``$TUWEN_HOME/converted/<model id>/<format>-<precision>[-<calibration>]/`` and
reused; a folder appears only complete (written under a temporary name, then renamed).

int8: NNCF post-training quantization, calibrated on a sample of the corpus's own images and
captions (``Calibration``); the calibration set's digest names the folder.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from common.errors import TuwenError
from common.files import atomic_folder, write_json_atomic
from common.vocabulary import EXPORT_FORMATS, EXPORT_PRECISIONS
from models.factory import LoadedModel
from models.imageio import ImageDecodeError, open_image
from models.tokens import tokenize_texts, trim_padding

META = "meta.json"
OPSET = 18
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


class _ImageTower(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)


class _TextTower(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens)


def _examples(loaded: LoadedModel) -> dict[str, torch.Tensor]:
    """Batch 2 and 8 tokens: sizes of 0 or 1 would be specialised by the exporter."""
    r = loaded.arch.resolution
    return {
        "image": torch.zeros(2, 3, r, r),
        "text": trim_padding(tokenize_texts(["一只猫在沙发上睡觉", "红色连衣裙"])),
    }


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
        return _cached_int8(loaded, fmt=fmt, cache_dir=cache_dir)
    cached = cached_conversion(
        loaded, fmt=fmt, precision=precision, cache_dir=cache_dir, calibration=calibration
    )
    if cached is not None:
        return cached
    path = converted_path(cache_dir, loaded.model_id, fmt=fmt, precision=precision, calibration=calibration)
    (echo or (lambda _m: None))(f"converting {loaded.spec} to {fmt} {precision} in {path} (once)")
    with atomic_folder(path) as tmp:  # a stale conversion of another model id is replaced
        export_towers(loaded, fmt=fmt, out=tmp, precision=precision, calibration=calibration)
    return path


def cached_conversion(
    loaded: LoadedModel, *, fmt: str, precision: str, cache_dir: Path, calibration: Calibration | None = None
) -> Path | None:
    """The finished conversion of ``loaded`` in the cache (its meta.json names this model), else None."""
    path = converted_path(cache_dir, loaded.model_id, fmt=fmt, precision=precision, calibration=calibration)
    meta = read_meta(path)
    return path if meta is not None and meta.get("model_id") == loaded.model_id else None


def _cached_int8(loaded: LoadedModel, *, fmt: str, cache_dir: Path) -> Path:
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


def export_towers(
    loaded: LoadedModel,
    *,
    fmt: str,
    out: Path,
    precision: str = "fp32",
    calibration: Calibration | None = None,
) -> Path:
    """Write both towers of ``loaded`` to ``out`` in ``fmt`` (``onnx`` or ``openvino``) with meta.json."""
    if fmt not in EXPORT_FORMATS:
        raise TuwenError(f"format must be one of {', '.join(EXPORT_FORMATS)}, not {fmt!r}")
    if precision not in EXPORT_PRECISIONS:
        raise TuwenError(f"exported towers are fp32 or int8, not {precision} (bf16 is a runtime setting)")
    if precision == "int8" and calibration is None:
        raise TuwenError(
            "int8 needs calibration images and captions from a corpus (run `tuwen ingest` first)"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = loaded.model.float().eval()
    started = time.time()
    for tower in TOWERS:
        module = (_ImageTower(model) if tower == "image" else _TextTower(model)).eval()
        writer = _write_onnx if fmt == "onnx" else _write_openvino
        writer(module, tower, loaded, out, calibration if precision == "int8" else None)
    meta = {
        "model_id": loaded.model_id,
        "model_spec": loaded.spec,
        "arch": loaded.arch.name,
        "embed_dim": loaded.embed_dim,
        "resolution": loaded.arch.resolution,
        "format": fmt,
        "precision": precision,
        "calibration": _describe(calibration) if precision == "int8" else None,
        "files": {t: _tower_file(fmt, t) for t in TOWERS},
        "seconds": round(time.time() - started, 1),
    }
    write_json_atomic(out / META, meta)  # last: an ``out`` with meta.json is complete
    return out


def _describe(calibration: Calibration | None) -> dict | None:
    if calibration is None:
        return None
    return {
        "digest": calibration.digest(),
        "images": len(calibration.image_paths),
        "texts": len(calibration.texts),
    }


def _tower_file(fmt: str, tower: str) -> str:
    return f"{tower}.onnx" if fmt == "onnx" else f"{tower}.xml"


def _write_onnx(
    module: torch.nn.Module, tower: str, loaded: LoadedModel, out: Path, calibration: Calibration | None
) -> None:
    import onnx  # optional (tuwen[backends]): only when exporting to ONNX

    name = INPUTS[tower]
    batch = torch.export.Dim("batch", min=1, max=4096)
    dims = {0: batch} if tower == "image" else {0: batch, 1: torch.export.Dim("length", min=1, max=52)}
    with torch.inference_mode(False), torch.no_grad():
        program = torch.onnx.export(
            module,
            (_examples(loaded)[tower],),
            input_names=[name],
            output_names=["features"],
            opset_version=OPSET,
            dynamo=True,
            dynamic_shapes={name: dims},
            verbose=False,
        )
    proto = program.model_proto
    if calibration is not None:
        proto = _quantize(proto, tower, loaded, calibration)
    onnx.helper.set_model_props(proto, {STAMP_KEY: loaded.model_id, "tuwen.tower": tower})
    onnx.save_model(proto, str(out / f"{tower}.onnx"), save_as_external_data=_large(proto))


def _large(proto) -> bool:
    """Protobuf files stop at 2 GB: bigger models (ViT-H-14) keep their weights beside the graph."""
    return proto.ByteSize() > 1_800_000_000


def _write_openvino(
    module: torch.nn.Module, tower: str, loaded: LoadedModel, out: Path, calibration: Calibration | None
) -> None:
    import openvino as ov  # optional (tuwen[backends]): only when converting to OpenVINO

    example = _examples(loaded)[tower]
    shape = ov.PartialShape([-1, *example.shape[1:]] if tower == "image" else [-1, -1])
    with torch.inference_mode(False), torch.no_grad():
        converted = ov.convert_model(
            module, example_input=example, input=[(shape, ov.Type.f32 if tower == "image" else ov.Type.i64)]
        )
    converted.inputs[0].get_tensor().set_names({INPUTS[tower]})
    if calibration is not None:
        converted = _quantize(converted, tower, loaded, calibration)
    converted.set_rt_info(loaded.model_id, ["tuwen", "model_id"])
    ov.save_model(converted, out / f"{tower}.xml", compress_to_fp16=False)  # fp16 weights drift


def calibration_samples(tower: str, loaded: LoadedModel, calibration: Calibration) -> Iterator[dict]:
    """One input per sample (batch 1), as the towers see them at encode time."""
    name = INPUTS[tower]
    if tower == "text":
        for text in calibration.texts:
            yield {name: trim_padding(tokenize_texts([text])).numpy()}
        return
    r = loaded.arch.resolution
    for path in calibration.image_paths:
        try:
            image = open_image(path, draft_size=(r, r))
        except ImageDecodeError:
            continue
        yield {name: loaded.preprocess(image).unsqueeze(0).numpy().astype(np.float32)}


def _quantize(model, tower: str, loaded: LoadedModel, calibration: Calibration):
    import nncf  # optional (tuwen[backends]) and slow to import: only for int8

    samples = list(calibration_samples(tower, loaded, calibration))
    if not samples:
        raise TuwenError(f"int8 calibration: no usable {tower} samples in the corpus")
    return nncf.quantize(
        model,
        nncf.Dataset(samples),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(samples),
    )
