"""The named parts of a run (``training.run``, ``.step``, ``.loop``), each on its own: set-up, one
optimizer step, validate-and-checkpoint."""

from __future__ import annotations

import pytest
import torch

from training.loop import validate_and_checkpoint
from training.options import RunOptions
from training.run import set_up
from training.step import optimizer_step

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.fixture
def run(ingested, tmp_path):
    options = RunOptions(
        model="tiny", out=tmp_path / "run", epochs=2, batch_size=8, lr=1e-3, warmup=2, val_fraction=0.25,
        precision="fp32", workers=0,
    )  # fmt: skip
    return set_up(settings=ingested, options=options, say=lambda _: None)


def _step_of(path) -> int:
    return torch.load(path, weights_only=True)["step"]


def test_set_up_resolves_the_schedule_and_writes_config(run):
    schedule = run.schedule
    assert (
        schedule.steps_per_epoch == len(run.train_pairs) // 8
        and schedule.total_steps == 2 * schedule.steps_per_epoch
    )
    assert (run.out / "config.json").is_file() and run.config["total_steps"] == schedule.total_steps
    assert run.progress.start_step == 0 and run.progress.best_score is None and run.net.training


def test_validate_and_checkpoint_keeps_best_by_selection_score(run):
    first = validate_and_checkpoint(run, step=1)
    assert first["score"] == first["t2i"]["r5"] + first["i2t"]["r5"]
    assert _step_of(run.last_path) == _step_of(run.best_path) == 1 and run.progress.best == first
    # a better score than the model can reach stands: last.pt moves on, best.pt stays at step 1
    run.progress.best_score = first["score"] + 1.0
    second = validate_and_checkpoint(run, step=2)
    assert _step_of(run.last_path) == 2 and _step_of(run.best_path) == 1 and run.progress.best == first
    # a worse one is beaten: best.pt follows last.pt
    run.progress.best_score = second["score"] - 1.0
    third = validate_and_checkpoint(run, step=3)
    assert _step_of(run.best_path) == 3 and run.progress.best == third
    assert run.progress.best_score == third["score"]
    assert [r["step"] for r in run.metrics_log.read() if r["kind"] == "val"] == [1, 2, 3]
    assert torch.load(run.best_path, weights_only=True)["best_score"] == third["score"]


def test_one_optimizer_step_follows_the_schedule_and_clamps_the_scale(run):
    from training.data import PairDataset

    dataset = PairDataset(
        run.train_pairs[:8], transform=run.loaded.preprocess, resolution=run.loaded.arch.resolution
    )
    images, texts = map(torch.stack, zip(*(dataset[i] for i in range(8)), strict=True))
    with torch.no_grad():
        run.net.logit_scale.fill_(10.0)  # above ln(100): the step must clamp it
    before = {n: p.detach().clone() for n, p in run.net.named_parameters()}
    stats = optimizer_step(run, [(images, texts)], step=0)
    assert stats.samples == 8 and stats.lr == pytest.approx(run.schedule.lr(0)) and stats.lr > 0
    assert run.optimizer.param_groups[0]["lr"] == stats.lr
    assert run.net.logit_scale.item() <= 4.6052
    assert any(not torch.equal(before[n], p) for n, p in run.net.named_parameters() if n != "logit_scale")
