"""Training on several processes (DistributedDataParallel), launched by torchrun.

``tuwen train --nproc N`` starts ``python -m torch.distributed.run --nproc_per_node N -m tuwen.cli
train …`` on this machine; for several machines run that torchrun line by hand on each (with
``--nnodes``, ``--node-rank`` and a rendezvous address). A process knows it is one of them from
torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``).

What every rank does differently from one process, and why:
- its slice of each step's global batch (``local_plan``), so N ranks × batch B see what one process
  with batch N·B sees, in the same order (the per-epoch plan of ``training.data`` stays the one
  source of batches, and resume stays exact);
- the features of all ranks gathered for the loss with gradients (``World.gather``), so the
  negatives are the global batch and the gradient is the one-process gradient;
- validation, logs, config.json and checkpoints on rank 0 only, the others waiting at a barrier.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from common.errors import TuwenError

# Rank 0 validates and writes checkpoints while the others wait at a barrier: a long validation
# (tens of thousands of images) must not hit the process group's default timeout.
BARRIER_TIMEOUT = datetime.timedelta(hours=2)


class _GatherWithGrad(torch.autograd.Function):
    """All ranks' tensors concatenated in rank order; the backward pass gives each rank the sum over
    ranks of the gradients of its own rows (every rank computes the same loss over the global batch,
    and DDP then averages: the result is the gradient one process would compute)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        ctx.rows = tensor.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)  # reduced in place: not autograd's
        dist.all_reduce(grad)
        start = dist.get_rank() * ctx.rows
        return grad[start : start + ctx.rows]


@dataclass(frozen=True)
class World:
    """This process's place among the training processes; ``World()`` is one process alone."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    distributed: bool = False  # launched by torchrun: a process group, DDP, gathering

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` of every rank, concatenated in rank order, gradients flowing back to each rank."""
        return _GatherWithGrad.apply(tensor) if self.distributed else tensor

    def gather_objects(self, obj) -> list | None:
        """``obj`` of every rank, in rank order (None for one process alone)."""
        if not self.distributed:
            return None
        objects: list = [None] * self.size
        dist.all_gather_object(objects, obj)
        return objects

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def device(self, device: torch.device | str) -> torch.device:
        """One GPU per process on a machine: ``cuda:LOCAL_RANK``."""
        device = torch.device(device)
        if not (self.distributed and device.type == "cuda"):
            return device
        if self.local_rank >= torch.cuda.device_count():
            raise TuwenError(
                f"rank {self.rank}: local rank {self.local_rank} but only {torch.cuda.device_count()} "
                "GPU(s): start at most one process per GPU (--nproc / --nproc-per-node)"
            )
        device = torch.device("cuda", self.local_rank)
        torch.cuda.set_device(device)
        return device


def world_from_env(environ: dict[str, str] | None = None) -> World:
    """The ``World`` torchrun describes in the environment, or one process alone."""
    env = os.environ if environ is None else environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return World()
    size = int(env["WORLD_SIZE"])
    return World(
        rank=int(env["RANK"]),
        size=size,
        local_rank=int(env.get("LOCAL_RANK", env["RANK"])),
        local_size=int(env.get("LOCAL_WORLD_SIZE", size)),
        distributed=True,
    )


@contextlib.contextmanager
def process_group(world: World, *, device: torch.device) -> Iterator[None]:
    """The process group of a torchrun launch for the block: NCCL on CUDA, gloo on CPU."""
    if not world.distributed or dist.is_initialized():
        yield
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=BARRIER_TIMEOUT)
    try:
        yield
    finally:
        dist.destroy_process_group()


@contextlib.contextmanager
def share_cores(world: World, *, device: torch.device) -> Iterator[None]:
    """On CPU, pin each rank of a machine to its share of the cores for the block.

    ``common.runtime`` sizes threads and decoding workers by the cores a process may use, so after
    this it gives each rank its share instead of every rank taking the whole machine. GPU ranks are
    left alone (their cores feed the GPU, and the launcher or a scheduler may pin them).
    """
    if not (world.distributed and device.type == "cpu" and hasattr(os, "sched_setaffinity")):
        yield
        return
    before = os.sched_getaffinity(0)
    cores = sorted(before)
    per_rank = len(cores) // world.local_size
    if per_rank >= 1:
        mine = cores[world.local_rank * per_rank : (world.local_rank + 1) * per_rank]
    else:  # more ranks than cores: share them round-robin
        mine = [cores[world.local_rank % len(cores)]]
    os.sched_setaffinity(0, mine)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def local_plan(plan: list[list[list[int]]], *, world: World, batch_size: int) -> list[list[list[int]]]:
    """Each micro-batch of the global ``plan`` (of ``world.size × batch_size`` indices) cut to this
    rank's ``batch_size`` slice."""
    start = world.rank * batch_size
    return [[micro[start : start + batch_size] for micro in step] for step in plan]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_command(python: str, *, nproc: int, entry_argv: list[str]) -> list[str]:
    """The torchrun line that starts ``nproc`` processes of ``python -m tuwen.cli ENTRY_ARGV`` on this
    machine, meeting at a free port of 127.0.0.1."""
    return [
        python,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc-per-node",
        str(nproc),
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(free_port()),
        "-m",
        "tuwen.cli",
        *entry_argv,
    ]
