"""What this machine offers the models: a CUDA GPU, the CPU's bf16 and int8 instructions, and the
one rule for when bf16 pays.

Read from the operating system where it tells (Linux's ``/proc``), so that asking costs no PyTorch
import: a server on exported towers never loads PyTorch (840 MB of memory). Elsewhere PyTorch is
asked.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path

BF16_MIN_GAIN = 1.2  # bf16 must beat fp32 by this much on the probe to be auto's choice
PROBE_SHAPE = (8 * 197, 768, 3072)  # a ViT-B-16 MLP product for a batch of 8 images (~7 GFLOP)
_LINUX = sys.platform.startswith("linux")


def cuda_available() -> bool:
    """Whether PyTorch sees a CUDA GPU. Without an NVIDIA driver (on Linux: no
    ``/proc/driver/nvidia``) the answer is no, without importing PyTorch."""
    if _LINUX and not Path("/proc/driver/nvidia/version").exists():
        return False
    import torch  # a GPU driver is there: only PyTorch can say whether it can use it

    return torch.cuda.is_available()


@functools.cache
def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags from ``/proc/cpuinfo`` (None where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return None


def cpu_supports_bf16() -> bool:
    """Native bf16 arithmetic: AVX512-BF16 or AMX-BF16."""
    flags = cpu_flags()
    if flags is None:
        import torch  # no /proc/cpuinfo here: PyTorch's own probe

        return bool(torch.cpu._is_avx512_bf16_supported()) or bool(torch.cpu._is_amx_tile_supported())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def cpu_supports_vnni() -> bool:
    """int8 dot-product instructions (AVX-VNNI, AVX-512 VNNI or AMX-INT8).

    Without them int8 inference is emulated and runs slower than fp32 (bench/RESULTS.md, Backends).
    """
    flags = cpu_flags()
    if flags is None:
        import torch  # no /proc/cpuinfo here: PyTorch's own probe

        return bool(torch.cpu._is_vnni_supported()) or bool(torch.cpu._is_amx_tile_supported())
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})


def bf16_pays(gain: Callable[[], float]) -> bool:
    """``auto``'s rule for bf16 on a CPU: native bf16, and ``gain()`` (fp32 time over bf16 time of a
    ``PROBE_SHAPE`` product, measured on the runtime that will run the model) at least
    ``BF16_MIN_GAIN``. The instruction set alone does not tell: a Zen 4 with AVX512-BF16 ran the
    image tower 2.4x faster in bf16, a Xeon with AVX512-BF16 but no AMX at 0.6x (issue 22)."""
    return cpu_supports_bf16() and gain() >= BF16_MIN_GAIN


def best_seconds(run: Callable[[], object], repeats: int = 3, *, inner: int = 1) -> float:
    """Seconds per call of ``run``: the best of ``repeats`` timings of ``inner`` calls each, after
    one warm-up call (packing, thread pools)."""
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            run()
        best = min(best, (time.perf_counter() - start) / inner)
    return best
