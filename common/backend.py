"""The one policy for which inference backend runs the towers, and at which precision.

- ``torch``: PyTorch, as trained (autocast precisions of ``common.precision``).
- ``onnx``: ONNX Runtime on the exported towers (fp32; int8 through NNCF).
- ``openvino``: OpenVINO on the converted towers (fp32; bf16 where the CPU has it; int8 through NNCF).
- ``auto``: OpenVINO on x86 CPUs when installed, else ONNX Runtime when installed on a CPU; on CUDA
  PyTorch, unless ONNX Runtime's CUDA provider is there. Measured in ``bench/bench_encode.py``.

Precision under ``auto`` stays equal to fp32 for texts (a text query is one short call, and the bench
corpus's top-5 overlap must stay >= 0.98 for a default); images follow ``common.precision`` on
PyTorch and run fp32 on the exported backends unless the CPU has native bf16.

The words (``BACKENDS``, ``ENCODE_PRECISIONS``) live in ``common.vocabulary``.
"""

from __future__ import annotations

import importlib.util
import platform

from common.errors import TuwenError
from common.vocabulary import BACKENDS, ENCODE_PRECISIONS, EXPORT_PRECISIONS, canonical_precision

_MODULES = {"torch": "torch", "onnx": "onnxruntime", "openvino": "openvino"}
X86 = {"x86_64", "amd64", "i386", "i686"}


def installed(backend: str) -> bool:
    return importlib.util.find_spec(_MODULES[backend]) is not None


def onnx_cuda_available() -> bool:
    if not installed("onnx"):
        return False
    import onnxruntime  # optional (tuwen[backends]), and heavy: only when asked about CUDA

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def resolve_backend(backend: str | None, *, device_type: str) -> str:
    """``backend`` made concrete for a device type (``cpu`` or ``cuda``); a clear error if unusable."""
    backend = backend or "auto"
    if backend not in BACKENDS:
        raise TuwenError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if backend != "auto":
        if not installed(backend):
            raise TuwenError(f"backend {backend}: the {_MODULES[backend]} package is not installed")
        if backend == "openvino" and device_type != "cpu":
            raise TuwenError(f"backend openvino runs on the CPU here, not on {device_type}")
        return backend
    if device_type == "cuda":
        return "onnx" if onnx_cuda_available() else "torch"
    if platform.machine().lower() in X86 and installed("openvino"):
        return "openvino"
    return "onnx" if installed("onnx") else "torch"


def resolve_backend_precision(
    backend: str, precision: str | None, *, cpu_bf16: bool, prefer_bf16: bool | None = None
) -> tuple[str, str]:
    """(image precision, text precision) for a resolved backend; ``cpu_bf16``: the CPU has native
    bf16; ``prefer_bf16``: ``auto`` picks bf16 for images (default: ``cpu_bf16``; the caller passes
    OpenVINO's measured answer, ``models.backends.runtime_towers.openvino_prefers_bf16()``)."""
    precision = canonical_precision(precision)
    if precision not in ENCODE_PRECISIONS:
        raise TuwenError(f"precision must be one of {', '.join(ENCODE_PRECISIONS)}, not {precision!r}")
    if backend == "torch":
        if precision == "int8":
            raise TuwenError(
                "precision int8 needs --backend openvino or onnx (NNCF post-training quantization)"
            )
        return precision, precision  # common.precision resolves torch's own vocabulary
    allowed = {"onnx": EXPORT_PRECISIONS, "openvino": ("fp32", "bf16", "int8")}[backend]
    if precision == "auto":
        prefer = cpu_bf16 if prefer_bf16 is None else (prefer_bf16 and cpu_bf16)
        return ("bf16" if prefer and backend == "openvino" else "fp32"), "fp32"
    if precision not in allowed:
        raise TuwenError(f"backend {backend} supports precision {', '.join(allowed)}, not {precision}")
    if precision == "bf16" and not cpu_bf16:  # OpenVINO would silently run fp32
        raise TuwenError(
            "precision bf16: this CPU has no native bf16 (AVX-512 BF16 or AMX); use fp32 or int8"
        )
    return precision, precision
