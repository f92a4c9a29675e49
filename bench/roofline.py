"""The machine's own limit for a tower: its FLOPs (counted on the model itself) over the sustained
GEMM rate of this CPU on the tower's own matrix shapes (the best of several repeats).

Every encoding and query table qualifies its figures with a "% of ceiling" column measured in the
same process run (``bench/bench_roofline.py`` prints the ceilings alone). The method, from issue 22:

- FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` around one ``encode_image`` of a 224 px image,
  and one ``encode_text`` of a 16-token query (a short Chinese query is about that long after
  cn_clip's tokenizer trims the padding). Counted FLOPs are matmuls and convolutions only, which
  is what bounds a ViT: softmax, layer norm and GELU are a few percent and are not in the rate
  either, so the ceiling is an upper bound on what any backend can reach at that precision.
- Rate: the tower's GEMM shapes (tokens x width by width x 3 width for the attention input,
  width x width for its output, width x 4 width and 4 width x width for the MLP) for the batch the
  encoder uses, in the precision measured (fp32; bf16 where the CPU has native bf16), on every
  thread, each shape timed on ``torch.mm`` and, where OpenVINO is installed, on an OpenVINO
  ``MatMul`` with constant weights (as a converted tower runs them), and the faster of the two
  kept: a ceiling must hold for every library here (on an EPYC, OpenVINO's fp32 kernels ran the
  text tower's batch-1 shapes up to 2x faster than PyTorch's, so a ceiling from ``torch.mm``
  alone was beaten by the tower itself). Each library is timed two ways, one product on every
  thread and one single-threaded product per core at once (as a bulk job runs its passes,
  ``common.runtime.encode_streams``), and the faster kept: on a 2-core EPYC two single-threaded
  passes of a ViT-B-16 ran 1.5x faster than one on two threads, so a ceiling from one product
  alone would be beaten. The rate is the FLOP-weighted harmonic mean over the shapes (the time
  the tower's GEMMs would take at each shape's best rate).
- Memory: each input must also read the tower's weights once per batch (the linear and
  convolution weights, in the precision measured; the text tower's embedding tables are left out,
  a query reads a few rows of them) at the machine's read bandwidth (best of several full-thread
  reductions over 1 GiB). The ceiling is the slower of the two bounds, as issue 22 reads it ("326
  MiB of weights at 22 GB/s would be 15 ms, so it is compute-bound"): one query at batch 1 reads
  the whole text tower, and on a CPU with fast GEMMs that read, not the arithmetic, is its floor.
"""

from __future__ import annotations

import contextlib
import importlib.util
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from common.hardware import best_seconds
from common.runtime import available_cores, torch_threads
from models.backends.runtime_towers import openvino_products
from models.factory import LoadedModel

QUERY_TOKENS = 16


@dataclass(frozen=True)
class Ceiling:
    what: str  # "image" | "text"
    dtype: str  # "fp32" | "bf16"
    gflop: float  # per image, or per query
    gflops_rate: float  # sustained GEMM GFLOP/s on the tower's shapes
    batch: int
    weight_mb: float = 0.0  # read once per batch
    bandwidth_gbs: float = float("inf")  # memory read bandwidth

    @property
    def compute_seconds(self) -> float:
        return self.gflop / self.gflops_rate

    @property
    def memory_seconds(self) -> float:
        return self.weight_mb / 1e3 / self.batch / self.bandwidth_gbs

    @property
    def bound(self) -> str:
        return "memory" if self.memory_seconds > self.compute_seconds else "compute"

    @property
    def seconds(self) -> float:
        """The least time one image (or one query) can take: the slower of the two bounds."""
        return max(self.compute_seconds, self.memory_seconds)

    @property
    def per_second(self) -> float:
        return 1.0 / self.seconds

    def fraction(self, measured_per_second: float) -> float:
        return measured_per_second / self.per_second

    def describe(self) -> str:
        unit = "images/s" if self.what == "image" else "ms per query"
        value = f"{self.per_second:.2f}" if self.what == "image" else f"{1000 * self.seconds:.1f}"
        memory = ""
        if self.weight_mb:
            memory = (
                f", {self.weight_mb:.0f} MB of weights per batch at {self.bandwidth_gbs:.0f} GB/s = "
                f"{1000 * self.memory_seconds:.1f} ms each"
            )
        return (
            f"{self.what} tower {self.dtype}: {self.gflop:.2f} GFLOP at {self.gflops_rate:.0f} GFLOP/s "
            f"(batch {self.batch}) = {1000 * self.compute_seconds:.1f} ms each{memory}; {self.bound}-bound: "
            f"{value} {unit}"
        )


def count_flops(lm: LoadedModel, what: str, *, tokens: int = QUERY_TOKENS) -> float:
    """GFLOP of one image (``what="image"``) or one ``tokens``-token query, counted on the model."""
    model = lm.model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        if what == "image":
            size = lm.arch.resolution
            model.encode_image(torch.zeros(1, 3, size, size))
        else:
            ids = torch.full((1, tokens), 100, dtype=torch.long)
            ids[0, 0], ids[0, -1] = 101, 102  # [CLS] ... [SEP], no padding
            model.encode_text(ids)
    return counter.get_total_flops() / 1e9


def tower_shapes(
    lm: LoadedModel, what: str, batch: int, *, tokens: int = QUERY_TOKENS
) -> list[tuple[int, int, int]]:
    """(m, k, n) of the GEMMs one transformer block of the tower runs for ``batch`` inputs."""
    config = lm.arch.config()
    if what == "image":
        tokens = (config["image_resolution"] // config["vision_patch_size"]) ** 2 + 1
        width = config["vision_width"]
    else:
        width = config["text_hidden_size"]
    m = batch * tokens
    return [(m, width, 3 * width), (m, width, width), (m, width, 4 * width), (m, 4 * width, width)]


def libraries() -> tuple[str, ...]:
    """The GEMM libraries a ceiling is taken over: PyTorch, and OpenVINO where installed."""
    return ("torch", "openvino") if importlib.util.find_spec("openvino") is not None else ("torch",)


WAYS = ("threads", "cores")  # one product on every thread; one single-threaded product per core at once


def gemm_rate(
    shapes: list[tuple[int, int, int]],
    dtype: str,
    *,
    repeats: int = 5,
    among: tuple[str, ...] | None = None,
    ways: tuple[str, ...] = WAYS,
) -> float:
    """Sustained GFLOP/s over ``shapes`` (FLOP-weighted harmonic mean of each shape's best time,
    the best of the libraries ``among``, default all of ``libraries()``, each on every thread and
    one single-threaded product per core at once)."""
    total_flop = total_seconds = 0.0
    for shape in shapes:
        flop = 2.0 * shape[0] * shape[1] * shape[2]
        inner = max(1, int(2e9 / flop))  # ~2 GFLOP per timing: long enough to time, short to repeat
        total_flop += flop
        total_seconds += min(
            product_seconds(name, shape, dtype, repeats=repeats, inner=inner, ways=ways)
            for name in among or libraries()
        )
    return total_flop / total_seconds / 1e9


def product_seconds(
    library: str,
    shape: tuple[int, int, int],
    dtype: str,
    *,
    repeats: int,
    inner: int,
    ways: tuple[str, ...] = WAYS,
) -> float:
    """Seconds per ``shape`` product on ``library``: the fastest of ``ways``, one product on every
    thread (``threads``) and one single-threaded product per core at once (``cores``: wall time
    over the products done)."""
    cores = available_cores()
    best = float("inf")
    if "threads" in ways or cores < 2:
        best = best_seconds(_products(library, shape, dtype, 1)[0], repeats, inner=inner)
    if "cores" in ways and cores >= 2:
        runs = _products(library, shape, dtype, cores)
        with torch_threads(1) if library == "torch" else contextlib.nullcontext():
            best = min(best, concurrent_seconds(runs, repeats, inner=inner))
    return best


def concurrent_seconds(runs: list[Callable[[], object]], repeats: int, *, inner: int) -> float:
    """Seconds per call when each of ``runs`` is called ``inner`` times in its own thread, all at
    once: the best of ``repeats`` wall times over the calls made, after one warm-up call each."""
    with ThreadPoolExecutor(len(runs)) as pool:
        list(pool.map(lambda run: run(), runs))
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            list(pool.map(lambda run: [run() for _ in range(inner)], runs))
            best = min(best, (time.perf_counter() - start) / (inner * len(runs)))
    return best


def _products(
    library: str, shape: tuple[int, int, int], dtype: str, count: int
) -> list[Callable[[], object]]:
    """``count`` independent products of ``shape`` (for as many threads at once)."""
    if library == "torch":
        return [_torch_product(shape, dtype) for _ in range(count)]
    return openvino_products(shape, "bf16" if dtype == "bf16" else "f32", streams=count)


def _torch_product(shape: tuple[int, int, int], dtype: str) -> Callable[[], object]:
    m, k, n = shape
    torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
    a, b = torch.randn(m, k).to(torch_dtype), torch.randn(k, n).to(torch_dtype)
    return lambda: torch.mm(a, b)


def weight_mb(lm: LoadedModel, what: str, dtype: str) -> float:
    """MB of the weights one batch reads: the tower's parameters but the text embedding tables."""
    model = lm.model
    if what == "image":
        params = list(model.visual.parameters())
    else:
        params = [p for n, p in model.bert.named_parameters() if ".embeddings." not in f".{n}"]
        params.append(model.text_projection)
    return sum(p.numel() for p in params) * (2 if dtype == "bf16" else 4) / 1e6


def memory_bandwidth(*, gib: float = 1.0, repeats: int = 5) -> float:
    """Read bandwidth in GB/s: the best of ``repeats`` full-thread sums over ``gib`` GiB of fp32."""
    data = torch.ones(int(gib * 2**30) // 4)
    best = best_seconds(data.sum, repeats)
    return data.numel() * 4 / best / 1e9


def ceiling(
    lm: LoadedModel, what: str, *, dtype: str = "fp32", batch: int | None = None, tokens: int = QUERY_TOKENS
) -> Ceiling:
    """The tower's ceiling on this machine, measured now (a few seconds); ``tokens``: a query's length."""
    batch = batch or (32 if what == "image" else 1)
    rate = gemm_rate(tower_shapes(lm, what, batch, tokens=tokens), dtype)
    gflop = count_flops(lm, what, tokens=tokens)
    return Ceiling(
        what=what,
        dtype=dtype,
        gflop=gflop,
        gflops_rate=rate,
        batch=batch,
        weight_mb=weight_mb(lm, what, dtype),
        bandwidth_gbs=memory_bandwidth(),
    )
