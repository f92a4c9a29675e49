"""One optimizer step: the forward pass's precision (``Amp``), forward and backward with cn_clip's
gradient cache (``backward_step``), and the step itself (``optimizer_step``: lr from the schedule,
AdamW through the scaler, logit-scale clamp)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from common.precision import autocast
from training.distributed import World
from training.loss import accum_loss, clamp_logit_scale, clip_loss
from training.optim import Schedule, set_lr


@dataclass
class Amp:
    """How the forward pass runs: a resolved precision (``common.precision``) on a device."""

    mode: str  # fp32 | bf16 | fp16
    device: torch.device

    def autocast(self):
        return autocast(self.mode, self.device)

    @property
    def uses_grad_scaler(self) -> bool:
        return self.mode == "fp16" and self.device.type == "cuda"

    @property
    def encoder_precision(self) -> str:
        """Validate as `tuwen eval` and `tuwen index` encode by default, so their numbers agree."""
        return "fp32" if self.mode == "fp32" else "auto"


@dataclass(frozen=True)
class StepStats:
    """What one optimizer step reports."""

    loss: float
    lr: float
    samples: int
    seconds: float


class Stepper(Protocol):
    """What ``optimizer_step`` needs of a run (``training.run.TrainRun`` has it)."""

    schedule: Schedule
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    amp: Amp
    world: World

    @property
    def net(self) -> torch.nn.Module: ...

    @property
    def forward_model(self) -> torch.nn.Module: ...


def backward_step(
    model,
    micro_batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    *,
    amp: Amp,
    scaler,
    world: World | None = None,
) -> float:
    """Forward and backward of one optimizer step; gradients are left in ``.grad``.

    One micro-batch: the plain loss. Several (``--accum-freq``): cn_clip's gradient cache, i.e.
    features of all micro-batches first without gradient, then each micro-batch again with
    gradient against the cached features of the others, so every micro-batch sees the negatives
    of the whole step. Under torchrun (``world``) every loss is over the features of all ranks
    (gathered with gradients), and DDP averages the gradients once, after the last micro-batch.
    """
    world = world or World()
    if len(micro_batches) == 1:
        images, texts = micro_batches[0]
        with amp.autocast():
            image_features, text_features, logit_scale = model(images, texts)
        loss = clip_loss(world.gather(image_features), world.gather(text_features), logit_scale)
        scaler.scale(loss).backward()
        return loss.item()
    cached_image, cached_text = [], []
    with torch.no_grad():
        for images, texts in micro_batches:
            with amp.autocast():
                image_features, text_features, _ = model(images, texts)
            cached_image.append(world.gather(image_features))
            cached_text.append(world.gather(text_features))
    last = len(micro_batches) - 1
    for j, (images, texts) in enumerate(micro_batches):
        no_sync = model.no_sync() if j < last and hasattr(model, "no_sync") else contextlib.nullcontext()
        with no_sync:
            with amp.autocast():
                image_features, text_features, logit_scale = model(images, texts)
            loss = accum_loss(
                world.gather(image_features),
                world.gather(text_features),
                logit_scale,
                cached_image,
                cached_text,
                j,
            )
            scaler.scale(loss).backward()
    return loss.item()  # the last micro-batch's (all are the same loss up to rounding, as in cn_clip)


def set_train_mode(model, *, freeze_vision: bool) -> None:
    model.train()
    if freeze_vision:  # keep BatchNorm statistics of a frozen ResNet tower fixed (cn_clip freeze_vision_bn)
        for m in model.visual.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()


def optimizer_step(run: Stepper, micro: list[tuple[torch.Tensor, torch.Tensor]], *, step: int) -> StepStats:
    """One optimizer step at global step ``step`` (0-based) on its micro-batches: lr from the
    schedule, forward/backward, AdamW (through the scaler), logit-scale clamp."""
    tick = time.perf_counter()
    lr = run.schedule.lr(step)
    set_lr(run.optimizer, lr)
    run.optimizer.zero_grad(set_to_none=True)
    loss = backward_step(run.forward_model, micro, amp=run.amp, scaler=run.scaler, world=run.world)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    clamp_logit_scale(run.net)
    n = sum(len(t) for _, t in micro) * run.world.size  # every rank's slice is full (make_schedule)
    return StepStats(loss=loss, lr=lr, samples=n, seconds=time.perf_counter() - tick)
