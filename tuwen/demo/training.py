"""Training ``tiny`` from scratch on the demo corpus (``tuwen demo``), with settings tuned to reach
text→image R@5 ≥ 0.9 on the demo's held-out queries in a few CPU minutes."""

from __future__ import annotations

from pathlib import Path

from common.settings import Settings
from training.train import TrainResult, train

# Measured by bench/bench_train.py on the default demo corpus (1500 pairs); see its table.
DEMO_SETTINGS = {"epochs": 25, "batch_size": 64, "lr": 2e-3, "warmup": 50, "val_fraction": 0.1, "seed": 0}


def train_demo(
    *, settings: Settings, out: str | Path, epochs: int | None = None, progress: bool = True, echo=None
) -> TrainResult:
    kwargs = {**DEMO_SETTINGS, **({"epochs": epochs} if epochs else {})}
    return train(settings=settings, model="tiny", out=out, progress=progress, echo=echo, **kwargs)


def train_demo_model(*, settings: Settings, out: str | Path, epochs: int | None = None) -> Path:
    """The path of ``best.pt`` of ``tiny`` trained on the ingested demo corpus."""
    return train_demo(settings=settings, out=out, epochs=epochs).best_path
