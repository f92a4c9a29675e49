"""Both towers exported to ONNX or converted to OpenVINO IR: dynamic batch and text length, stamped.

Chinese-CLIP's own ONNX scripts fix the batch at 1 (its issue #47); here the image tower takes
``pixels (batch, 3, R, R)`` and the text tower ``tokens (batch, length)`` with both leading
dimensions dynamic, so the encoder's batching and padding trimming carry over unchanged.

Every artifact carries the model id (ONNX metadata ``tuwen.model_id``, OpenVINO ``rt_info``, and
``meta.json`` beside it): towers of one model never serve an index built by another. Where they
are cached, and how a cached folder is found, is ``models.backends.converted``'s.

int8: NNCF post-training quantization, calibrated on a sample of the corpus's own images and
captions (``Calibration``); the calibration set's digest names the folder.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from common.errors import TuwenError
from common.files import write_json_atomic
from common.vocabulary import EXPORT_FORMATS, EXPORT_PRECISIONS
from models.backends.converted import INPUTS, META, STAMP_KEY, TOWERS, Calibration, tower_file
from models.factory import LoadedModel
from models.imageio import ImageDecodeError, open_image
from models.tokens import tokenize_texts, trim_padding

OPSET = 18


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
        "text": torch.from_numpy(trim_padding(tokenize_texts(["一只猫在沙发上睡觉", "红色连衣裙"]))),
    }


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
        "files": {t: tower_file(fmt, t) for t in TOWERS},
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
            yield {name: trim_padding(tokenize_texts([text]))}
        return
    r = loaded.arch.resolution
    for path in calibration.image_paths:
        try:
            image = open_image(path, draft_size=(r, r))
        except ImageDecodeError:
            continue
        yield {name: loaded.preprocess(image)[None].astype(np.float32)}


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
