"""The exported towers run by ONNX Runtime or OpenVINO (files from ``models.backends.export``)."""

from __future__ import annotations

import contextlib
import functools
import queue
from collections.abc import Callable
from pathlib import Path

import numpy as np

from common.errors import TuwenError
from common.hardware import PROBE_SHAPE, best_seconds, bf16_pays
from models.backends.converted import INPUTS, TOWERS, check_stamp


class OnnxTowers:
    backend = "onnx"
    streams = 1  # a session's intra-op threads are fixed when it is built: one pass at a time

    def __init__(self, folder: Path, *, model_id: str, threads: int, cuda: bool = False):
        import onnxruntime as ort  # optional (tuwen[backends]): only for --backend onnx

        meta = check_stamp(folder, model_id)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
        self.sessions = {
            t: ort.InferenceSession(str(Path(folder) / meta["files"][t]), options, providers=providers)
            for t in TOWERS
        }
        for tower, session in self.sessions.items():
            stamp = session.get_modelmeta().custom_metadata_map.get("tuwen.model_id")
            check_stamp_value(stamp, model_id, Path(folder) / meta["files"][tower])
        self.image_precision = self.text_precision = meta["precision"]

    def encode_image(self, pixels) -> np.ndarray:
        return self.sessions["image"].run(None, {INPUTS["image"]: np.asarray(pixels)})[0]

    def encode_text(self, tokens) -> np.ndarray:
        return self.sessions["text"].run(None, {INPUTS["text"]: np.asarray(tokens)})[0]

    def streaming(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()


class OpenVinoTowers:
    backend = "openvino"

    def __init__(
        self,
        folder: Path,
        *,
        model_id: str,
        threads: int,
        image_precision: str,
        text_precision: str,
        streams: int = 1,
    ):
        """``streams`` > 1 (a bulk job): the image tower runs that many passes at once, each on its
        share of ``threads`` (OpenVINO's throughput mode); the text tower, and every tower of a
        server (``streams`` 1), run one pass on all ``threads`` for the least latency."""
        meta = check_stamp(folder, model_id)
        self.streams = streams
        core = _openvino_core()
        self.compiled, self.requests = {}, {}
        hints = {"image": image_precision, "text": text_precision}
        for tower in TOWERS:
            model = core.read_model(Path(folder) / meta["files"][tower])
            stamp = (
                model.get_rt_info(["tuwen", "model_id"]).astype(str)
                if model.has_rt_info(["tuwen", "model_id"])
                else None
            )
            check_stamp_value(stamp, model_id, Path(folder) / meta["files"][tower])
            passes = streams if tower == "image" else 1
            config = {
                "INFERENCE_NUM_THREADS": threads,
                "PERFORMANCE_HINT": "THROUGHPUT" if passes > 1 else "LATENCY",
                # int8 models keep fp32 between their quantized layers; bf16 is a runtime hint.
                "INFERENCE_PRECISION_HINT": "bf16" if hints[tower] == "bf16" else "f32",
            }
            if passes > 1:
                config["NUM_STREAMS"] = passes
            self.compiled[tower] = core.compile_model(model, "CPU", config)
            # One infer request per pass that may run at once: a caller takes one, runs, returns it.
            self.requests[tower] = queue.SimpleQueue()
            for _ in range(passes):
                self.requests[tower].put(self.compiled[tower].create_infer_request())
        self.image_precision = "int8" if meta["precision"] == "int8" else image_precision
        self.text_precision = "int8" if meta["precision"] == "int8" else text_precision

    def _run(self, tower: str, array: np.ndarray) -> np.ndarray:
        request = self.requests[tower].get()  # waits while every request is running
        try:
            request.infer({0: array})
            return request.get_output_tensor(0).data.copy()
        finally:
            self.requests[tower].put(request)

    def streaming(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()  # each stream already has its own threads

    def encode_image(self, pixels) -> np.ndarray:
        return self._run("image", np.asarray(pixels))

    def encode_text(self, tokens) -> np.ndarray:
        return self._run("text", np.asarray(tokens))


@functools.cache
def _openvino_core():
    """One OpenVINO Core per process: each Core owns plugins and thread pools."""
    import openvino as ov  # optional (tuwen[backends]): only for --backend openvino

    return ov.Core()


@functools.cache
def openvino_prefers_bf16() -> bool:
    """``auto``'s choice of bf16 images on OpenVINO here (``common.hardware.bf16_pays``), measured
    once per process on OpenVINO's own CPU kernels: no PyTorch needed, and it is OpenVINO's speed
    that counts."""
    return bf16_pays(openvino_bf16_gain)


def openvino_bf16_gain(shape: tuple[int, int, int] = PROBE_SHAPE, repeats: int = 3) -> float:
    """fp32 time over bf16 time of one ``(m, k) @ (k, n)`` product compiled by OpenVINO's CPU plugin."""
    best = {hint: best_seconds(openvino_product(shape, hint), repeats) for hint in ("f32", "bf16")}
    return best["f32"] / best["bf16"]


def openvino_product(shape: tuple[int, int, int], hint: str) -> Callable[[], object]:
    """One ``(m, k) @ (k, n)`` product with constant weights (as a converted tower runs its
    layers), compiled for OpenVINO's CPU plugin at precision ``hint`` (``f32`` or ``bf16``) on
    every thread: a call runs it once."""
    return openvino_products(shape, hint, streams=1)[0]


def openvino_products(shape: tuple[int, int, int], hint: str, *, streams: int) -> list[Callable[[], object]]:
    """``openvino_product`` compiled for ``streams`` passes at once (one call each, from as many
    threads), the threads shared out among them, as ``OpenVinoTowers`` runs a bulk job."""
    import openvino as ov  # optional (tuwen[backends]): only for --backend openvino
    import openvino.opset13 as ops

    m, k, n = shape
    rng = np.random.default_rng(0)
    x = ops.parameter([m, k], ov.Type.f32)
    weights = ops.constant(rng.standard_normal((k, n), dtype=np.float32))
    product = ov.Model([ops.matmul(x, weights, False, False)], [x])
    config = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
    if streams > 1:
        config.update({"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": streams})
    compiled = _openvino_core().compile_model(product, "CPU", config)
    data = rng.standard_normal((m, k), dtype=np.float32)
    requests = [compiled.create_infer_request() for _ in range(streams)]
    return [lambda request=request: request.infer({0: data}) for request in requests]


def check_stamp_value(stamp: str | None, model_id: str, path: Path) -> None:
    if stamp != model_id:
        raise TuwenError(f"{path} was exported from model {stamp}, not {model_id}: export this model again")
