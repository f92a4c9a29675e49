"""Shared bits of the benchmark scripts: the header every table is printed under, and tables."""

from __future__ import annotations

import os
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/x.py` from the repository root
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def command() -> str:
    return " ".join(shlex.quote(a) for a in [".venv/bin/python", *sys.argv])


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_isa() -> str:
    """The instruction sets that decide a precision's speed (the CPU varies between machines)."""
    try:
        line = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("flags"))
    except (OSError, StopIteration):
        return "flags unknown"
    flags = set(line.split(":", 1)[1].split())
    names = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_bf16": "AVX512-BF16",
             "avx512_vnni": "AVX512-VNNI", "amx_bf16": "AMX-BF16", "amx_int8": "AMX-INT8"}  # fmt: skip
    has = [n for f, n in names.items() if f in flags]
    lacks = [n for f, n in names.items() if f not in flags]
    return f"has {', '.join(has) or 'none of them'}" + (f"; no {', '.join(lacks)}" if lacks else "")


def header(title: str) -> str:
    """Title, the exact command, date and machine: what RESULTS.md keeps above each table."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"### {title}\n\n"
        f"`{command()}`\n\n"
        f"{time.strftime('%Y-%m-%d %H:%M')}, {cpu_name()} ({cpu_isa()}), {cores} cores "
        f"(load average {load} at the end), {gpu}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads)\n"
    )


def table(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table; floats are printed as given (format them before)."""
    cells = [[str(c) for c in columns]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def median(values: Sequence[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
