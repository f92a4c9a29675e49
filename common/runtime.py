"""The one policy for how many processes and threads share this machine's cores.

Spinning OpenMP threads that share cores with decoding workers (or other jobs) slow the model
down several times over on small machines (measured 7x on 2 shared cores), so the model gets the
cores the decoders leave.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from common.errors import TuwenError

MAX_WORKERS = 4
# Concurrent forward passes of a bulk encoding job on CPU (``encode_streams``): one per core, at most
# this many, so that each still gets a few images of a 16-image batch.
MAX_STREAMS = 4


def available_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def decode_workers(requested: int | None = None) -> int:
    """Image-decoding processes that run beside a model: one per spare core, at most 4; none on a
    machine of 2 cores or fewer.

    There the model takes both cores and the images are decoded between its batches: a photo JPEG
    decoded at reduced DCT scale costs about 4% of a ViT-B-16 forward pass, less than a worker
    process sharing the model's cores takes from it, and no worker means no PyTorch DataLoader
    (``tuwen index`` of 256 photos on cached OpenVINO towers, Zen 5: 15.7-16.3 s in process against
    16.2-16.6 s with one worker; bench/RESULTS.md, issue 22).
    """
    if requested is not None:
        if requested < 0:  # every command's --workers reaches here
            raise TuwenError(f"--workers must be 0 (decode in this process) or more, not {requested}")
        return requested
    cores = available_cores()
    return 0 if cores <= 2 else min(MAX_WORKERS, cores - 1)


def check_workers(requested: int | None = None) -> int:
    """Processes for CPU-only jobs with no model beside them (ingest's checks): every core, at most 4."""
    if requested is not None:
        return requested
    return max(1, min(MAX_WORKERS, available_cores()))


def model_threads(workers: int, requested: int | None = None) -> int:
    """Threads for the model: the cores left over by ``workers`` decoding processes."""
    return requested or max(1, available_cores() - workers)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads, then restore the previous count."""
    import torch  # heavy, for this helper only: ingest's check workers import this module torch-free

    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def encode_threads(workers: int, requested: int | None = None) -> int:
    """Threads for an ONNX Runtime / OpenVINO tower beside ``workers`` decoding processes.

    Every core: with reduced-size JPEG decoding a decoder needs a small share of one core to keep
    ahead of the model, and it sleeps once its bounded queue is full, so a core left to it would
    mostly idle (``bench/bench_encode.py --model-threads``, bench/RESULTS.md).
    """
    return requested or available_cores()


def encode_streams(threads: int, *, device_type: str = "cpu") -> int:
    """Forward passes a bulk encoding job (``tuwen index``, ``corpus encode``) runs at once on the CPU:
    one per core, at most ``MAX_STREAMS``, the ``threads`` shared out among them; 1 on a GPU.

    Why: one forward pass split over the cores by the libraries' own thread pools waits at a
    barrier after every operator, and on a 2-core AVX2 EPYC a ViT-B-16 batch ran 1.4-1.5x faster as
    two single-threaded passes of half a batch each than as one pass on two threads with PyTorch,
    1.03-1.05x with OpenVINO (bench/RESULTS.md, issue 22). A server answers one query at a time and
    keeps one pass on every thread, which is what its latency needs.
    """
    if device_type != "cpu":
        return 1
    return max(1, min(MAX_STREAMS, threads))
