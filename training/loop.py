"""The loop of a run: ``run_epochs`` over ``train_one_epoch`` (one ``optimizer_step`` per planned
step, the progress bar and metrics.jsonl), validation and checkpoints where asked and at each
epoch's end, and the warning when the first epoch learnt nothing."""

from __future__ import annotations

import math
import time

import torch
from tqdm import tqdm

from models.tokens import trim_padding
from training import checkpoint
from training.data import PairDataset, StepBatches, epoch_plan, make_loader, train_transform
from training.distributed import local_plan
from training.evaluate import encode_split, score
from training.metrics import at_chance, chance_r5, selection_score
from training.optim import Schedule
from training.report import plot_curves
from training.run import TrainResult, TrainRun, log, log_line
from training.step import StepStats, optimizer_step, set_train_mode


def validate(run: TrainRun, *, step: int) -> dict | None:
    """Recall on the held-out pairs as a metrics.jsonl record, or None without a validation split."""
    if not run.val_pairs:
        return None
    epoch_float = step / run.schedule.steps_per_epoch
    with torch.random.fork_rng(devices=[]):  # validating must not shift the dropout masks of later steps
        features = encode_split(
            run.loaded,
            run.val_pairs,
            precision=run.amp.encoder_precision,
            batch_size=max(run.schedule.batch_size, 64),
            workers=run.options.workers,
        )
    m, _ = score(features)
    set_train_mode(run.net, freeze_vision=run.options.freeze_vision)
    record = {"kind": "val", "step": step, "epoch": round(epoch_float, 4), **m, "score": selection_score(m)}
    run.say(
        f"step {step} (epoch {epoch_float:.2f}) val: text→image R@1/5/10 "
        f"{m['t2i']['r1']:.1f}/{m['t2i']['r5']:.1f}/{m['t2i']['r10']:.1f}, image→text "
        f"{m['i2t']['r1']:.1f}/{m['i2t']['r5']:.1f}/{m['i2t']['r10']:.1f}"
    )
    return record


def validate_and_checkpoint(run: TrainRun, *, step: int) -> dict | None:
    """Validate, log the record, write last.pt and, when the selection score is the best so far (or
    there is no validation split), point best.pt at it; redraw the curves. Returns the record.

    Under torchrun rank 0 does all of it while the other ranks wait (and get None)."""
    rank_rng = run.world.gather_objects(checkpoint.rng_state())  # for an exact resume on as many ranks
    record = _validate_and_save(run, step=step, rank_rng=rank_rng) if run.world.is_main else None
    run.world.barrier()
    return record


def _validate_and_save(run: TrainRun, *, step: int, rank_rng: list[dict] | None = None) -> dict | None:
    progress = run.progress
    record = validate(run, step=step)
    if record is not None:
        run.metrics_log.write(record)
        progress.val_records.append(record)
    is_best = record is None or progress.best_score is None or record["score"] > progress.best_score
    if record is not None and is_best:
        progress.best_score, progress.best = record["score"], record
    checkpoint.save(
        run.last_path,
        payload=checkpoint.payload(
            model=run.net,
            optimizer=run.optimizer,
            scaler=run.scaler,
            epoch=math.ceil(step / run.schedule.steps_per_epoch),  # cn_clip: the (1-based) epoch of the step
            step=step,
            name=run.out.name,
            arch=run.loaded.arch.name,
            best_score=progress.best_score,
            train_config=run.config,
            rank_rng=rank_rng,
        ),
    )
    if is_best:
        checkpoint.link_or_copy(run.last_path, run.best_path)
    plot_curves(run.metrics_log.read(), run.out / "curves.png")
    return record


def log_step(run: TrainRun, stats: StepStats, *, step: int, bar) -> None:
    """After step ``step`` (1-based): counters, the progress bar, and every ``log_every`` steps (and
    the last) a metrics.jsonl record."""
    run.progress.samples += stats.samples
    run.progress.compute_seconds += stats.seconds
    scale = run.net.logit_scale.exp().item()
    bar.set_postfix(loss=f"{stats.loss:.4f}", lr=f"{stats.lr:.2e}", scale=f"{scale:.1f}", refresh=False)
    bar.update(1)
    if run.metrics_log is None:  # not rank 0
        return
    if step % run.options.log_every == 0 or step == run.schedule.total_steps:
        run.metrics_log.write(
            {
                "kind": "train",
                "step": step,
                "epoch": round(step / run.schedule.steps_per_epoch, 4),
                "loss": stats.loss,
                "lr": stats.lr,
                "logit_scale": scale,
                "samples_per_s": stats.samples / max(stats.seconds, 1e-9),
            }
        )


def epoch_loader(run: TrainRun, *, epoch: int, offset: int):
    """The loader of epoch ``epoch`` from its step ``offset`` on, yielding micro-batches in plan order."""
    options, schedule = run.options, run.schedule
    plan = epoch_plan(
        len(run.train_pairs),
        batch_size=schedule.global_batch,
        accum_freq=schedule.accum_freq,
        seed=options.seed,
        epoch=epoch,
    )
    plan = (
        local_plan(plan, world=run.world, batch_size=schedule.batch_size) if run.world.distributed else plan
    )
    resolution = run.loaded.arch.resolution
    dataset = PairDataset(
        run.train_pairs,
        transform=train_transform(resolution) if options.augment else run.loaded.preprocess,
        resolution=resolution,
        augment_seed=(options.seed, epoch) if options.augment else None,
    )
    loader = make_loader(
        dataset,
        StepBatches(plan, offset),
        workers=options.workers,
        pin_memory=run.amp.device.type == "cuda",
        seed=options.seed * 100_003 + epoch,
    )
    return plan[offset:], loader


def train_one_epoch(
    run: TrainRun, *, epoch: int, step: int, stop_at_step: int | None, bar
) -> tuple[int, bool]:
    """The steps of epoch ``epoch`` from global step ``step`` on, with the mid-epoch validations
    (``eval_every``) and stop (``stop_at_step``); returns (global step reached, stopped mid-epoch)."""
    spe, device = run.schedule.steps_per_epoch, run.amp.device
    steps, loader = epoch_loader(run, epoch=epoch, offset=step - epoch * spe)
    batches = iter(loader)
    for step_plan in steps:
        micro = []
        for _ in step_plan:
            images, texts = next(batches)
            texts = trim_padding(texts)
            micro.append((images.to(device, non_blocking=True), texts.to(device, non_blocking=True)))
        stats = optimizer_step(run, micro, step=step)
        step += 1
        log_step(run, stats, step=step, bar=bar)
        if step % spe == 0:
            continue  # the end of the epoch validates once, in run_epochs
        if run.options.eval_every and step % run.options.eval_every == 0:
            validate_and_checkpoint(run, step=step)
        if stop_at_step is not None and step >= stop_at_step:
            validate_and_checkpoint(run, step=step)
            return step, True
    return step, False


def run_epochs(run: TrainRun, *, stop_at_step: int | None, progress: bool, started: float) -> TrainResult:
    """The loop: epochs from the resumed step on, validation and checkpoint at each epoch's end."""
    schedule, step, stopped = run.schedule, run.progress.start_step, False
    bar = tqdm(total=schedule.total_steps, initial=step, desc="train", unit="step", disable=not progress)
    try:
        for epoch in range(step // schedule.steps_per_epoch, schedule.epochs):
            step, stopped = train_one_epoch(run, epoch=epoch, step=step, stop_at_step=stop_at_step, bar=bar)
            if stopped:
                break
            record = validate_and_checkpoint(run, step=step)
            if epoch == 0 and record is not None:
                warn_if_chance(record, run.val_pairs, schedule=schedule, say=run.say)
            if stop_at_step is not None and step >= stop_at_step:
                stopped = step < schedule.total_steps
                break
    finally:
        bar.close()
    if run.world.is_main and not run.best_path.is_file():  # resumed after the last step: nothing was saved
        checkpoint.link_or_copy(run.last_path, run.best_path)
    return TrainResult(
        best_path=run.best_path,
        last_path=run.last_path,
        metrics=run.progress.val_records,
        best=run.progress.best,
        steps=step,
        seconds=time.perf_counter() - started,
        samples_per_s=run.progress.samples / max(run.progress.compute_seconds, 1e-9),
        stopped_early=stopped,
    )


def warn_if_chance(record: dict, val_pairs, *, schedule: Schedule, say) -> None:
    """A warning (logged, and said once more where ``say`` is not the log) when the first epoch's
    validation recall is no better than random ranking."""
    n_texts, n_images = len(val_pairs), len({p.image_id for p in val_pairs})
    if not at_chance(record, n_texts=n_texts, n_images=n_images):
        return
    chance = chance_r5(n_texts, n_images)
    lower = f"lower --lr (now {schedule.base_lr:.3g})" if schedule.lr_given else "try a lower --lr"
    message = (
        f"validation recall is still at chance after the first epoch (R@5 text→image "
        f"{record['t2i']['r5']:.1f}% vs {chance['t2i']:.1f}% at random, image→text "
        f"{record['i2t']['r5']:.1f}% vs {chance['i2t']:.1f}%). Check that 附件1's captions are paired "
        f"with their images by image_id; {lower}, more --warmup or more epochs."
    )
    log.warning(message)
    if say is not log_line:  # a plain function: ``log.info`` was a new bound method at every lookup
        say("warning: " + message)
