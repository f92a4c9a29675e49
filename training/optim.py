"""AdamW with cn_clip's parameter groups, its warm-up + cosine schedule, and the default lr."""

from __future__ import annotations

import math

import torch
from torch import nn

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
