"""The one precision policy: what ``auto|fp32|bf16|fp16`` means for encoding and for training.

- ``fp32``: no autocast.
- ``bf16``: bf16 autocast (CPU or CUDA).
- ``fp16``: fp16 autocast; training adds a GradScaler on CUDA.
- ``auto``: fp16 on CUDA, bf16 on CPUs with native bf16 (AVX-512 BF16 or AMX; about 3x fp32 in
  ``bench/bench_encode.py``), else fp32. ``amp`` ("mixed precision", training's old word) means
  the same.

The words themselves (``PRECISIONS``, ``ALIASES``) live in ``common.vocabulary``.
"""

from __future__ import annotations

import contextlib

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
    return "bf16" if cpu_supports_bf16() else "fp32"


def autocast(precision: str, device: torch.device | str):
    """The autocast context for a resolved precision (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(torch.device(device).type, dtype=dtype)
