"""Training ``tiny`` from scratch on the demo corpus (``tuwen demo``), with settings tuned to reach
a high text→image R@5 on the demo's held-out queries in a couple of CPU minutes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from common.settings import Settings
from training.train import TrainResult, train

# bench/bench_train.py on the default demo corpus (1500 pairs) measured 25 epochs in 180 s; issue 23
# cut them to 12 (the page is served before training; the whole demo has 8 minutes).
DEMO_SETTINGS = {"epochs": 12, "batch_size": 64, "lr": 2e-3, "warmup": 50, "val_fraction": 0.1, "seed": 0}
DONE = "demo-done.json"  # written last: a run folder without it was stopped half-way


def train_demo(
    *, settings: Settings, out: str | Path, epochs: int | None = None, progress: bool = True, echo=None
) -> TrainResult:
    kwargs = {**DEMO_SETTINGS, **({"epochs": epochs} if epochs else {})}
    return train(settings=settings, model="tiny", out=out, progress=progress, echo=echo, **kwargs)


def train_demo_model(*, settings: Settings, out: str | Path, epochs: int | None = None) -> Path:
    """The path of ``best.pt`` of ``tiny`` trained on the ingested demo corpus: a finished run in
    ``out`` with the same settings is reused, anything else there is removed and trained anew."""
    out = Path(out)
    wanted = {**DEMO_SETTINGS, **({"epochs": epochs} if epochs else {})}
    done = out / DONE
    if done.is_file():
        record = json.loads(done.read_text(encoding="utf-8"))
        if record.get("settings") == wanted and Path(record.get("best", "")).is_file():
            return Path(record["best"])
    if out.exists():
        shutil.rmtree(out)
    best = train_demo(settings=settings, out=out, epochs=epochs).best_path
    done.write_text(json.dumps({"settings": wanted, "best": str(best)}), encoding="utf-8")
    return best
