"""The one precision policy: what ``auto|fp32|bf16|fp16`` means for encoding and for training.

- ``fp32``: no autocast.
- ``bf16``: bf16 autocast (CPU or CUDA).
- ``fp16``: fp16 autocast; training adds a GradScaler on CUDA.
- ``auto``: fp16 on CUDA; on a CPU bf16 where it has native bf16 (AVX-512 BF16 or AMX) *and* a
  bf16 matrix product measured here runs at least ``BF16_MIN_GAIN`` times the fp32 one
  (``cpu_prefers_bf16``), else fp32. The instruction set alone does not tell: a Zen 4 with
  AVX512-BF16 ran the image tower 2.4x faster in bf16, a Xeon with AVX512-BF16 but no AMX at 0.6x
  (bench/RESULTS.md, issue 22). ``amp`` ("mixed precision", training's old word) means the same.

The words themselves (``PRECISIONS``, ``ALIASES``) live in ``common.vocabulary``.
"""

from __future__ import annotations

import contextlib
import functools
import time

import torch

from common.errors import TuwenError
from common.vocabulary import PRECISIONS, canonical_precision


def cpu_supports_bf16() -> bool:
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(probe and probe()) or bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: 0)())


def cpu_supports_vnni() -> bool:
    """The CPU has int8 dot-product instructions (AVX-VNNI / AVX-512 VNNI, or AMX).

    Without them int8 inference is emulated and runs slower than fp32 (bench/RESULTS.md, Backends).
    """
    probe = getattr(torch.cpu, "_is_vnni_supported", None)
    return bool(probe and probe()) or bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: 0)())


BF16_MIN_GAIN = 1.2  # bf16 must beat fp32 by this much on the probe to be auto's choice
_PROBE = (8 * 197, 768, 3072)  # a ViT-B-16 MLP product for a batch of 8 images (~7 GFLOP)


@functools.cache
def cpu_prefers_bf16() -> bool:
    """``auto``'s choice on this CPU: native bf16, and faster than fp32 where it counts (measured
    once per process, about 0.3 s: the best of three bf16 and fp32 products of a tower's shape)."""
    if not cpu_supports_bf16():
        return False
    return bf16_gemm_gain() >= BF16_MIN_GAIN


def bf16_gemm_gain(shape: tuple[int, int, int] = _PROBE, repeats: int = 3) -> float:
    """fp32 time over bf16 time of one ``(m, k) @ (k, n)`` product on this CPU (best of ``repeats``)."""
    m, k, n = shape
    best = {}
    g = torch.Generator().manual_seed(0)  # a generator of its own: the caller's random state stays as it was
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(m, k, generator=g).to(dtype), torch.randn(k, n, generator=g).to(dtype)
        torch.mm(a, b)  # warm-up: packing, thread pool
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            times.append(time.perf_counter() - start)
        best[dtype] = min(times)
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
