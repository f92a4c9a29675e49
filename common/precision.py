"""The one precision policy: what ``auto|fp32|bf16|fp16`` means for encoding and for training.

- ``fp32``: no autocast.
- ``bf16``: bf16 autocast (CPU or CUDA).
- ``fp16``: fp16 autocast; training adds a GradScaler on CUDA.
- ``auto``: fp16 on CUDA; on a CPU bf16 where it has native bf16 (AVX-512 BF16 or AMX) *and* a
  bf16 matrix product measured here runs at least ``BF16_MIN_GAIN`` times the fp32 one
  (``cpu_prefers_bf16``, the rule in ``common.hardware.bf16_pays``), else fp32. ``amp`` ("mixed
  precision", training's old word) means the same.

``cpu_supports_bf16`` and ``cpu_supports_vnni`` are ``common.hardware``'s, named here too.

The words themselves (``PRECISIONS``, ``ALIASES``) live in ``common.vocabulary``.
"""

from __future__ import annotations

import contextlib
import functools

import torch

from common.errors import TuwenError
from common.hardware import PROBE_SHAPE, best_seconds, bf16_pays, cpu_supports_bf16, cpu_supports_vnni
from common.vocabulary import PRECISIONS, canonical_precision

__all__ = [
    "autocast",
    "bf16_gemm_gain",
    "cpu_prefers_bf16",
    "cpu_supports_bf16",
    "cpu_supports_vnni",
    "resolve_precision",
]


@functools.cache
def cpu_prefers_bf16() -> bool:
    """``auto``'s choice for PyTorch on this CPU (``common.hardware.bf16_pays``, measured once per
    process, about 0.3 s: the best of three bf16 and fp32 products of a tower's shape)."""
    return bf16_pays(bf16_gemm_gain)


def bf16_gemm_gain(shape: tuple[int, int, int] = PROBE_SHAPE, repeats: int = 3) -> float:
    """fp32 time over bf16 time of one ``(m, k) @ (k, n)`` PyTorch product here (best of ``repeats``)."""
    m, k, n = shape
    best = {}
    g = torch.Generator().manual_seed(0)  # a generator of its own: the caller's random state stays as it was
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(m, k, generator=g).to(dtype), torch.randn(k, n, generator=g).to(dtype)
        best[dtype] = best_seconds(lambda a=a, b=b: torch.mm(a, b), repeats)
    return best[torch.float32] / best[torch.bfloat16]


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``precision`` (or its alias) made concrete for ``device``: one of fp32, bf16, fp16."""
    precision = canonical_precision(precision)
    if precision not in PRECISIONS:
        raise TuwenError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    device_type = torch.device(device).type
    if device_type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise TuwenError("precision bf16: this GPU has no bf16 support; use fp16")
    if precision != "auto":
        return precision
    if device_type == "cuda":
        return "fp16"
    return "bf16" if cpu_prefers_bf16() else "fp32"


def autocast(precision: str, device: torch.device | str):
    """The autocast context for a resolved precision (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(torch.device(device).type, dtype=dtype)
