"""AdamW with cn_clip's parameter groups, its warm-up + cosine schedule, the default lr, and a
run's resolved ``Schedule``."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from common.errors import TuwenError
from training.data import steps_per_epoch
from training.options import RunOptions

NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)
FINE_TUNE_LR, FINE_TUNE_BATCH = 5e-5, 1024  # cn_clip's MUGE/Flickr recipe: 8 GPUs × 128, lr 5e-5
SCRATCH_LR, SCRATCH_BATCH = 1e-3, 64  # models trained from random weights (tiny, random:ARCH)


def no_decay_names(model: nn.Module) -> set[str]:
    """Norms, biases and logit_scale. cn_clip matches names ("bn", "ln", "bias", "logit_scale"), which
    misses BERT's ``LayerNorm``; the norm modules are therefore also found by type."""
    names = {
        n for n, _ in model.named_parameters() if "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n
    }
    for module_name, module in model.named_modules():
        if isinstance(module, NORM_TYPES):
            prefix = f"{module_name}." if module_name else ""
            names.update(prefix + n for n, _ in module.named_parameters(recurse=False))
    return names


def param_groups(model: nn.Module, *, weight_decay: float) -> list[dict]:
    exempt = no_decay_names(model)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for n, p in trainable if n in exempt], "weight_decay": 0.0, "names": "no_decay"},
        {
            "params": [p for n, p in trainable if n not in exempt],
            "weight_decay": weight_decay,
            "names": "decay",
        },
    ]


def make_optimizer(
    model: nn.Module, *, lr: float, weight_decay: float, arch: str = "ViT"
) -> torch.optim.AdamW:
    """AdamW with cn_clip's per-architecture betas and eps (``training/params.py``)."""
    groups = [
        {k: v for k, v in g.items() if k != "names"} for g in param_groups(model, weight_decay=weight_decay)
    ]
    betas, eps = ((0.9, 0.999), 1e-8) if arch.startswith("RN") else ((0.9, 0.98), 1e-6)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)


def cosine_lr(step: int, *, base_lr: float, warmup: int, total_steps: int) -> float:
    """cn_clip's ``cosine_lr``: linear warm-up to ``base_lr`` over ``warmup`` steps, then cosine to 0."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    span = max(total_steps - warmup, 1)
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / span)) * base_lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def default_lr(total_batch: int, *, from_scratch: bool) -> float:
    """Square-root scaling (Adam) from a reference recipe to the actual total batch.

    Fine-tuning pretrained weights starts from cn_clip's 5e-5 at batch 1024; too high an lr for a
    small batch is the usual reason fine-tuning "does not converge" (cn_clip issues #146, #240).
    """
    base, ref = (SCRATCH_LR, SCRATCH_BATCH) if from_scratch else (FINE_TUNE_LR, FINE_TUNE_BATCH)
    return base * math.sqrt(total_batch / ref)


@dataclass(frozen=True)
class Schedule:
    """The resolved batches and learning-rate schedule of a run."""

    epochs: int
    batch_size: int  # per process and micro-batch
    accum_freq: int
    steps_per_epoch: int
    base_lr: float
    lr_given: bool
    warmup: int
    world_size: int = 1

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    @property
    def global_batch(self) -> int:
        """A micro-batch over all processes: what the negatives of one loss are drawn from."""
        return self.batch_size * self.world_size

    @property
    def total_batch(self) -> int:
        return self.global_batch * self.accum_freq

    def lr(self, step: int) -> float:
        return cosine_lr(step, base_lr=self.base_lr, warmup=self.warmup, total_steps=self.total_steps)


def make_schedule(
    options: RunOptions, *, n_train: int, world_size: int = 1, say: Callable[[str], None]
) -> Schedule:
    """Steps per epoch over the global batch, the peak lr (scaled to the total batch unless given)
    and a warm-up that fits."""
    global_batch = options.batch_size * world_size
    if world_size > 1 and n_train < global_batch * options.accum_freq:
        raise TuwenError(
            f"{n_train} training pairs are fewer than one step of {world_size} processes × batch "
            f"{options.batch_size} × accum-freq {options.accum_freq}: lower --batch-size or the processes"
        )
    spe = steps_per_epoch(n_train, batch_size=global_batch, accum_freq=options.accum_freq)
    total_steps = spe * options.epochs
    lr_given = options.lr is not None
    base_lr = (
        options.lr
        if lr_given
        else default_lr(global_batch * options.accum_freq, from_scratch=options.from_scratch)
    )
    warmup = options.warmup
    if warmup >= total_steps:
        warmup = max(total_steps // 10, 1)
        say(f"warm-up longer than the run ({total_steps} steps): using {warmup} steps")
    return Schedule(
        epochs=options.epochs,
        batch_size=options.batch_size,
        accum_freq=options.accum_freq,
        steps_per_epoch=spe,
        base_lr=base_lr,
        lr_given=lr_given,
        warmup=warmup,
        world_size=world_size,
    )
