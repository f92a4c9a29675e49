"""What a run is asked for: ``RunOptions``, the one home of the training defaults, their help and
their checks (``training.optim.Schedule`` is what a run resolves them to).

``tuwen train``'s flags (``training.cli``) read their defaults and help from ``RunOptions``'s
fields, ``train()`` builds one from its keywords, and a resumed run's ``config.json`` replaces the
defaults of the fields in ``HYPER`` (flags still win). Light on purpose (no torch): the CLI imports
it to build its parser.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import TuwenError

# Hyper-parameters that must match for a resumed run to continue the same schedule and batches
# (the global batch, not the per-process one: 2 processes × 8 resume as 1 × 16).
RESUME_KEYS = ("epochs", "global_batch", "accum_freq", "lr", "warmup", "weight_decay", "val_fraction", "seed")


def _option(default, help: str):
    """A field of ``RunOptions`` with the help line of its ``tuwen train`` flag."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class RunOptions:
    """What ``train`` was asked for; ``Schedule`` is what it resolved to. Checked when built."""

    model: str
    out: Path
    epochs: int = _option(3, "passes over the training pairs")
    batch_size: int = _option(64, "per micro-batch (and per process)")
    lr: float | None = _option(None, "peak learning rate; default scaled to the total batch")
    warmup: int = _option(100, "linear warm-up steps")
    weight_decay: float = _option(0.001, "AdamW decay (not on norms, biases, logit scale)")
    accum_freq: int = _option(1, "micro-batches per step, all of them negatives")
    precision: str = _option(
        "auto", "auto = fp16 + GradScaler on CUDA, bf16 on CPUs that have it; amp = auto"
    )
    val_fraction: float = _option(0.1, "share of images held out for validation")
    seed: int = _option(0, "split, batch order and init of dropout")
    augment: bool = _option(False, "cn_clip's AutoAugment on images")
    freeze_vision: bool = _option(False, "train the text tower only")
    grad_checkpointing: bool = _option(False, "less memory, ~30%% slower")
    eval_every: int | None = _option(None, "also validate and checkpoint every N steps")
    workers: int = 0  # resolved by the run (common.runtime.decode_workers)
    resume: Path | None = None
    log_every: int = 1

    def __post_init__(self) -> None:
        for name, value, low in (
            ("epochs", self.epochs, 1),
            ("batch-size", self.batch_size, 1),
            ("accum-freq", self.accum_freq, 1),
        ):
            if value < low:
                raise TuwenError(f"--{name} must be at least {low}, not {value}")
        if self.warmup < 0:
            raise TuwenError(f"--warmup must be >= 0, not {self.warmup}")
        if self.lr is not None and not self.lr > 0:
            raise TuwenError(f"--lr must be positive, not {self.lr}")

    @property
    def from_scratch(self) -> bool:
        return self.model == "tiny" or self.model.startswith("random:")


# The hyper-parameters of a run: ``tuwen train``'s flags with a default, and what resume restores.
HYPER = tuple(f.name for f in dataclasses.fields(RunOptions) if "help" in f.metadata)


def hyper_defaults() -> dict:
    """``{name: default}`` of the fields in ``HYPER``."""
    return {f.name: f.default for f in dataclasses.fields(RunOptions) if f.name in HYPER}


def option_help(name: str) -> str:
    """The help line of ``--NAME``, saying its default (none for flags that are off by default)."""
    f = next(f for f in dataclasses.fields(RunOptions) if f.name == name)
    if f.default is None or f.default is False:
        return f.metadata["help"]
    return f"{f.metadata['help']}; default {f.default}"
